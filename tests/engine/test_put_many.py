"""Bucket.put_many: many small objects, one sealing pass, one commit; each item its own atomic put."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from r2fs.engine.errors import InvalidKey, KeyTooLong, NoSuchBucket, NoSuchKey, PreconditionFailed
from r2fs.engine.store import PutItem
from r2fs.engine.types import MiB, Conditional
from r2fs.engine.writer import TEST_KILL_ENV


async def test_round_trip_with_metadata_and_one_change_per_item(cluster, bucket):
    seq = cluster.change_seq()
    items = [PutItem(f"d/f{i:03d}", os.urandom(i * 97), custom_metadata={"mode": str(i)},
                     http_metadata={"content-type": "text/plain"} if i % 2 else None)
             for i in range(300)]  # more than one group commit's batch
    out = await bucket.put_many(items)
    assert len(cluster.changes_since(seq)) == len(items)  # seqs increase, not always by 1
    for it, info in zip(items, out):
        assert info.key == it.key and info.size == len(it.data) and info.inline
        got = await bucket.head(it.key)
        assert got.version == info.version and got.etag == info.etag
        assert got.custom_metadata == it.custom_metadata
        assert await (await bucket.get(it.key)).read() == it.data
    # the same ETag a single put gives the same bytes
    single = await bucket.put("single", items[5].data)
    assert single.etag == out[5].etag


async def test_conditions_are_honoured_per_item(bucket):
    old = await bucket.put("exists", b"old")
    await bucket.put("moved-on", b"v1")
    items = [
        PutItem("new", b"a", only_if=Conditional(etag_does_not_match="*")),
        PutItem("exists", b"b", only_if=Conditional(etag_does_not_match="*")),  # fails
        PutItem("moved-on", b"c", only_if=Conditional(etag_matches="0" * 32)),  # fails
        PutItem("exists2", b"d"),
        PutItem("exists", b"e", only_if=Conditional(etag_matches=old.etag)),  # after the failed one
    ]
    out = await bucket.put_many(items)
    assert isinstance(out[1], PreconditionFailed) and isinstance(out[2], PreconditionFailed)
    assert await (await bucket.get("new")).read() == b"a"
    assert await (await bucket.get("moved-on")).read() == b"v1"
    assert await (await bucket.get("exists2")).read() == b"d"
    assert await (await bucket.get("exists")).read() == b"e"


async def test_bad_items_fail_alone_and_big_items_go_through_put(cluster, bucket):
    big = os.urandom(cluster.config.inline_threshold + 1)
    out = await bucket.put_many([PutItem("ok", b"1"), PutItem("a" * 1100, b"2"),
                                 PutItem("", b"3"), PutItem("big", big)])
    assert not isinstance(out[0], Exception)
    assert isinstance(out[1], KeyTooLong) and isinstance(out[2], InvalidKey)
    assert not out[3].inline and out[3].size == len(big)
    assert await (await bucket.get("big")).read() == big
    assert await (await bucket.get("ok")).read() == b"1"


async def test_missing_bucket_fails_every_item(cluster):
    out = await cluster.bucket("nope").put_many([PutItem("a", b"1"), PutItem("b", b"2")])
    assert all(isinstance(o, NoSuchBucket) for o in out)


async def test_overwrite_inline_over_chunked_releases_chunks(cluster, bucket):
    await bucket.put("k", os.urandom(5 * MiB))
    [info] = await bucket.put_many([PutItem("k", b"small now")])
    assert info.inline
    await cluster.gc(grace=0, orphan_grace=0)
    with cluster.meta.read() as txn:
        assert not list(cluster.meta.scan(txn, "chunks"))
    assert await (await bucket.get("k")).read() == b"small now"


KILLED = textwrap.dedent("""
    import sys, trio
    from r2fs.engine.store import Cluster, PutItem
    async def main():
        c = Cluster.open(sys.argv[1])
        await c.bucket("test-bucket").put_many(
            [PutItem(f"k{i}", b"new %d" % i) for i in range(600)])
    trio.run(main)
""")


@pytest.mark.parametrize("step", ["stored", "committed"])
async def test_kill_before_and_after_the_commit(cluster_dir, cluster, bucket, step):
    for i in range(0, 600, 2):
        await bucket.put(f"k{i}", b"old %d" % i)
    seq = cluster.change_seq()
    proc = subprocess.run([sys.executable, "-c", KILLED, cluster_dir],
                          env=dict(os.environ, **{TEST_KILL_ENV: step}), capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    for i in range(600):
        if step == "committed":
            assert await (await bucket.get(f"k{i}")).read() == b"new %d" % i
        elif i % 2 == 0:
            assert await (await bucket.get(f"k{i}")).read() == b"old %d" % i
        else:
            with pytest.raises(NoSuchKey):
                await bucket.head(f"k{i}")
    assert len(cluster.changes_since(seq)) == (600 if step == "committed" else 0)
