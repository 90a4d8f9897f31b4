"""The file model through the store API: inode numbers, hard links, holes, slices, merge.

Real LMDB, real shard files; bytes written to the nodes are measured on disk.
"""

from __future__ import annotations

import os
import resource
import time

import pytest
import trio

from r2fs.engine import inodes, slices
from r2fs.engine.errors import (EntityTooLarge, KeyExists, KeyTooLong, NoSuchKey, NotLinkable,
                                UnsupportedFormat)
from r2fs.engine.extents import MAX_FILE_SIZE
from r2fs.engine.names import MAX_MOUNT_KEY_BYTES
from r2fs.engine.store import Cluster
from r2fs.engine.types import DirTouch, MiB, Range

from helpers import rand, shard_files

CHUNK = 4 * MiB


def node_bytes(cluster_dir: str) -> int:
    return sum(os.path.getsize(p) for p in shard_files(cluster_dir))


def reader_of(content: bytearray):
    async def read(off: int, n: int) -> bytes:
        return bytes(content[off:off + n])
    return read


async def body(bucket, key: str, rng: Range | None = None) -> bytes:
    return await (await bucket.get(key, range=rng)).read()


# --- inode numbers -------------------------------------------------------------------


async def test_inode_numbers_are_persistent_and_follow_renames(cluster_dir, bucket):
    a = await bucket.put("a", b"1")
    b = await bucket.put("b", rand(CHUNK + 1))
    assert a.ino and b.ino and a.ino != b.ino
    over = await bucket.put("a", b"22")  # an overwrite keeps the file's number
    assert over.ino == a.ino
    moved = await bucket.rename("a", "dir/c")
    assert moved.ino == a.ino and (await bucket.head("dir/c")).ino == a.ino
    await bucket.rename("b", "dir/c")  # rename over: the target is the moved file
    assert (await bucket.head("dir/c")).ino == b.ino
    copied = await bucket.copy("dir/c", "d")
    assert copied.ino not in (a.ino, b.ino)
    await bucket.rename_prefix("dir/", "elsewhere/")
    assert (await bucket.head("elsewhere/c")).ino == b.ino
    listed = {o.key: o.ino for o in (await bucket.list()).objects}
    assert listed == {"d": copied.ino, "elsewhere/c": b.ino}
    bucket.cluster.close()
    with Cluster.open(cluster_dir) as again:  # and across reopening
        assert (await again.bucket("test-bucket").head("elsewhere/c")).ino == b.ino


async def test_objects_without_numbers_are_numbered_at_open(cluster_dir, cluster):
    await cluster.create_bucket("old-one")
    bk = cluster.bucket("old-one")
    for i in range(7):
        await bk.put(f"k{i}", b"x" * i)
    meta = cluster.meta

    def downgrade(txn):  # what a schema-1 cluster holds: no inode numbers
        for key, m in list(meta.objects.scan(txn, "old-one")):
            m.pop("i")
            meta.objects.put(txn, "old-one", key, m)
        meta.delete(txn, "info", inodes.FILE_MODEL_KEY)
        meta.delete(txn, "info", inodes.INO_KEY)
    meta.write(downgrade)
    cluster.close()
    with Cluster.open(cluster_dir) as c:
        infos = [await c.bucket("old-one").head(f"k{i}") for i in range(7)]
        assert len({i.ino for i in infos}) == 7 and all(i.ino >= inodes.FIRST_INO for i in infos)
        fresh = await c.bucket("old-one").put("new", b"n")
        assert fresh.ino not in {i.ino for i in infos}


@pytest.mark.lmdb_only
async def test_lmdb_schema_1_becomes_2_and_newer_is_refused(cluster_dir, cluster):
    meta = cluster.meta
    meta.write(lambda txn: (meta.put(txn, "info", b"schema", 1),
                            meta.delete(txn, "info", inodes.FILE_MODEL_KEY)))
    cluster.close()
    with Cluster.open(cluster_dir) as c:
        with c.meta.read() as txn:
            assert c.meta.get(txn, "info", b"schema") == 2
        c.meta.write(lambda txn: c.meta.put(txn, "info", b"schema", 99))
    with pytest.raises(UnsupportedFormat, match="schema version 99"):
        Cluster.open(cluster_dir)


# --- hard links ----------------------------------------------------------------------------


async def test_hard_links_share_content_and_attributes(cluster, bucket):
    data = rand(CHUNK + 100, seed=1)
    orig = await bucket.put("f", data, custom_metadata={"mode": "33188"})
    linked = await bucket.link("f", "g", custom_metadata={"mode": "33188", "ctime": "5.0"})
    assert linked.ino == orig.ino and linked.nlink == 2
    assert await body(bucket, "g") == data and await body(bucket, "f") == data
    await bucket.link("g", "sub/h")
    assert (await bucket.head("f")).nlink == 3
    # attributes are shared
    await bucket.update_metadata("sub/h", custom_metadata={"mode": "33261"})
    assert (await bucket.head("f")).custom_metadata == {"mode": "33261"}
    # a write through the mount (keep_links) changes every name
    new = rand(1000, seed=2)
    await bucket.put("g", new, keep_links=True)
    assert await body(bucket, "f") == new and await body(bucket, "sub/h") == new
    # the listing shows each name with the shared content
    listed = {o.key: (o.size, o.ino, o.nlink) for o in (await bucket.list()).objects}
    assert listed == {k: (1000, orig.ino, 3) for k in ("f", "g", "sub/h")}
    # unlink one name: the others keep it
    await bucket.delete("f")
    assert (await bucket.head("g")).nlink == 2
    # rename over a link of the same file does nothing (POSIX)
    await bucket.rename("g", "sub/h")
    assert (await bucket.head("g")).nlink == 2
    # rename a link: the name list follows
    await bucket.rename("g", "moved")
    assert (await bucket.head("moved")).ino == orig.ino
    # an S3 PUT to one name gives that name a new file; the other keeps the content
    await bucket.put("moved", b"replaced")
    assert (await bucket.head("moved")).ino != orig.ino
    solo = await bucket.head("sub/h")
    assert solo.nlink == 1 and solo.ino == orig.ino and await body(bucket, "sub/h") == new
    with cluster.meta.read() as txn:  # one name left: folded back into a plain object
        assert not inodes.is_stub(cluster.meta.objects.get(txn, "test-bucket", "sub/h"))
        assert cluster.meta.count(txn, "inodes") == 0


async def test_link_refcounts_and_gc(cluster_dir, cluster, bucket):
    data = rand(2 * CHUNK, seed=3)
    info = await bucket.put("f", data)
    await bucket.link("f", "g")
    await bucket.link("f", "h")
    refs = {c.id: cluster.chunk_record(c.id)["r"] for c in info.chunks}
    assert set(refs.values()) == {1}  # the content is referenced once, by the inode
    await bucket.delete(["f", "g"])
    await cluster.gc(grace=0)
    assert await body(bucket, "h") == data
    await bucket.delete("h")
    await cluster.gc(grace=0)
    assert all(cluster.chunk_record(c.id) is None for c in info.chunks)
    assert shard_files(cluster_dir) == []


async def test_link_errors(bucket):
    await bucket.put("f", b"x")
    await bucket.put("dir/", b"")
    with pytest.raises(NoSuchKey):
        await bucket.link("missing", "x")
    with pytest.raises(NotLinkable):
        await bucket.link("f", "dir/")
    with pytest.raises(NotLinkable):
        await bucket.link("dir/", "other/")
    await bucket.put("g", b"y")
    with pytest.raises(KeyExists):
        await bucket.link("f", "g")


# --- long keys ------------------------------------------------------------------------------


async def test_mount_keys_up_to_path_max(cluster, bucket):
    long_key = "/".join(["d" * 255] * 17)[:MAX_MOUNT_KEY_BYTES]
    with pytest.raises(KeyTooLong):
        await bucket.put(long_key, b"s3 cannot")
    mount = cluster.bucket("test-bucket", max_key=MAX_MOUNT_KEY_BYTES)
    await mount.put(long_key, b"the mount can")
    assert await body(mount, long_key) == b"the mount can"
    assert [o.key for o in (await bucket.list()).objects] == [long_key]
    with pytest.raises(KeyTooLong):
        await mount.put(long_key + "x", b"")


# --- holes and truncate ------------------------------------------------------------------


async def test_truncate_to_a_petabyte_is_instant_and_reads_zeros(cluster, bucket):
    data = rand(CHUNK + 10, seed=4)
    base = await bucket.put("f", data)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.monotonic()
    info = await bucket.update("f", base=base, size=10**15, writes=[], read=reader_of(bytearray()))
    assert time.monotonic() - t < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 50 * 1024  # KiB
    assert info.size == 10**15 and len(info.chunks) == 3  # two chunks and one hole
    assert (await bucket.head("f")).size == 10**15
    assert await bucket.read_range(info, 0, len(data)) == data
    assert await bucket.read_range(info, 10**15 - 5, 100) == bytes(5)
    mid = await body(bucket, "f", Range(offset=CHUNK, length=3 * CHUNK))  # an S3 range GET
    assert mid == data[CHUNK:] + bytes(3 * CHUNK - 10)
    with pytest.raises(EntityTooLarge):
        await bucket.update("f", base=info, size=MAX_FILE_SIZE + 1, writes=[],
                            read=reader_of(bytearray()))
    # a write far out and a shrink back
    far = await bucket.update("f", base=info, size=10**15, writes=[(10**14, 5)],
                              read=reader_of_at(10**14, b"HELLO"))
    assert await bucket.read_range(far, 10**14 - 2, 9) == b"\0\0HELLO\0\0"
    small = await bucket.update("f", base=far, size=7, writes=[], read=reader_of(bytearray()))
    assert await body(bucket, "f") == data[:7] and small.inline


def reader_of_at(offset: int, data: bytes):
    async def read(off: int, n: int) -> bytes:
        return data[off - offset:off - offset + n]
    return read


# --- slices ---------------------------------------------------------------------------------


async def test_small_update_costs_what_was_written(cluster_dir, cluster, bucket):
    content = bytearray(rand(12 * CHUNK, seed=5))
    info = await bucket.put("db", bytes(content))
    before = node_bytes(cluster_dir)
    for i in range(20):  # 20 "sqlite page" updates
        off = (i * 7919 * 4096) % (len(content) - 4096)
        content[off:off + 4096] = rand(4096, seed=100 + i)
        info = await bucket.update("db", base=info, size=len(content), writes=[(off, 4096)],
                                   read=reader_of(content))
    assert node_bytes(cluster_dir) == before  # slices live in the metadata
    assert await body(bucket, "db") == bytes(content)
    assert await bucket.read_range(info, 4096 * 10, 9000) == bytes(content[40960:40960 + 9000])
    etag = info.etag
    await cluster.merger.drain()
    merged = await bucket.head("db")
    assert merged.etag == etag and len(merged.chunks) == 12  # whole chunks again
    assert await body(bucket, "db") == bytes(content)
    await cluster.gc(grace=0)
    with cluster.meta.read() as txn:
        meta_chunks = [r for _, r in cluster.meta.scan(txn, "chunks") if r.get("loc") == "meta"]
    assert meta_chunks == []  # the merged slices were collected
    assert await body(bucket, "db") == bytes(content)


def refcounts_match(cluster) -> None:
    """Every live chunk's refcount is the number of extents naming it (manifests,
    inode records), counted per occurrence."""
    from collections import Counter
    meta = cluster.meta
    want: Counter = Counter()
    with meta.read() as txn:
        for _, _, m in meta.objects.scan_all(txn):
            want.update(bytes(e[0]) for e in m.get("ch") or () if e[0])
        for _, rec in meta.scan(txn, "inodes"):
            want.update(bytes(e[0]) for e in rec["m"].get("ch") or () if e[0])
        got = {cid: r["r"] for cid, r in meta.scan(txn, "chunks") if r["r"]}
    assert got == dict(want)


async def test_a_page_update_touches_only_its_own_chunk_records(cluster, bucket):
    content = bytearray(rand(3 * CHUNK, seed=11))
    info = await bucket.put("db", bytes(content))
    for i in range(30):  # slices pile up, each in a chunk record of its own
        off = (i * 104729 * 4096) % (len(content) - 4096)
        content[off:off + 4096] = rand(4096, seed=300 + i)
        info = await bucket.update("db", base=info, size=len(content), writes=[(off, 4096)],
                                   read=reader_of(content))
    with cluster.meta.read() as txn:
        before = {cid: r["t"] for cid, r in cluster.meta.scan(txn, "chunks")}
    content[5:9] = b"page"
    info = await bucket.update("db", base=info, size=len(content), writes=[(5, 4)],
                               read=reader_of(content))
    with cluster.meta.read() as txn:
        after = {cid: r for cid, r in cluster.meta.scan(txn, "chunks")}
    new = [cid for cid in after if cid not in before]
    assert len(new) == 1 and after[new[0]]["r"] == 1
    refcounts_match(cluster)
    assert await body(bucket, "db") == bytes(content)


async def test_a_merge_lands_while_the_file_keeps_being_written(cluster, bucket):
    """A slot rewritten all the time (a database's first page) still gets merged: the
    pieces written since the merge read it stay on top of the merged chunk; and an
    update made from a base older than the merge keeps the merged layout."""
    content = bytearray(rand(2 * CHUNK, seed=12))
    info = await bucket.put("db", bytes(content))
    for i in range(10):
        off = 4096 * (3 + 7 * i)
        content[off:off + 4096] = rand(4096, seed=400 + i)
        info = await bucket.update("db", base=info, size=len(content), writes=[(off, 4096)],
                                   read=reader_of(content))
    old_base = info
    assert len(slices.slot_extents(info.chunks, CHUNK)[0]) == 21
    # the merge reads the slot; the first page changes before it commits
    real_write = cluster.writer.write
    changed = {}

    async def write_then_change(data, **kw):
        ref = await real_write(data, **kw)
        if not changed:
            changed["info"] = None
            content[0:4096] = rand(4096, seed=499)
            changed["info"] = await bucket.update("db", base=old_base, size=len(content),
                                                  writes=[(0, 4096)], read=reader_of(content))
        return ref

    cluster.writer.write = write_then_change
    try:
        assert await slices.merge(bucket, "db", [0])
    finally:
        cluster.writer.write = real_write
    merged = await bucket.head("db")
    assert len(slices.slot_extents(merged.chunks, CHUNK)[0]) == 2  # the new page + the merge
    assert await body(bucket, "db") == bytes(content)
    # an update from the pre-merge base: laid over the merged layout, not undoing it
    content[CHUNK + 8:CHUNK + 12] = b"late"
    info = await bucket.update("db", base=changed["info"], size=len(content),
                               writes=[(CHUNK + 8, 4)], read=reader_of(content))
    assert len(slices.slot_extents(info.chunks, CHUNK)[0]) == 2
    assert await body(bucket, "db") == bytes(content)
    refcounts_match(cluster)
    await cluster.gc(grace=0)
    assert await body(bucket, "db") == bytes(content)


async def test_crowded_slots_are_merged_at_once(cluster, bucket):
    content = bytearray(rand(2 * CHUNK, seed=13))
    info = await bucket.put("db", bytes(content))
    for i in range(slices.SLOT_EXTENTS):  # every other page of slot 1: 2 extents each
        off = CHUNK + 8192 * i
        content[off:off + 4096] = rand(4096, seed=500 + i)
        info = await bucket.update("db", base=info, size=len(content), writes=[(off, 4096)],
                                   read=reader_of(content))
    for _ in range(100):
        if cluster.merger.merged:
            break
        await trio.sleep(0.05)
    assert cluster.merger.merged  # long before MERGE_DELAY of quiet
    now = await bucket.head("db")
    # without the merge: 2 per update, 2 * SLOT_EXTENTS + 1
    assert len(slices.slot_extents(now.chunks, CHUNK)[1]) <= slices.SLOT_EXTENTS + 1
    assert await body(bucket, "db") == bytes(content)
    refcounts_match(cluster)


async def test_update_edges_and_growth(cluster, bucket):
    content = bytearray(rand(3000, seed=6))
    info = await bucket.put("f", bytes(content))  # inline
    content.extend(rand(CHUNK * 2, seed=7))  # grows out of the manifest
    info = await bucket.update("f", base=info, size=len(content), writes=[(3000, CHUNK * 2)],
                               read=reader_of(content))
    assert not info.inline and await body(bucket, "f") == bytes(content)
    # a write across a chunk boundary, then a truncate into the middle and regrowth
    content[CHUNK - 10:CHUNK + 10] = b"z" * 20
    info = await bucket.update("f", base=info, size=len(content), writes=[(CHUNK - 10, 20)],
                               read=reader_of(content))
    assert await body(bucket, "f") == bytes(content)
    info = await bucket.update("f", base=info, size=len(content) + 50, limit=CHUNK,
                               writes=[], read=reader_of(content))
    expect = bytes(content[:CHUNK]) + bytes(len(content) + 50 - CHUNK)
    assert await body(bucket, "f") == expect
    await bucket.link("f", "g")
    info = await bucket.update("g", base=await bucket.head("g"), size=len(expect),
                               writes=[(5, 3)], read=reader_of_at(5, b"abc"))
    assert (await body(bucket, "f"))[:10] == expect[:5] + b"abc" + expect[8:10]
    await cluster.merger.drain()
    assert (await body(bucket, "f"))[:10] == expect[:5] + b"abc" + expect[8:10]
    assert (await bucket.head("f")).nlink == 2


async def test_merge_is_dropped_when_the_object_changed(cluster, bucket):
    content = bytearray(rand(2 * CHUNK, seed=8))
    info = await bucket.put("f", bytes(content))
    content[10:20] = b"y" * 10
    await bucket.update("f", base=info, size=len(content), writes=[(10, 10)],
                        read=reader_of(content))
    await bucket.put("f", b"replaced")
    assert not await slices.merge(bucket, "f")
    assert await body(bucket, "f") == b"replaced"


# --- directory times in the same commit ------------------------------------------------------


async def test_changes_touch_their_directories_in_the_same_commit(cluster, bucket):
    await bucket.put("d/", b"", custom_metadata={"mode": "16877", "mtime": "1.0"})
    t = DirTouch("d/", {"mtime": "2.0", "ctime": "2.0"})
    seq = cluster.change_seq()
    await bucket.put("d/f", b"x", touch=[t])
    assert (await bucket.head("d/")).custom_metadata == {"mode": "16877", "mtime": "2.0",
                                                        "ctime": "2.0"}
    assert {c.key for c in cluster.changes_since(seq)} == {"d/f", "d/"}
    await bucket.link("d/f", "d/g", touch=[DirTouch("d/", {"mtime": "3.0"})])
    assert (await bucket.head("d/")).custom_metadata["mtime"] == "3.0"
    await bucket.rename("d/g", "e/g", touch=[DirTouch("d/", {"mtime": "4.0"}),
                                             DirTouch("e/", {"mtime": "4.0"}, create={"mode": "16877"})])
    assert (await bucket.head("d/")).custom_metadata["mtime"] == "4.0"
    assert (await bucket.head("e/")).custom_metadata == {"mode": "16877", "mtime": "4.0"}
    content = bytearray(b"y" * 10)
    await bucket.update("e/g", base=await bucket.head("e/g"), size=10, writes=[(0, 10)],
                        read=reader_of(content), touch=[DirTouch("e/", {"mtime": "5.0"})])
    assert (await bucket.head("e/")).custom_metadata["mtime"] == "5.0"
    await bucket.delete("e/g", touch=[DirTouch("e/", {"mtime": "6.0"})])
    assert (await bucket.head("e/")).custom_metadata["mtime"] == "6.0"
    await bucket.delete("nothing", touch=[DirTouch("e/", {"mtime": "7.0"})])  # nothing deleted
    assert (await bucket.head("e/")).custom_metadata["mtime"] == "6.0"


async def test_update_with_stored_chunks_over_an_inline_base(cluster, bucket):
    """A writer's whole chunks encoded in the background (`stored`) over a small inline
    version: the old inline bytes under a stored chunk must not be laid in again."""
    old = rand(8192, seed=20)
    base = await bucket.put("f", old)
    content = bytearray(rand(CHUNK + 5000, seed=21))
    ref = await cluster.write_chunk(bytes(content[:CHUNK]), bucket="test-bucket")
    info = await bucket.update("f", base=base, size=len(content), writes=[(CHUNK, 5000)],
                               read=reader_of(content), stored=[(0, ref)], ino=base.ino)
    assert info.size == len(content) and info.ino == base.ino
    assert await body(bucket, "f") == bytes(content)
