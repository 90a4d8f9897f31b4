"""The store API end to end: real LMDB, real shard files, no mocks."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import trio

from r2fs.engine.errors import (
    BadDigest,
    BucketAlreadyExists,
    BucketNotEmpty,
    DataUnavailable,
    EntityTooSmall,
    InvalidBucketName,
    InvalidKey,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    KeyExists,
    KeyTooLong,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NotModified,
    PreconditionFailed,
    WrongMasterKey,
)
from r2fs.engine.store import Cluster
from r2fs.engine.types import MiB, Conditional, Range

from helpers import rand, shard_files

CHUNK = 4 * MiB


@pytest.mark.parametrize("size", [0, 1, 1000, 200_000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
async def test_round_trip_sizes(bucket, size):
    data = rand(size, seed=size)
    info = await bucket.put("obj", data)
    assert info.size == size
    assert info.etag == hashlib.md5(data).hexdigest()
    body = await bucket.get("obj")
    assert await body.read() == data
    head = await bucket.head("obj")
    assert head.etag == info.etag and head.size == size


async def test_round_trip_50mib_streamed(bucket):
    data = rand(50 * MiB, seed=5)

    async def gen():
        for off in range(0, len(data), 1_000_003):  # odd piece size: not aligned to chunks
            yield data[off:off + 1_000_003]

    await bucket.put("big", gen())
    h = hashlib.sha256()
    async for piece in await bucket.get("big"):
        assert len(piece) <= CHUNK
        h.update(piece)
    assert h.digest() == hashlib.sha256(data).digest()


async def test_put_from_file_object(bucket, tmp_path):
    data = rand(CHUNK + 5, seed=9)
    p = tmp_path / "f"
    p.write_bytes(data)
    with open(p, "rb") as f:
        await bucket.put("f", f)
    assert await (await bucket.get("f")).read() == data


@pytest.mark.parametrize("offset,length", [
    (0, 1), (CHUNK - 1, 1), (CHUNK - 1, 2), (CHUNK, 1), (CHUNK - 10, CHUNK + 20),
    (2 * CHUNK - 3, 3), (5, None), (2 * CHUNK, None)])
async def test_range_reads_at_chunk_edges(bucket, offset, length):
    data = rand(2 * CHUNK + 100, seed=2)
    await bucket.put("r", data)
    body = await bucket.get("r", range=Range(offset=offset, length=length))
    end = len(data) if length is None else offset + length
    assert await body.read() == data[offset:end]
    assert body.offset == offset


async def test_suffix_and_invalid_ranges(bucket):
    data = rand(1000)
    await bucket.put("r", data)
    assert await (await bucket.get("r", range=Range(suffix=10))).read() == data[-10:]
    assert await (await bucket.get("r", range=Range(suffix=5000))).read() == data
    with pytest.raises(InvalidRange):
        await bucket.get("r", range=Range(offset=1000))
    await bucket.put("empty", b"")
    with pytest.raises(InvalidRange):
        await bucket.get("empty", range=Range(offset=0, length=1))


async def test_range_read_touches_only_its_chunks(bucket, cluster_dir, cluster):
    data = rand(3 * CHUNK, seed=3)
    info = await bucket.put("r", data)
    # Make the first and last chunks unreadable: a read of the middle chunk still works.
    for ref in (info.chunks[0], info.chunks[2]):
        for f in shard_files(cluster_dir):
            if ref.hex in f:
                os.remove(f)
    body = await bucket.get("r", range=Range(offset=CHUNK + 10, length=CHUNK - 20))
    assert await body.read() == data[CHUNK + 10:2 * CHUNK - 10]


async def test_survives_losing_any_m_nodes(cluster_dir, cluster, bucket):
    import itertools
    objects = {f"o{i}": rand(CHUNK + 1000 * i, seed=i) for i in range(3)}
    for k, v in objects.items():
        await bucket.put(k, v)
    nodes = sorted(os.listdir(os.path.join(cluster_dir, "nodes")))
    backup = os.path.join(cluster_dir, "..", "backup")
    for lost in itertools.combinations(nodes, cluster.config.m):
        for n in lost:
            shutil.move(os.path.join(cluster_dir, "nodes", n), os.path.join(backup, n))
        try:
            for k, v in objects.items():
                assert await (await bucket.get(k)).read() == v, (lost, k)
        finally:
            for n in lost:
                shutil.move(os.path.join(backup, n), os.path.join(cluster_dir, "nodes", n))


async def test_losing_m_plus_1_nodes_is_a_clear_error(cluster_dir, cluster, bucket):
    await bucket.put("doc.bin", rand(CHUNK + 1))
    for n in ("n0", "n1", "n2"):
        shutil.rmtree(os.path.join(cluster_dir, "nodes", n))
    with pytest.raises(DataUnavailable) as exc:
        await (await bucket.get("doc.bin")).read()
    msg = str(exc.value)
    assert "test-bucket/doc.bin" in msg and "chunk" in msg


async def test_bitrot_in_m_shards_is_corrected(cluster_dir, cluster, bucket):
    data = rand(CHUNK, seed=7)
    info = await bucket.put("rot", data)
    files = sorted(f for f in shard_files(cluster_dir) if info.chunks[0].hex in f)
    assert len(files) == cluster.config.k + cluster.config.m
    for f in files[:cluster.config.m]:
        with open(f, "r+b") as fh:
            fh.seek(os.path.getsize(f) // 2)
            b = fh.read(1)
            fh.seek(-1, 1)
            fh.write(bytes([b[0] ^ 0xFF]))
    assert await (await bucket.get("rot")).read() == data


async def test_dedup_identical_content(cluster_dir, cluster, bucket):
    data = rand(2 * CHUNK, seed=11)
    await bucket.put("a", data)
    n = len(shard_files(cluster_dir))
    await bucket.put("b", data)
    await cluster.create_bucket("other")
    await cluster.bucket("other").put("c", data)
    assert len(shard_files(cluster_dir)) == n
    st = await cluster.status()
    assert st.logical_bytes == 3 * len(data) and st.unique_bytes == len(data)


async def test_delete_and_gc_reclaims_only_unreferenced(cluster_dir, cluster, bucket):
    shared = rand(CHUNK, seed=1)
    await bucket.put("a", shared + rand(CHUNK, seed=2))
    await bucket.put("b", shared)
    await bucket.delete("a")
    report = await cluster.gc(grace=0)
    assert report.chunks_removed == 1
    assert report.shards_removed == cluster.config.k + cluster.config.m
    assert await (await bucket.get("b")).read() == shared
    await bucket.delete(["b", "missing"])
    await cluster.gc(grace=0)
    assert shard_files(cluster_dir) == []
    st = await cluster.status()
    assert st.chunks == 0 and st.objects == 0


async def test_gc_respects_grace(cluster, bucket):
    await bucket.put("a", rand(CHUNK))
    await bucket.delete("a")
    assert (await cluster.gc(grace=3600)).chunks_removed == 0
    assert (await cluster.gc(grace=0)).chunks_removed == 1


async def test_overwrite_releases_old_chunks(cluster, bucket):
    await bucket.put("k", rand(CHUNK, seed=1))
    await bucket.put("k", rand(CHUNK, seed=2))
    assert (await cluster.gc(grace=0)).chunks_removed == 1
    assert await (await bucket.get("k")).read() == rand(CHUNK, seed=2)


async def test_conditional_put_and_get(bucket):
    info = await bucket.put("c", b"one")
    with pytest.raises(PreconditionFailed):
        await bucket.put("c", b"two", only_if=Conditional(etag_does_not_match="*"))
    await bucket.put("new", b"x", only_if=Conditional(etag_does_not_match="*"))
    with pytest.raises(PreconditionFailed):
        await bucket.put("c", b"two", only_if=Conditional(etag_matches="0" * 32))
    info2 = await bucket.put("c", b"two", only_if=Conditional(etag_matches=f'"{info.etag}"'))
    with pytest.raises(PreconditionFailed):
        await bucket.get("c", only_if=Conditional(etag_matches=info.etag))
    with pytest.raises(NotModified):
        await bucket.get("c", only_if=Conditional(etag_does_not_match=info2.etag))
    with pytest.raises(NotModified):
        await bucket.get("c", only_if=Conditional(uploaded_after=info2.uploaded + 5))
    with pytest.raises(PreconditionFailed):
        await bucket.get("c", only_if=Conditional(uploaded_before=info2.uploaded - 5))
    body = await bucket.get("c", only_if=Conditional(etag_matches=info2.etag,
                                                    uploaded_before=info2.uploaded - 5))
    assert await body.read() == b"two"  # If-Match true wins over If-Unmodified-Since


async def test_content_md5_checked_and_nothing_committed(bucket):
    with pytest.raises(BadDigest):
        await bucket.put("m", b"data", content_md5=hashlib.md5(b"other").digest())
    with pytest.raises(NoSuchKey):
        await bucket.head("m")
    await bucket.put("m", b"data", content_md5=hashlib.md5(b"data").digest())


async def test_failing_stream_commits_nothing(bucket):
    async def broken():
        yield rand(CHUNK + 10)
        raise ConnectionError("client went away")

    await bucket.put("s", b"old")
    with pytest.raises(ConnectionError):
        await bucket.put("s", broken())
    assert await (await bucket.get("s")).read() == b"old"


async def test_list_pagination_2000_keys(bucket):
    keys = sorted([f"dir{i % 7}/file{i:05d}" for i in range(1900)] +
                  [f"top{i:03d}" for i in range(100)])

    async with trio.open_nursery() as n:
        for chunk_start in range(0, len(keys), 250):
            async def put_some(ks=keys[chunk_start:chunk_start + 250]):
                for k in ks:
                    await bucket.put(k, k.encode())
            n.start_soon(put_some)
    seen, cursor, pages = [], None, 0
    while True:
        page = await bucket.list(limit=300, cursor=cursor)
        pages += 1
        seen += [o.key for o in page.objects]
        if not page.truncated:
            assert page.cursor is None
            break
        cursor = page.cursor
    assert seen == keys and pages == 7
    # with a delimiter: 7 common prefixes + 100 top-level keys, paged 10 at a time
    items, cursor = [], None
    while True:
        page = await bucket.list(delimiter="/", limit=10, cursor=cursor)
        items += page.delimited_prefixes + [o.key for o in page.objects]
        if not page.truncated:
            break
        cursor = page.cursor
    assert sorted(items) == sorted([f"dir{i}/" for i in range(7)] + [f"top{i:03d}" for i in range(100)])
    page = await bucket.list(prefix="dir3/", start_after="dir3/file01000", limit=5)
    assert [o.key for o in page.objects] == [k for k in keys if k.startswith("dir3/") and k > "dir3/file01000"][:5]


async def test_long_keys_keep_byte_order(bucket):
    base = "x" * 500
    keys = [base + s for s in ("b", "a", "a/c", "")] + ["x" * 399, "y", "x" * 1024]
    for k in keys:
        await bucket.put(k, k[-3:].encode())
    listed = [o.key for o in (await bucket.list()).objects]
    assert listed == sorted(keys, key=lambda k: k.encode())
    assert await (await bucket.get(base + "a/c")).read() == b"a/c"
    await bucket.delete(base + "a")
    assert base + "a" not in [o.key for o in (await bucket.list()).objects]
    with pytest.raises(KeyTooLong):
        await bucket.put("x" * 1025, b"")


async def test_bucket_rules(cluster):
    for bad in ("ab", "Upper", "a_b", "-ab", "192.168.1.1", "a" * 64):
        with pytest.raises(InvalidBucketName):
            await cluster.create_bucket(bad)
    await cluster.create_bucket("my-bucket-1")
    with pytest.raises(BucketAlreadyExists):
        await cluster.create_bucket("my-bucket-1")
    b = cluster.bucket("my-bucket-1")
    await b.put("k", b"v")
    with pytest.raises(BucketNotEmpty):
        await cluster.delete_bucket("my-bucket-1")
    await b.delete("k")
    await cluster.delete_bucket("my-bucket-1")
    with pytest.raises(NoSuchBucket):
        await b.put("k", b"v")
    with pytest.raises(InvalidKey):
        await cluster.bucket("x").head("")


async def test_copy_rename_update_metadata(cluster, bucket):
    data = rand(CHUNK + 3)
    await bucket.put("src", data, http_metadata={"content-type": "text/plain"},
                     custom_metadata={"a": "1"})
    c = await bucket.copy("src", "dst")
    assert c.custom_metadata == {"a": "1"} and c.http_metadata["content-type"] == "text/plain"
    c2 = await bucket.copy("src", "src", custom_metadata={"b": "2"})
    assert c2.custom_metadata == {"b": "2"}
    await bucket.delete("src")
    await cluster.gc(grace=0)
    assert await (await bucket.get("dst")).read() == data  # refcounts kept the data
    await bucket.rename("dst", "moved")
    with pytest.raises(NoSuchKey):
        await bucket.head("dst")
    await bucket.put("other", b"o")
    with pytest.raises(KeyExists):
        await bucket.rename("moved", "other", replace=False)
    await bucket.rename("moved", "other")
    assert await (await bucket.get("other")).read() == data
    u = await bucket.update_metadata("other", custom_metadata={"mode": "420"})
    assert u.custom_metadata == {"mode": "420"} and u.etag == c.etag


async def test_rename_prefix_moves_everything(bucket):
    for k in ("d/a", "d/sub/b", "d/", "e/"):
        await bucket.put(k, k.encode())
    n = await bucket.rename_prefix("d/", "e/", replace_keys=["e/"])
    assert n == 3
    keys = [o.key for o in (await bucket.list()).objects]
    assert keys == ["e/", "e/a", "e/sub/b"]
    await bucket.put("g/a", b"1")
    with pytest.raises(KeyExists):
        await bucket.rename_prefix("e/", "g/")
    assert [o.key for o in (await bucket.list()).objects] == ["e/", "e/a", "e/sub/b", "g/a"]


async def test_multipart(cluster, bucket):
    uid = await bucket.create_multipart_upload("mp", custom_metadata={"x": "y"})
    p1 = rand(5 * MiB, seed=1)
    p2 = rand(5 * MiB, seed=2)
    p3 = b"tail"
    i2 = await bucket.upload_part("mp", uid, 2, p2)
    i1 = await bucket.upload_part("mp", uid, 1, p1)
    i3 = await bucket.upload_part("mp", uid, 3, p3)
    parts, truncated = await bucket.list_parts("mp", uid)
    assert [p.part_number for p in parts] == [1, 2, 3] and not truncated
    ups, _ = await bucket.list_multipart_uploads()
    assert [u.upload_id for u in ups] == [uid]
    with pytest.raises(InvalidPartOrder):
        await bucket.complete_multipart_upload("mp", uid, [(2, i2.etag), (1, i1.etag)])
    with pytest.raises(InvalidPart):
        await bucket.complete_multipart_upload("mp", uid, [(1, "0" * 32)])
    with pytest.raises(EntityTooSmall):
        await bucket.complete_multipart_upload("mp", uid, [(3, i3.etag), (4, "x")])
    info = await bucket.complete_multipart_upload(
        "mp", uid, [(1, i1.etag), (2, i2.etag), (3, i3.etag)])
    want = hashlib.md5(bytes.fromhex(i1.etag) + bytes.fromhex(i2.etag) + bytes.fromhex(i3.etag))
    assert info.etag == f"{want.hexdigest()}-3"
    assert info.custom_metadata == {"x": "y"} and info.parts == (5 * MiB, 5 * MiB, 4)
    assert await (await bucket.get("mp")).read() == p1 + p2 + p3
    with pytest.raises(NoSuchUpload):
        await bucket.upload_part("mp", uid, 1, b"x")
    uid2 = await bucket.create_multipart_upload("mp2")
    await bucket.upload_part("mp2", uid2, 1, rand(MiB, seed=99))
    await bucket.abort_multipart_upload("mp2", uid2)
    await cluster.gc(grace=0)
    assert await (await bucket.get("mp")).read() == p1 + p2 + p3
    st = await cluster.status()
    assert st.unique_bytes == len(p1) + len(p2) + len(p3)  # parts are never inline; aborted part gone


async def test_upload_part_copy_with_range(bucket):
    src = rand(6 * MiB, seed=4)
    await bucket.put("src", src)
    uid = await bucket.create_multipart_upload("dst")
    a = await bucket.upload_part_copy("dst", uid, 1, bucket.name, "src", range=Range(0, 5 * MiB))
    b = await bucket.upload_part_copy("dst", uid, 2, bucket.name, "src", range=Range(5 * MiB, None))
    await bucket.complete_multipart_upload("dst", uid, [(1, a.etag), (2, b.etag)])
    assert await (await bucket.get("dst")).read() == src


SECOND_PROCESS = textwrap.dedent("""
    import sys, trio
    from r2fs.engine.store import Cluster
    async def main():
        c = Cluster.open(sys.argv[1])
        b = c.bucket("test-bucket")
        if sys.argv[2] == "put":
            await b.put("from-child", b"hello from the child")
        else:
            print((await (await b.get("from-parent")).read()).decode())
    trio.run(main)
""")


async def test_second_process_sees_writes_at_once(cluster_dir, bucket):
    await bucket.put("from-parent", b"hello from the parent")
    out = subprocess.run([sys.executable, "-c", SECOND_PROCESS, cluster_dir, "get"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hello from the parent"
    seq = bucket.cluster.change_seq()
    subprocess.run([sys.executable, "-c", SECOND_PROCESS, cluster_dir, "put"], check=True)
    assert await (await bucket.get("from-child")).read() == b"hello from the child"
    changes = bucket.cluster.changes_since(seq)
    assert [(c.bucket, c.key) for c in changes] == [("test-bucket", "from-child")]
    assert "from-child" in [o.key for o in (await bucket.list()).objects]


async def test_wrong_master_key_is_refused(cluster_dir, cluster, bucket):
    await bucket.put("secret", b"data")
    cluster.close()
    with open(os.path.join(cluster_dir, "master.key"), "wb") as f:
        f.write(os.urandom(32))
    with pytest.raises(WrongMasterKey) as exc:
        Cluster.open(cluster_dir)
    assert "master key" in str(exc.value)


KILLED_PUT = textwrap.dedent("""
    import os, sys, trio
    from r2fs.engine.store import Cluster
    async def main():
        c = Cluster.open(sys.argv[1])
        b = c.bucket("test-bucket")
        async def slow():
            for i in range(100):
                yield os.urandom(1 << 20)
                if i == 9:
                    print("streaming", flush=True)
                await trio.sleep(0.05)
        await b.put("victim", slow())
    trio.run(main)
""")


async def test_kill_during_put_leaves_no_dangling_manifest(cluster_dir, cluster, bucket):
    await bucket.put("victim", b"old content")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PUT, cluster_dir], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"streaming"
    await trio.sleep(0.3)
    proc.kill()
    proc.wait()
    assert await (await bucket.get("victim")).read() == b"old content"
    # the killed put's chunks are recorded only in its manifest commit, which never
    # happened: their shard files are orphans (no record names them) that gc removes
    report = await cluster.gc(grace=0, orphan_grace=0)
    assert report.orphans_removed >= 6
    assert await (await bucket.get("victim")).read() == b"old content"
    assert all(n.usage()[0] == 0 for n in cluster.nodes.values())  # "old content" is inline


MEMORY_PROBE = textwrap.dedent("""
    import hashlib, sys, trio
    from r2fs.engine.store import Cluster
    SIZE = int(sys.argv[2])
    async def main():
        c = Cluster.open(sys.argv[1])
        b = c.bucket("test-bucket")
        block = bytes(range(256)) * 4096  # 1 MiB; counter makes each chunk unique
        async def gen():
            for i in range(SIZE >> 20):
                yield i.to_bytes(8, "big") + block[8:]
        await b.put("huge", gen())
        n = 0
        async for piece in await b.get("huge"):
            n += len(piece)
        assert n == SIZE, n
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a
        # big pytest process would report pytest's peak instead of its own
        with open("/proc/self/status") as f:
            print(next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) // 1024)
    trio.run(main)
""")


@pytest.mark.slow
async def test_memory_stays_bounded_for_2gib(cluster_dir, bucket):
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, cluster_dir, str(2 << 30)],
                         capture_output=True, text=True, check=True)
    peak_mib = int(out.stdout.strip())
    assert peak_mib < 300, f"peak RSS {peak_mib} MiB"


@pytest.mark.lmdb_only
async def test_missing_metadata_is_refused_not_recreated(cluster_dir, cluster, bucket):
    await bucket.put("k", b"v")
    cluster.close()
    shutil.rmtree(os.path.join(cluster_dir, "meta"))
    from r2fs.engine.errors import ClusterError
    with pytest.raises(ClusterError) as exc:
        Cluster.open(cluster_dir, create=True)
    assert "metadata" in str(exc.value)
    assert not os.path.exists(os.path.join(cluster_dir, "meta"))
