"""Metadata snapshots: real clusters, real LMDB, real shard files, the real CLI.

Inline objects live only in the LMDB manifest, so losing meta/ loses them:
these tests delete meta/ (and node directories, and bytes of shard files)
and check that what comes back is byte-identical, or that the refusal is one
clear line.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import trio
from helpers import ok, rand
from helpers import one_line_error as cli_error

from r2fs.engine import metasnap
from r2fs.engine.errors import UnsupportedFormat
from r2fs.engine.store import Cluster
from r2fs.engine.types import KiB, MiB

pytestmark = pytest.mark.lmdb_only  # snapshots copy the embedded LMDB engine


def cli(cluster: str | Path, *args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("R2FS_CLUSTER", "R2FS_DEBUG")}
    return subprocess.run([sys.executable, "-m", "r2fs", "--cluster", str(cluster),
                           *[str(a) for a in args]], check=False,
                          capture_output=True, timeout=timeout, env=env)


def cli_start(cluster: str | Path, *args: object) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("R2FS_CLUSTER", "R2FS_DEBUG")}
    return subprocess.Popen([sys.executable, "-m", "r2fs", "--cluster", str(cluster),
                             *[str(a) for a in args]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The CLI's one-line error, which here must also name the program."""
    line = cli_error(proc)
    assert line.startswith("r2fs"), line
    return line


# --- a cluster with inline and chunked objects ------------------------------------------------

BUCKET = "photos"


def expected_objects() -> dict[str, bytes]:
    return {
        "empty": b"",
        "one-byte": b"x",
        "notes/4k.txt": rand(4 * KiB, 1),
        "inline/exactly-128k": rand(128 * KiB, 2),      # the largest inline object
        "chunked/128k-plus-one": rand(128 * KiB + 1, 3),  # one chunk in shard files
        "chunked/5mib.bin": rand(5 * MiB, 4),             # two chunks
        "long/" + "k" * 600: rand(1000, 5),               # grouped LMDB key (> 400 bytes)
        "unicodé/ключ": rand(300, 6),
    }


def fill(path: str, objects: dict[str, bytes] | None = None) -> dict[str, bytes]:
    objects = expected_objects() if objects is None else objects

    async def main() -> None:
        with Cluster.init(path) as c:
            await c.create_bucket(BUCKET)
            await c.update_bucket_settings(BUCKET, public=True)
            b = c.bucket(BUCKET)
            for key, data in objects.items():
                await b.put(key, data, custom_metadata={"origin": "test"})
    trio.run(main)
    return objects


def read_everything(path: str) -> tuple[dict[str, bytes], dict]:
    async def main() -> tuple[dict[str, bytes], dict]:
        with Cluster.open(path) as c:
            b = c.bucket(BUCKET)
            out: dict[str, bytes] = {}
            cursor = None
            while True:
                page = await b.list(cursor=cursor)
                for info in page.objects:
                    assert info.custom_metadata == {"origin": "test"}
                    out[info.key] = await (await b.get(info.key)).read()
                if not page.truncated:
                    break
                cursor = page.cursor
            settings = (await c.head_bucket(BUCKET)).settings
            return out, settings
    return trio.run(main)


async def put(path: str, key: str, data: bytes) -> None:
    with Cluster.open(path) as c:
        await c.bucket(BUCKET).put(key, data, custom_metadata={"origin": "test"})


def snapshot_files(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "nodes", "*", metasnap.SNAPSHOT_DIR, "*", "*")))


def snapshot_ids_on_disk(path: str) -> set[str]:
    return {os.path.basename(d) for d in
            glob.glob(os.path.join(path, "nodes", "*", metasnap.SNAPSHOT_DIR, "*"))}


def take(path: str, **kw: object) -> metasnap.SnapshotInfo:
    with Cluster.open(path) as c:
        info = metasnap.take_snapshot(c, **kw)
    assert info is not None
    return info


@pytest.fixture
def filled(cluster_dir: str) -> tuple[str, dict[str, bytes]]:
    return cluster_dir, fill(cluster_dir)


# --- round trips ----------------------------------------------------------------------------


def test_snapshot_delete_meta_restore_every_object_identical(filled) -> None:
    path, objects = filled
    out = ok(cli(path, "meta", "snapshot"))
    sid = re.match(r"snapshot (\S+):", out).group(1)
    listing = ok(cli(path, "meta", "snapshots"))
    assert sid in listing and "4+2" in listing

    # encrypted at rest: no inline object's bytes appear in any snapshot file
    secret = objects["notes/4k.txt"]
    for f in snapshot_files(path):
        with open(f, "rb") as fh:
            assert secret[:64] not in fh.read()
    # one shard per node: 6 nodes, k+m = 6, each with a descriptor
    assert len(glob.glob(os.path.join(path, "nodes", "*", metasnap.SNAPSHOT_DIR, sid,
                                      "descriptor"))) == 6

    shutil.rmtree(os.path.join(path, "meta"))
    assert "metadata" in one_line_error(cli(path, "status"))  # the cluster refuses to start empty
    # listing works without meta/, which is when it is needed
    assert sid in ok(cli(path, "meta", "snapshots"))

    out = ok(cli(path, "meta", "restore"))
    assert f"restored metadata from snapshot {sid}" in out
    assert "moved to" not in out  # there was nothing to move aside
    back, settings = read_everything(path)
    assert back == objects
    assert settings.get("public") is True


def test_multi_piece_snapshot_restores_and_pieces_are_bound(cluster_dir: str) -> None:
    objects = {f"small/{i:03d}": rand(100 * KiB, 100 + i) for i in range(30)}
    fill(cluster_dir, objects)
    info = take(cluster_dir, piece_size=64 * KiB)
    assert info.pieces > 10 and info.db_size > 3 * MiB

    # a shard copied over the same index of another piece is refused by its header,
    # and the piece is rebuilt from the others
    node = info.placement[0]
    src = os.path.join(cluster_dir, "nodes", node, metasnap.SNAPSHOT_DIR, info.id, "000000.0")
    dst = os.path.join(cluster_dir, "nodes", node, metasnap.SNAPSHOT_DIR, info.id, "000003.0")
    shutil.copyfile(src, dst)

    shutil.rmtree(os.path.join(cluster_dir, "meta"))
    report = metasnap.restore(cluster_dir)
    assert report.snapshot.id == info.id
    assert any("piece 3 shard 0" in d and "belongs to chunk" in d for d in report.damaged)
    back, _ = read_everything(cluster_dir)
    assert back == objects


def test_m_node_directories_lost_still_restores(filled) -> None:
    path, objects = filled
    ok(cli(path, "meta", "snapshot"))
    shutil.rmtree(os.path.join(path, "meta"))
    info = metasnap.list_snapshots(path).snapshots[0]
    for n in info.placement[:2]:  # m = 2 nodes, the ones holding data shards 0 and 1
        shutil.rmtree(os.path.join(path, "nodes", n))
        os.mkdir(os.path.join(path, "nodes", n))  # an empty replacement disk
    out = ok(cli(path, "meta", "restore"))
    assert "worked around" in out and "missing" in out
    back, _ = read_everything(path)
    assert back == objects  # chunked objects too: they also tolerate m lost nodes


def test_m_plus_one_lost_refuses_clearly(filled) -> None:
    path, _ = filled
    ok(cli(path, "meta", "snapshot"))
    shutil.rmtree(os.path.join(path, "meta"))
    for n in ("n1", "n2", "n4"):  # m + 1 node directories: one shard of every piece each
        shutil.rmtree(os.path.join(path, "nodes", n))
    line = one_line_error(cli(path, "meta", "restore"))
    assert "cannot be reconstructed" in line and "3 good shards of 4 needed" in line, line
    assert not os.path.exists(os.path.join(path, "meta"))
    assert not glob.glob(os.path.join(path, ".meta.restoring-*"))  # nothing half-made left
    proc = cli(path, "meta", "verify")
    assert "1 metadata snapshots cannot be restored" in one_line_error(proc)
    assert "NOT RESTORABLE: snapshot" in proc.stdout.decode()


def test_corrupted_shard_is_detected_and_worked_around(cluster_dir: str) -> None:
    objects = {f"o{i}": rand(50 * KiB, i) for i in range(20)}
    fill(cluster_dir, objects)
    info = take(cluster_dir, piece_size=128 * KiB)
    assert info.pieces >= 3
    victim = os.path.join(cluster_dir, "nodes", info.placement[1], metasnap.SNAPSHOT_DIR,
                          info.id, "000002.1")
    with open(victim, "r+b") as f:  # flip one payload byte: bit rot
        f.seek(os.path.getsize(victim) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))

    proc = cli(cluster_dir, "meta", "verify")
    line = one_line_error(proc)
    assert "1 damaged or missing snapshot shards" in line
    assert f"piece 2 shard 1 on {info.placement[1]}: shard checksum mismatch" in proc.stdout.decode()

    shutil.rmtree(os.path.join(cluster_dir, "meta"))
    out = ok(cli(cluster_dir, "meta", "restore"))
    assert "worked around 1 damaged" in out and "checksum mismatch" in out
    back, _ = read_everything(cluster_dir)
    assert back == objects


def test_wrong_master_key_refuses(filled) -> None:
    path, _ = filled
    ok(cli(path, "meta", "snapshot"))
    shutil.rmtree(os.path.join(path, "meta"))
    key = os.path.join(path, "master.key")
    original = Path(key).read_bytes()
    Path(key).write_bytes(os.urandom(32))
    line = one_line_error(cli(path, "meta", "restore"))
    assert "is not the master key" in line

    # a key that matches a doctored cluster.toml still cannot open the snapshot
    from r2fs.engine.keys import MasterKey
    wrong = MasterKey.load(key)
    toml = Path(path, "cluster.toml")
    text = toml.read_text()
    toml.write_text(re.sub(r'key_check = "[^"]*"', f'key_check = "{wrong.check_value()}"', text))
    line = one_line_error(cli(path, "meta", "restore"))
    assert "does not authenticate with this master key" in line
    assert "UNUSABLE" in ok(cli(path, "meta", "snapshots"))
    assert not os.path.exists(os.path.join(path, "meta"))

    toml.write_text(text)
    Path(key).write_bytes(original)
    ok(cli(path, "meta", "restore"))


def test_retention_keeps_the_newest_n(cluster_dir: str) -> None:
    fill(cluster_dir, {"a": b"a"})
    taken = []
    for i in range(5):
        trio.run(put, cluster_dir, f"k{i}", b"v" * i)
        taken.append(take(cluster_dir, keep=3).id)
    listed = [s.id for s in metasnap.list_snapshots(cluster_dir).snapshots]
    assert listed == taken[::-1][:3]
    assert snapshot_ids_on_disk(cluster_dir) == set(taken[2:])
    out = ok(cli(cluster_dir, "meta", "snapshot", "--keep", "2"))
    newest = re.match(r"snapshot (\S+):", out).group(1)
    assert snapshot_ids_on_disk(cluster_dir) == {newest, taken[4]}
    assert "--keep" in one_line_error(cli(cluster_dir, "meta", "snapshot", "--keep", "0"))

    # keep from cluster.toml
    with open(os.path.join(cluster_dir, "cluster.toml"), "a") as f:
        f.write("\n[meta_snapshots]\nkeep = 1\ninterval = 60\n")
    only = take(cluster_dir).id
    assert snapshot_ids_on_disk(cluster_dir) == {only}


def test_restore_over_live_meta_needs_force_and_keeps_the_old_one(filled) -> None:
    path, objects = filled
    sid = re.match(r"snapshot (\S+):", ok(cli(path, "meta", "snapshot"))).group(1)
    trio.run(put, path, "after-snapshot", b"late")

    line = one_line_error(cli(path, "meta", "restore"))
    assert "present and readable" in line and "--force" in line

    # a running process holds the metadata: refused even with --force
    with Cluster.open(path):
        line = one_line_error(cli(path, "meta", "restore", "--force"))
        assert "in use by a running r2fs process" in line

    out = ok(cli(path, "meta", "restore", "--force", "--snapshot", sid))
    moved = re.search(r"moved to (\S+)", out).group(1)
    assert os.path.isfile(os.path.join(moved, "data.mdb"))
    back, _ = read_everything(path)
    assert back == objects  # the recovery point: the later put is not in the snapshot

    # the old metadata is intact beside it: put it back and the late object is there
    os.rename(os.path.join(path, "meta"), os.path.join(path, "meta.restored"))
    os.rename(moved, os.path.join(path, "meta"))
    back, _ = read_everything(path)
    assert back["after-snapshot"] == b"late"


def test_unreadable_meta_is_replaced_without_force(filled) -> None:
    path, objects = filled
    ok(cli(path, "meta", "snapshot"))
    with open(os.path.join(path, "meta", "data.mdb"), "r+b") as f:
        f.write(b"\0" * 16384)  # both LMDB meta pages gone
    out = ok(cli(path, "meta", "restore"))
    assert "moved to" in out
    assert read_everything(path)[0] == objects


def test_unknown_and_bad_arguments_are_one_line(filled) -> None:
    path, _ = filled
    ok(cli(path, "meta", "snapshot"))
    shutil.rmtree(os.path.join(path, "meta"))
    assert "not a snapshot id" in one_line_error(cli(path, "meta", "restore", "--snapshot", "../x"))
    assert "no snapshot 20200101T000000Z-00000000" in one_line_error(
        cli(path, "meta", "restore", "--snapshot", "20200101T000000Z-00000000"))
    assert "no r2fs cluster" in one_line_error(cli(os.path.join(path, "nope"), "meta", "snapshots"))


def test_unknown_descriptor_version_is_refused_by_name(filled) -> None:
    path, _ = filled
    ok(cli(path, "meta", "snapshot"))
    shutil.rmtree(os.path.join(path, "meta"))
    for d in glob.glob(os.path.join(path, "nodes", "*", metasnap.SNAPSHOT_DIR, "*", "descriptor")):
        blob = bytearray(Path(d).read_bytes())
        blob[8:10] = (2).to_bytes(2, "little")
        Path(d).write_bytes(bytes(blob))
    line = one_line_error(cli(path, "meta", "restore"))
    assert "descriptor format 2 is not supported" in line
    assert "format 2 is not supported" in ok(cli(path, "meta", "snapshots"))
    with pytest.raises(UnsupportedFormat):
        metasnap.restore(path)


def test_snapshot_needs_k_plus_m_nodes_and_leaves_nothing_behind(filled) -> None:
    path, _ = filled
    shutil.rmtree(os.path.join(path, "nodes", "n5"))
    line = one_line_error(cli(path, "meta", "snapshot"))
    assert "needs 6 usable nodes" in line
    assert snapshot_files(path) == []


# --- concurrency and automatic snapshots --------------------------------------------------------


def test_concurrent_snapshots_serialize(filled) -> None:
    path, _ = filled
    site = metasnap.Site.open(path)
    with site.lock() as held:
        assert held
        proc = cli_start(path, "meta", "snapshot")
        time.sleep(2.0)
        assert proc.poll() is None, proc.communicate()  # waiting for the lock
        assert snapshot_files(path) == []
        with Cluster.open(path) as c:
            assert metasnap.maybe_snapshot(c) is None  # automatic ones skip instead of waiting
            assert metasnap.take_snapshot(c, wait=False) is None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b"", err

    # two at once, from two processes and a thread: all complete, none interleaved
    procs = [cli_start(path, "meta", "snapshot", "--keep", "5") for _ in range(2)]
    with Cluster.open(path) as c:
        spans: list[tuple[float, float]] = []
        original = metasnap._write_snapshot

        def timed(*a, **kw):
            t0 = time.monotonic()
            try:
                return original(*a, **kw)
            finally:
                spans.append((t0, time.monotonic()))
        metasnap._write_snapshot = timed
        try:
            threads = [threading.Thread(target=metasnap.take_snapshot, args=(c,),
                                        kwargs={"keep": 5}) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            metasnap._write_snapshot = original
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    (_, a_end), (b_start, _) = sorted(spans)
    assert a_end <= b_start  # the lock serialised the two threads
    assert len(metasnap.list_snapshots(path).snapshots) == 5
    ok(cli(path, "meta", "verify"))  # every one complete and intact


async def test_maybe_snapshot_only_when_changed_and_due(filled) -> None:
    path, _ = filled
    with Cluster.open(path) as c:
        first = metasnap.maybe_snapshot(c, min_interval=3600)
        assert first is not None  # none yet: take one
        assert metasnap.maybe_snapshot(c, min_interval=0) is None  # nothing changed
        await c.bucket(BUCKET).put("new", b"n")
        assert metasnap.maybe_snapshot(c, min_interval=3600) is None  # changed, not due
        second = metasnap.maybe_snapshot(c, min_interval=0)
        assert second is not None and second.seq == first.seq + 1
        await c.create_bucket("other-bucket")  # no change-feed entry, still a change
        third = metasnap.maybe_snapshot(c, min_interval=0)
        assert third is not None and third.seq == second.seq


async def test_run_snapshotter_snapshots_in_the_background(filled) -> None:
    path, _ = filled
    with Cluster.open(path) as c:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: metasnap.run_snapshotter(c, stop, interval=0.1, poll=0.05))
            with trio.fail_after(30):
                while not metasnap.list_snapshots(c).snapshots:
                    await trio.sleep(0.05)
            await c.bucket(BUCKET).put("more", b"m")
            with trio.fail_after(30):
                while metasnap.list_snapshots(c).snapshots[0].seq < c.change_seq():
                    await trio.sleep(0.05)
            stop.set()


def test_snapshot_memory_is_bounded(cluster_dir: str) -> None:
    objects = {f"bulk/{i:03d}": rand(120 * KiB, 1000 + i) for i in range(90)}
    fill(cluster_dir, objects)
    with Cluster.open(cluster_dir) as c:
        tracemalloc.start()
        try:
            info = metasnap.take_snapshot(c, piece_size=256 * KiB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info is not None and info.db_size > 10 * MiB
    assert peak < 4 * MiB, f"peak {peak} bytes for a {info.db_size}-byte database"
    shutil.rmtree(os.path.join(cluster_dir, "meta"))
    metasnap.restore(cluster_dir)
    assert read_everything(cluster_dir)[0] == objects


def test_restore_reports_data_collected_after_the_snapshot(filled) -> None:
    """The recovery point's other edge: gc keeps what the newest snapshot names (it takes
    a fresh one first), but an older snapshot may name chunks gc has removed since."""
    path, objects = filled
    old = take(path)

    async def delete_and_collect() -> None:
        with Cluster.open(path) as c:
            await c.bucket(BUCKET).delete("chunked/5mib.bin")
            report = await c.gc(grace=0, orphan_grace=3600)
            assert report.chunks_removed == 2
            assert metasnap.list_snapshots(c).snapshots[0].id != old.id  # gc refreshed it
    trio.run(delete_and_collect)

    out = ok(cli(path, "meta", "restore", "--force", "--snapshot", old.id))
    assert "2 of 3 chunks named by the snapshot lost their data" in out, out
    assert "1 objects will not read, e.g. photos/chunked/5mib.bin" in out
    out = ok(cli(path, "meta", "restore", "--force", "--no-check", "--snapshot", old.id))
    assert "chunks named" not in out
    out = ok(cli(path, "meta", "restore", "--force"))  # the newest: nothing lost
    assert "all 1 chunks named by the snapshot have their data" in out, out
    del objects["chunked/5mib.bin"]
    assert read_everything(path)[0] == objects


def test_gc_keeps_chunks_the_newest_snapshot_names(filled) -> None:
    """When gc cannot refresh the snapshot, chunks dropped since the newest one stay."""
    path, objects = filled
    take(path)

    async def main() -> None:
        with Cluster.open(path) as c:
            await c.bucket(BUCKET).delete("chunked/5mib.bin")
            with metasnap.Site.of(c).lock(wait=False) as held:  # another snapshotter is busy
                assert held
                report = await c.gc(grace=0, orphan_grace=3600)
            assert (report.chunks_removed, report.held_for_snapshot) == (0, 2)
            report = await c.gc(grace=0, orphan_grace=3600)
            assert (report.chunks_removed, report.held_for_snapshot) == (2, 0)
    trio.run(main)
    shutil.rmtree(os.path.join(path, "meta"))
    metasnap.restore(path)
    del objects["chunked/5mib.bin"]
    assert read_everything(path)[0] == objects
