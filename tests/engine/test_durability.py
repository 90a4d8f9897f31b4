"""Durability operations on real clusters: scrub/repair, heal on read, node add/drain/
remove/replace with rebalancing, kill -9 at every crash point, space figures vs `du`,
metadata compaction, snapshots only of changed metadata, background scrub and gc.

Clusters use 64 KiB chunks so that a few MiB of objects make ~100 chunks. The CLI
runs as a real subprocess; damage is done to the real shard files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys

import pytest
import trio
from helpers import one_line_error, rand, run_on_a_terminal

from r2fs.engine import config, metasnap, nodeops, rebalance
from r2fs.engine.chunkwalk import TEST_KILL_ENV, iter_records, live_on_nodes
from r2fs.engine.maintenance import run_maintenance
from r2fs.engine.nodes import place
from r2fs.engine.reader import render_metrics
from r2fs.engine.repair import inspect
from r2fs.engine.scrub import scrub
from r2fs.engine.store import Cluster

KiB = 1024
CHUNK = 64 * KiB
TIMEOUT = 120
SIZES = [200 * KiB, 333 * KiB, 500 * KiB, 640 * KiB + 7, 900 * KiB, 1000 * KiB + 1]


def r2fs(path: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("R2FS_CLUSTER", "R2FS_DEBUG",
                                                          TEST_KILL_ENV)}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "r2fs", "--cluster", path, *args],
                          capture_output=True, timeout=TIMEOUT, env=e)


@pytest.fixture
async def filled(tmp_path):
    """(cluster dir, {key: content}) of a closed 6-node RS(4,2) cluster with ~90 chunks."""
    path = str(tmp_path / "c")
    c = Cluster.init(path, chunk_size=CHUNK)
    try:
        await c.create_bucket("data")
        b = c.bucket("data")
        objects = {}
        for i, size in enumerate(SIZES):
            objects[f"obj{i}"] = rand(size, seed=i)
            await b.put(f"obj{i}", objects[f"obj{i}"])
    finally:
        c.close()
    return path, objects


async def read_all(path: str, objects: dict[str, bytes]) -> None:
    """Every object reads back identical through a freshly opened cluster."""
    c = Cluster.open(path)
    try:
        for key, want in objects.items():
            got = await (await c.bucket("data").get(key)).read()
            assert got == want, key
    finally:
        c.close()


def shard_files(path: str) -> list[tuple[str, str]]:
    """(node id, node-relative name) of every file under every node's shards/."""
    c = Cluster.open(path)
    try:
        return [(nid, name) for nid, node in c.nodes.items() for name, _ in node.names()]
    finally:
        c.close()


def assert_clean(path: str) -> int:
    """Every shard of every chunk verifies, each sits exactly where its record places it,
    and no other shard file exists anywhere (nothing in two places). Returns the chunks."""
    c = Cluster.open(path)
    try:
        expected = set()
        count = 0
        for cid, rec in iter_records(c):
            if not live_on_nodes(rec):
                continue
            count += 1
            found = inspect(c, cid, rec)
            found.release()
            assert not found.bad, (cid.hex(), found.bad)
            for i, nid in enumerate(rec["p"]):
                expected.add((nid, c.chunks.shard_names(cid, rec["g"])[i]))
        # (temp files of a write a kill interrupted are not shards: gc's orphan scan
        # removes them once they are older than its grace)
        present = {(nid, name) for nid, node in c.nodes.items() for name, _ in node.names()
                   if not name.rsplit("/", 1)[-1].startswith(".")}
        assert present == expected, (sorted(present - expected)[:5], sorted(expected - present)[:5])
        return count
    finally:
        c.close()


def damage(path: str, count: int, seed: int = 1) -> int:
    """Bit rot or deletion in exactly m shards of `count` chunks; how many shards."""
    c = Cluster.open(path)
    rng = random.Random(seed)
    hurt = 0
    try:
        recs = [(cid, rec) for cid, rec in iter_records(c) if live_on_nodes(rec)]
        for cid, rec in rng.sample(recs, count):
            names = c.chunks.shard_names(cid, rec["g"])
            for i in rng.sample(range(len(rec["p"])), c.config.m):
                f = os.path.join(c.nodes[rec["p"][i]].path, names[i])
                if rng.random() < 0.3:
                    os.unlink(f)
                else:
                    with open(f, "r+b") as fh:
                        fh.seek(rng.randrange(100, os.path.getsize(f)))
                        b = fh.read(1)
                        fh.seek(-1, 1)
                        fh.write(bytes([b[0] ^ 0x5A]))
                hurt += 1
    finally:
        c.close()
    return hurt


async def test_bitrot_in_m_shards_of_many_chunks_then_scrub_repair(filled):
    path, objects = filled
    hurt = damage(path, 40)
    assert hurt == 80
    p = r2fs(path, "scrub")
    assert p.returncode == 1, p.stderr
    assert "scrub DAMAGED" in p.stdout.decode() and "40 damaged (80 shards)" in p.stdout.decode()
    p = r2fs(path, "scrub", "--repair")
    out = p.stdout.decode()
    assert p.returncode == 0, (out, p.stderr)
    assert "scrub repaired" in out and "40 repaired (80 shards)" in out, out
    p = r2fs(path, "scrub")
    assert p.returncode == 0 and "scrub healthy" in p.stdout.decode()
    assert assert_clean(path) >= 50
    await read_all(path, objects)


async def test_scrub_of_one_bucket_and_lost_chunk_exit_status(filled, tmp_path):
    path, objects = filled
    c = Cluster.open(path)
    try:
        await c.create_bucket("other")
        await c.bucket("other").put("x", rand(300 * KiB, seed=99))
        other = c.chunks_of_bucket("other")
        report = scrub(c, bucket="other")
        assert report.chunks == len(other) and report.healthy == len(other)
        # three shards of one chunk gone: more than m, the chunk is lost
        cid = sorted(other)[0]
        rec = c.chunk_record(cid)
        for i in range(3):
            os.unlink(os.path.join(c.nodes[rec["p"][i]].path, c.chunks.shard_names(cid, rec["g"])[i]))
    finally:
        c.close()
    p = r2fs(path, "scrub", "--repair", "--bucket", "other")
    assert p.returncode == 1
    assert "1 lost" in p.stdout.decode()
    st = json.loads(r2fs(path, "status", "--json").stdout)
    assert st["health"]["lost_chunks"] == 1 and st["health"]["degraded_chunks"] == 1
    assert one_line_error(r2fs(path, "scrub", "--bucket", "nope")).startswith("r2fs: no such bucket")
    assert one_line_error(r2fs(path, "scrub", "--rate", "0"))


async def test_heal_on_read_repairs_the_chunk(filled):
    path, objects = filled
    c = Cluster.open(path)
    try:
        info = await c.bucket("data").head("obj3")
        cid = info.chunks[1].id
        rec = c.chunk_record(cid)
        victim = os.path.join(c.nodes[rec["p"][0]].path, c.chunks.shard_names(cid, rec["g"])[0])
        with open(victim, "r+b") as f:
            f.seek(500)
            f.write(b"\xff\xfe\xfd")
        assert await (await c.bucket("data").get("obj3")).read() == objects["obj3"]
        c.healer.close(wait=30)  # the repair the read scheduled
        assert c.healer.repaired_shards == 1
        metrics = render_metrics()
        repaired = [ln for ln in metrics.splitlines() if ln.startswith("r2fs_repair_shards_total ")]
        assert repaired and float(repaired[0].split()[1]) >= 1
        assert "\nr2fs_degraded_chunks 0" in metrics  # repaired: not degraded any more
        found = inspect(c, cid, rec)
        found.release()
        assert not found.bad
    finally:
        c.close()
    assert_clean(path)


async def test_dead_node_replace_then_any_m_more_lost(filled, tmp_path):
    path, objects = filled
    shutil.rmtree(os.path.join(path, "nodes", "n2"))
    new = str(tmp_path / "n2-new")
    p = r2fs(path, "node", "replace", "n2", new)
    assert p.returncode == 0, p.stderr
    assert "rebuilt node n2" in p.stdout.decode()
    assert assert_clean(path) >= 50
    for nid in ("n0", "n5"):  # any other m = 2 nodes
        shutil.rmtree(os.path.join(path, "nodes", nid))
    await read_all(path, objects)


async def test_node_add_rebalance_matches_rendezvous(filled, tmp_path):
    path, objects = filled
    before = set(shard_files(path))
    p = r2fs(path, "node", "add", str(tmp_path / "n6"))
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "added node n6" in out and "rebalanced onto n6" in out, out
    c = Cluster.open(path)
    try:
        ids = c.config.node_ids
        assert "n6" in ids
        moved = 0
        for cid, rec in iter_records(c):
            assert set(rec["p"]) == set(place(cid, ids, 6)), cid.hex()
        after = {(nid, name) for nid, node in c.nodes.items() for name, _ in node.names()}
        moved = len(after - before)
    finally:
        c.close()
    # only shards whose rendezvous winner changed moved: each onto n6, ~1/7 of them
    assert moved and all(nid == "n6" for nid, _ in after - before)
    assert moved < len(before) / 3
    assert_clean(path)
    await read_all(path, objects)
    p = r2fs(path, "rebalance")
    assert p.returncode == 0 and "0 chunks changed placement" in p.stdout.decode()


@pytest.mark.lmdb_only  # LMDB snapshots / meta/ on disk
async def test_drain_then_remove_and_refusals(filled):
    path, objects = filled
    msg = one_line_error(r2fs(path, "node", "remove", "n1"))
    assert "not drained" in msg
    # RS(4,2) on 6 nodes: draining one would leave too few to place on
    assert "add a node first" in one_line_error(r2fs(path, "node", "drain", "n1"))
    p = r2fs(path, "node", "add", os.path.join(path, "extra"), "--no-rebalance")
    assert p.returncode == 0, p.stderr
    c = Cluster.open(path)
    try:
        nodeops.drain_node(c, "n1")
        assert nodeops.shards_on(c, "n1") > 0
    finally:
        c.close()
    msg = one_line_error(r2fs(path, "node", "remove", "n1"))
    assert "still holds shards" in msg
    assert r2fs(path, "meta", "snapshot").returncode == 0
    p = r2fs(path, "node", "drain", "n1")
    assert p.returncode == 0, p.stderr
    assert "can remove it" in p.stdout.decode()
    newest = metasnap.list_snapshots(path).snapshots[0]
    assert "n1" not in newest.placement  # the newest snapshot does not need the node either
    p = r2fs(path, "node", "remove", "n1")
    assert p.returncode == 0, p.stderr
    assert not any(files for _, _, files in os.walk(os.path.join(path, "nodes", "n1", "shards")))
    assert_clean(path)
    await read_all(path, objects)
    assert "no node" in one_line_error(r2fs(path, "node", "drain", "n1"))


CRASH_POINTS = [
    ("scrub", "scrub:checked:30"), ("scrub", "scrub:saved"), ("scrub", "repair:written:5"),
    ("add", "rebalance:intent:3"), ("add", "rebalance:copied:3"),
    ("add", "rebalance:committed:3"), ("add", "rebalance:deleted:3"), ("add", "rebalance:saved"),
    ("drain", "rebalance:copied:10"), ("drain", "rebalance:committed:20"),
    ("replace", "repair:written:7"), ("replace", "rebuild:written:7"), ("replace", "rebuild:saved"),
]


@pytest.mark.parametrize("op,point", CRASH_POINTS, ids=[p for _, p in CRASH_POINTS])
async def test_kill_at_each_crash_point_then_rerun_converges(filled, tmp_path, op, point):
    path, objects = filled
    if op == "scrub":
        damage(path, 20)
        cmd = ["scrub", "--repair"]
    elif op == "add":
        p = r2fs(path, "node", "add", str(tmp_path / "n6"), "--no-rebalance")
        assert p.returncode == 0
        cmd = ["rebalance"]
    elif op == "drain":
        assert r2fs(path, "node", "add", str(tmp_path / "n6"), "--no-rebalance").returncode == 0
        cmd = ["node", "drain", "n3"]
    else:
        shutil.rmtree(os.path.join(path, "nodes", "n4"))
        cmd = ["node", "replace", "n4", str(tmp_path / "n4-new")]
    p = r2fs(path, *cmd, env={TEST_KILL_ENV: point})
    assert p.returncode == -signal.SIGKILL, (point, p.returncode, p.stdout, p.stderr)
    p = r2fs(path, *cmd)
    assert p.returncode == 0, (p.stdout, p.stderr)
    if point.endswith(":saved") or point.startswith("scrub:checked"):
        assert "(resumed)" in p.stdout.decode(), p.stdout
    if op == "drain":
        assert r2fs(path, "node", "remove", "n3").returncode == 0
    assert assert_clean(path) >= 50
    await read_all(path, objects)


async def test_reads_and_writes_keep_working_while_a_node_is_added(filled, tmp_path):
    path, objects = filled
    proc = subprocess.Popen([sys.executable, "-m", "r2fs", "--cluster", path, "node", "add",
                             str(tmp_path / "n6"), "--rate", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    c = Cluster.open(path)
    written = {}
    try:
        b = c.bucket("data")
        i = 0
        while proc.poll() is None and i < 200:
            key = f"new{i}"
            written[key] = rand(150 * KiB, seed=1000 + i)
            await b.put(key, written[key])
            k = f"obj{i % len(SIZES)}"
            assert await (await b.get(k)).read() == objects[k]
            i += 1
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
        for key, want in written.items():
            assert await (await b.get(key)).read() == want
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        c.close()
    p = r2fs(path, "rebalance")  # writes placed before the add was seen, if any
    assert p.returncode == 0
    assert_clean(path)
    objects.update(written)
    await read_all(path, objects)


def du(path: str) -> int:
    return int(subprocess.run(["du", "-s", "-B1", path], capture_output=True, check=True,
                              text=True).stdout.split()[0])


@pytest.mark.lmdb_only  # LMDB snapshots / meta/ on disk
async def test_space_figures_equal_du(filled):
    path, _ = filled
    p = r2fs(path, "meta", "snapshot")
    assert p.returncode == 0, p.stderr
    # a leftover temp file of a killed write counts too
    with open(os.path.join(path, "nodes", "n0", "shards", ".junk.abc.tmp"), "wb") as f:
        f.write(b"x" * 5000)
    st = json.loads(r2fs(path, "status", "--json").stdout)
    total = 0
    for n in st["nodes"]:
        assert n["disk_bytes"] == du(n["path"]), n["id"]
        assert sum(k["disk_bytes"] for k in n["kinds"].values()) == n["disk_bytes"]
        assert n["kinds"]["metadata_snapshots"]["files"] > 0
        assert n["kinds"]["object_data"]["files"] == n["shard_count"]
        total += n["disk_bytes"]
    assert st["stored_bytes"] == total
    assert st["nodes"][0]["kinds"]["temp"]["bytes"] == 5000
    assert st["local"]["metadata"]["disk_bytes"] == du(os.path.join(path, "meta"))
    assert st["health"]["degraded_chunks"] == 0
    text = r2fs(path, "status").stdout.decode()
    assert "0 degraded" in text and "DU" in text


@pytest.mark.lmdb_only  # LMDB snapshots / meta/ on disk
async def test_meta_compact_shrinks_and_keeps_data(filled):
    path, objects = filled
    c = Cluster.open(path)
    try:
        b = c.bucket("data")
        for i in range(300):
            await b.put(f"small/{i}", b"y" * 20000)  # inline: lives in LMDB
        for i in range(300):
            await b.delete(f"small/{i}")
        # refused while another process (this one) has the metadata open
        msg = one_line_error(r2fs(path, "meta", "compact"))
        assert "in use by another process" in msg
    finally:
        c.close()
    before = os.path.getsize(os.path.join(path, "meta", "data.mdb"))
    p = r2fs(path, "meta", "compact")
    assert p.returncode == 0, p.stderr
    after = os.path.getsize(os.path.join(path, "meta", "data.mdb"))
    assert after < before / 2, (before, after)
    await read_all(path, objects)
    c = Cluster.open(path)
    try:  # and the compacted environment takes writes again
        await c.bucket("data").put("after", b"z" * 1000)
        assert await (await c.bucket("data").get("after")).read() == b"z" * 1000
    finally:
        c.close()



@pytest.mark.lmdb_only  # LMDB snapshots / meta/ on disk
async def test_no_snapshot_of_an_unchanged_sequence(filled, tmp_path):
    path, _ = filled
    c = Cluster.open(path)
    try:
        assert metasnap.take_snapshot(c) is not None
        scrub(c)  # scrub positions, gc passes, chunk touches: not worth a snapshot
        await c.gc(grace=0)
        assert metasnap.maybe_snapshot(c, min_interval=0) is None
        await c.create_bucket("fresh")  # outside the change feed, but it must be kept
        assert metasnap.maybe_snapshot(c, min_interval=0) is not None
        assert metasnap.maybe_snapshot(c, min_interval=0) is None
        nodeops.add_node(c, str(tmp_path / "n6"))
        assert rebalance.rebalance(c).chunks_moved > 0  # new placements: a new snapshot
        assert metasnap.maybe_snapshot(c, min_interval=0) is not None
    finally:
        c.close()


async def test_long_running_processes_scrub_and_gc_in_the_background(filled):
    path, objects = filled
    c = Cluster.open(path)
    try:
        cfg = config.load(path)
        cfg.raw["durability"] = {"start_delay": 0, "scrub_rate": 100, "gc_interval": 1,
                                 "gc_grace": 0}
        config.save(cfg, path)
        c.refresh_config(force=True)
        info = await c.bucket("data").head("obj2")
        cid = info.chunks[0].id
        rec = c.chunk_record(cid)
        os.unlink(os.path.join(c.nodes[rec["p"][5]].path, c.chunks.shard_names(cid, rec["g"])[5]))
        doomed = (await c.bucket("data").head("obj5")).chunks[-1].id
        await c.bucket("data").delete("obj5")
        stop = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(run_maintenance, c, stop)
            with trio.fail_after(60):
                while True:
                    await trio.sleep(0.5)
                    found = inspect(c, cid, rec)
                    found.release()
                    if not found.bad and c.chunk_record(doomed) is None:
                        break
            stop.set()
        del objects["obj5"]
    finally:
        c.close()
    await read_all(path, objects)
    assert_clean(path)


async def test_scrub_draws_a_progress_bar_with_eta_on_a_terminal(filled):
    path, _ = filled
    e = {k: v for k, v in os.environ.items() if k not in ("R2FS_CLUSTER", TEST_KILL_ENV)}
    text, out, status = run_on_a_terminal([sys.executable, "-m", "r2fs", "--cluster", path, "scrub",
                                           "--rate", "20"], e, TIMEOUT)
    assert status == 0
    assert "scrub [" in text and "ETA" in text and "100%" in text, text
    assert "scrub healthy" in out and "ETA" not in out  # the bar never reaches stdout


async def test_rate_throttles_and_region_is_recorded(filled, tmp_path):
    path, _ = filled
    c = Cluster.open(path)
    try:
        report = scrub(c, rate=2e6, fresh=True)  # 2 MB/s over ~3.7 MB of data
        assert report.healthy == report.chunks and report.seconds >= 1.2, report.seconds
        nid = nodeops.add_node(c, str(tmp_path / "west"), region="west")
        assert next(n for n in c.config.nodes if n.id == nid).region == "west"
        assert c.regions["west"] == [nid]
    finally:
        c.close()
    assert "invalid region" in one_line_error(r2fs(path, "node", "add", str(tmp_path / "x"),
                                                   "--region", "Bad Name"))
