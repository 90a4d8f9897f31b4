"""The put path: chunk records committed with the manifest, deferred directory fsyncs,
kills at every step of the commit, failed puts cleaning up, long puts flushing."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from r2fs.engine import writer as writer_mod
from r2fs.engine.errors import PreconditionFailed
from r2fs.engine.store import _pieces
from r2fs.engine.types import Conditional
from r2fs.engine.writer import TEST_KILL_ENV

MiB = 1 << 20


def shard_files(cluster) -> int:
    return sum(n.usage()[0] for n in cluster.nodes.values())


def chunk_records(cluster) -> dict[bytes, dict]:
    with cluster.meta.read() as txn:
        return dict(cluster.meta.scan(txn, "chunks"))


@settings(max_examples=150, deadline=None)
@given(size=st.sampled_from([1, 3, 16, 4096]),
       cuts=st.lists(st.integers(0, 40_000), max_size=8),
       total=st.integers(0, 40_000), mutable=st.booleans())
def test_pieces_are_exact_and_copy_free_of_reused_buffers(size, cuts, total, mutable):
    data = os.urandom(total)
    bounds = sorted({c % (total + 1) for c in cuts} | {0, total})
    parts = [data[a:b] for a, b in zip(bounds, bounds[1:])]

    async def main() -> list[bytes]:
        async def gen():
            buf = bytearray(max([len(p) for p in parts] + [1]))
            for p in parts:
                if mutable:  # a producer reusing one buffer for every part
                    view = memoryview(buf)[:len(p)]
                    view[:] = p
                    yield view
                    buf[:] = b"\xee" * len(buf)
                else:
                    yield p
        return [bytes(p) async for p in _pieces(gen(), size, md5)]

    md5 = hashlib.md5()
    out = trio.run(main)
    assert b"".join(out) == data
    assert md5.digest() == hashlib.md5(data).digest()  # every piece hashed, in order
    assert all(len(p) == size for p in out[:-1])
    assert not out or 0 < len(out[-1]) <= size


async def test_put_commits_records_with_the_manifest(cluster, bucket):
    writes = []
    real = cluster.meta.write

    def counting(fn):
        writes.append(fn)
        return real(fn)

    cluster.meta.write = counting
    data = os.urandom(3 * 4 * MiB + 5)
    await bucket.put("k", data)
    cluster.meta.write = real
    assert len(writes) == 1  # chunk records, refcounts and manifest: one commit
    recs = chunk_records(cluster)
    assert len(recs) == 4 and all(r["r"] == 1 for r in recs.values())
    assert await (await bucket.get("k")).read() == data


async def test_same_chunk_twice_in_one_put(cluster, bucket):
    block = os.urandom(4 * MiB)
    await bucket.put("twice", block + block + block[:10])
    recs = chunk_records(cluster)
    assert sorted(r["r"] for r in recs.values()) == [1, 2]
    await cluster.gc(grace=3600, orphan_grace=0)  # any surplus copy would be an orphan
    assert shard_files(cluster) == 2 * 6
    assert await (await bucket.get("twice")).read() == block + block + block[:10]


async def test_failed_stream_leaves_no_files_and_no_records(cluster, bucket):
    async def broken():
        for _ in range(3):
            yield os.urandom(4 * MiB)
        raise OSError("client went away")

    with pytest.raises(OSError):
        await bucket.put("k", broken())
    assert shard_files(cluster) == 0
    assert chunk_records(cluster) == {}


async def test_failed_precondition_removes_the_stored_chunks(cluster, bucket):
    await bucket.put("k", b"v1")
    with pytest.raises(PreconditionFailed):
        await bucket.put("k", os.urandom(6 * MiB), only_if=Conditional(etag_matches="nope"))
    # the early check passes nothing to store... so make the commit-time check fail:
    info = await bucket.head("k")

    async def racing():
        yield os.urandom(4 * MiB)
        await bucket.put("k", b"v2")  # changes the ETag while our put is storing
        yield os.urandom(4 * MiB)

    with pytest.raises(PreconditionFailed):
        await bucket.put("k", racing(), only_if=Conditional(etag_matches=info.etag))
    assert shard_files(cluster) == 0
    assert chunk_records(cluster) == {}
    assert await (await bucket.get("k")).read() == b"v2"


async def test_long_put_flushes_records_before_its_manifest(cluster, bucket, monkeypatch):
    monkeypatch.setattr(writer_mod, "BATCH_MAX_AGE", 0.0)
    seen = []

    async def slow():
        for i in range(4):
            if i == 3:  # give the first chunks time to be stored (a loaded machine is slow)
                await trio.sleep(1.0)
            yield os.urandom(4 * MiB)
            await trio.sleep(0.05)
            seen.append(len(chunk_records(cluster)))

    await bucket.put("long", slow())
    assert seen[-1] >= 1  # records (refcount 0) committed before the manifest
    recs = chunk_records(cluster)
    assert len(recs) == 4 and all(r["r"] == 1 for r in recs.values())
    report = await cluster.gc(grace=0, orphan_grace=0)
    assert report.chunks_removed == 0 and report.orphans_removed == 0
    assert len((await (await bucket.get("long")).read())) == 16 * MiB


async def test_local_mode_put_is_one_commit(cluster, bucket):
    cluster.writer.configure(mode="local")
    writes = []
    real = cluster.meta.write

    def counting(fn):
        writes.append(fn)
        return real(fn)

    cluster.meta.write = counting
    data = os.urandom(MiB)
    await bucket.put("k", data)
    cluster.meta.write = real
    assert len(writes) == 1  # record + journal entry + manifest
    with cluster.meta.read() as txn:
        assert len(list(cluster.meta.scan(txn, "journal"))) == 1
    assert await (await bucket.get("k")).read() == data


KILLED_PUT = textwrap.dedent("""
    import os, sys, trio
    from r2fs.engine.store import Cluster
    async def main():
        c = Cluster.open(sys.argv[1])
        if sys.argv[2] == "local":
            c.writer.configure(mode="local")
        await c.bucket("test-bucket").put("victim", bytes.fromhex(sys.argv[3]) * (3 << 20))
    trio.run(main)
""")


@pytest.mark.parametrize("mode", ["sync", "local"])
@pytest.mark.parametrize("step", ["stored", "synced", "committed"])
async def test_kill_at_every_step_of_a_put(cluster_dir, cluster, bucket, mode, step):
    await bucket.put("victim", b"old content")
    env = dict(os.environ, **{TEST_KILL_ENV: step})
    proc = subprocess.run([sys.executable, "-c", KILLED_PUT, cluster_dir, mode, "ab"], env=env,
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    body = await (await bucket.get("victim")).read()
    if step == "committed":
        assert body == b"\xab" * (3 << 20)
    else:
        assert body == b"old content"
    # whatever the kill left is either referenced or an orphan gc removes; never dangling
    await cluster.gc(grace=0, orphan_grace=0)
    for cid, rec in chunk_records(cluster).items():
        assert rec["r"] >= 1
    assert await (await bucket.get("victim")).read() == body
    if mode == "local" and step == "committed":
        from r2fs.engine.replicator import replicate_all
        report = await replicate_all(cluster)
        assert report.replicated == 1
        assert await (await bucket.get("victim")).read() == body
