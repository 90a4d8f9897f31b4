"""L1: the local-disk cache of sealed chunks, through the real store API."""

from __future__ import annotations

import os

import trio

from r2fs.engine.cache import BLOCK, SEG_PREFIX, DiskCache
from r2fs.engine.store import Cluster

from conftest import CHUNK, nodes_gone
from helpers import rand


def cache_files(cluster: Cluster) -> list[str]:
    d = cluster.reader.l1.dir
    return [os.path.join(d, f) for f in os.listdir(d) if f.startswith(SEG_PREFIX)]


def disk_bytes(directory: str) -> int:
    """Bytes the cache's data files take (everything but the lock and the state file)."""
    total = 0
    for f in os.listdir(directory):
        if f in ("lock", "state.json"):
            continue
        try:
            total += os.path.getsize(os.path.join(directory, f))
        except FileNotFoundError:
            continue  # evicted while we looked
    return total


async def test_cold_read_fills_l1_then_no_node_is_touched(small_cluster, bucket):
    c = small_cluster
    c.reader.configure(cache_size=64 << 20, snapshots=False)
    data = rand(10 * CHUNK + 123, seed=1)
    await bucket.put("obj", data)
    assert await (await bucket.get("obj")).read() == data
    figs = c.reader.figures()
    assert figs["tiers"]["nodes"]["hits"] == 11
    assert figs["l1"]["entries"] == 11
    with nodes_gone(c):
        assert await (await bucket.get("obj")).read() == data
        info = await bucket.head("obj")
        assert await bucket.read_range(info, CHUNK - 10, 3 * CHUNK) == data[CHUNK - 10:4 * CHUNK - 10]
    figs = c.reader.figures()
    assert figs["tiers"]["nodes"]["hits"] == 11  # not one more
    assert figs["tiers"]["l1"]["hits"] >= 11


async def test_l1_holds_no_plaintext(small_cluster, bucket):
    c = small_cluster
    c.reader.configure(cache_size=64 << 20, snapshots=False)
    data = rand(3 * CHUNK, seed=2)
    await bucket.put("obj", data)
    await (await bucket.get("obj")).read()
    c.reader.l1.flush()  # (fills are written by background threads)
    files = cache_files(c)
    assert len(files) >= 1 and c.reader.l1.status()["entries"] == 3
    probes = [data[i:i + 32] for i in range(0, len(data), CHUNK // 2)]
    for path in files:
        with open(path, "rb") as f:
            blob = f.read()
        assert not any(p in blob for p in probes)


async def test_bound_holds_while_reading_three_times_its_size(small_cluster, bucket):
    c = small_cluster
    bound = 8 * (CHUNK + BLOCK)
    c.reader.configure(cache_size=bound, snapshots=False)
    data = rand(24 * CHUNK, seed=3)
    await bucket.put("big", data)
    l1 = c.reader.l1
    peak = 0

    def sample() -> int:
        # Under the cache's lock, so that no eviction runs between listing the
        # files and sizing them: unlocked, a segment sized before its eviction
        # plus another sized after the freed room was written counts bytes that
        # were never on disk together.
        with l1._lock:
            return max(l1.used, disk_bytes(l1.dir))

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sample())
            await trio.sleep(0)

    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        info = await bucket.head("big")
        for off in range(0, len(data), CHUNK // 2):  # sequential reads, read-ahead on
            got += await bucket.read_range(info, off, CHUNK // 2)
            peak = max(peak, sample())
        nursery.cancel_scope.cancel()
    assert bytes(got) == data
    assert 0 < peak <= bound
    st = l1.status()
    # (a fill finding every segment busy with writes in flight is skipped, not forced
    # in: how many depends on how far the background writers lag, so count, not guess)
    assert st["fills"] + st["skipped_fills"] >= 24, st
    assert st["fills"] > 8, st  # more than the bound holds: it had to evict
    assert st["evicted_chunks"] == st["fills"] - st["entries"] > 0, st
    assert st["used_bytes"] <= bound and disk_bytes(l1.dir) <= bound


async def test_scan_does_not_flush_the_hot_set(small_cluster, bucket):
    c = small_cluster
    c.reader.configure(cache_size=16 * (CHUNK + BLOCK), snapshots=False)
    hot = rand(2 * CHUNK, seed=4)
    scan = rand(48 * CHUNK, seed=5)
    await bucket.put("hot", hot)
    await bucket.put("scan", scan)
    for _ in range(2):  # a second access promotes the hot chunks to the main queue
        assert await (await bucket.get("hot")).read() == hot
    assert await (await bucket.get("scan")).read() == scan
    with nodes_gone(c):
        assert await (await bucket.get("hot")).read() == hot


async def test_restart_keeps_the_cache_warm(tmp_path):
    path = str(tmp_path / "cluster")
    cache_dir = str(tmp_path / "l1")
    data = rand(6 * CHUNK, seed=6)
    c = Cluster.init(path, chunk_size=CHUNK)
    try:
        c.reader.configure(cache_dir=cache_dir, cache_size=64 << 20, snapshots=False)
        await c.create_bucket("warm")
        await c.bucket("warm").put("obj", data)
        await (await c.bucket("warm").get("obj")).read()
    finally:
        c.reader.close()
        c.close()
    c = Cluster.open(path)
    try:
        c.reader.configure(cache_dir=cache_dir, cache_size=64 << 20, snapshots=False)
        assert c.reader.l1.status()["entries"] == 6
        with nodes_gone(c):
            assert await (await c.bucket("warm").get("obj")).read() == data
        assert c.reader.figures()["tiers"]["nodes"]["hits"] == 0
    finally:
        c.reader.close()
        c.close()


async def test_files_written_after_the_last_index_save_are_adopted(tmp_path, small_cluster):
    """A process killed before saving its index still leaves a usable cache."""
    cache_dir = str(tmp_path / "l1")
    l1 = DiskCache(cache_dir, 1 << 20, small_cluster.reader.open_into)
    cid = small_cluster.master.chunk_id(b"x" * 1000)
    sealed = small_cluster.chunks.seal(cid, b"x" * 1000)
    assert l1.put(cid, sealed)
    l1.flush()  # the fill landed (background writers); then:
    os.close(l1._lock_fd)  # "killed": no index saved, lock released by the kernel
    l1b = DiskCache(cache_dir, 1 << 20, small_cluster.reader.open_into)
    try:
        assert l1b.dir == l1.dir
        assert l1b.get(cid) == b"x" * 1000
    finally:
        l1b.close()


async def test_second_process_on_the_same_root_takes_another_slot(tmp_path, small_cluster):
    a = DiskCache(str(tmp_path / "l1"), 1 << 20, small_cluster.reader.open_into)
    b = DiskCache(str(tmp_path / "l1"), 1 << 20, small_cluster.reader.open_into)
    try:
        assert a.dir != b.dir
    finally:
        a.close()
        b.close()


async def test_corrupt_and_truncated_entries_are_dropped_and_refetched(small_cluster, bucket):
    c = small_cluster
    c.reader.configure(cache_size=64 << 20, snapshots=False)
    data = rand(4 * CHUNK, seed=7)
    await bucket.put("obj", data)
    await (await bucket.get("obj")).read()
    refs = (await bucket.head("obj")).chunks
    spots = sorted(c.reader.l1.locate(r.id) for r in refs)
    last = spots[-1]  # the last entry written in the newest segment
    path, off, size = spots[0]
    with open(path, "r+b") as f:  # one flipped bit in the ciphertext
        f.seek(off + 1000)
        b = f.read(1)
        f.seek(off + 1000)
        f.write(bytes([b[0] ^ 1]))
    with open(last[0], "r+b") as f:  # the last entry written, cut short
        f.truncate(last[1] + 5000)
    assert await (await bucket.get("obj")).read() == data
    figs = c.reader.figures()
    assert figs["l1"]["corrupt"] == 2
    assert figs["tiers"]["nodes"]["hits"] == 4 + 2
    with nodes_gone(c):  # the refetched copies are good again
        assert await (await bucket.get("obj")).read() == data


def _supports_direct_io(directory: str) -> bool:
    try:
        fd = os.open(os.path.join(directory, "probe"), os.O_RDWR | os.O_CREAT | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True


async def test_entries_not_in_the_page_cache_are_read_direct_and_still_verified(small_cluster,
                                                                               bucket):
    c = small_cluster
    c.reader.configure(cache_size=64 << 20, snapshots=False)
    data = rand(4 * CHUNK + 777, seed=17)  # (the last entry is not block-sized)
    await bucket.put("obj", data)
    await (await bucket.get("obj")).read()
    refs = (await bucket.head("obj")).chunks
    c.reader.l1.flush()  # (fills are written by background threads)
    path, off, _ = c.reader.l1.locate(refs[1].id)
    with open(path, "r+b") as f:  # one flipped bit in the ciphertext of chunk 1
        f.seek(off + 4000)
        b = f.read(1)
        f.seek(off + 4000)
        f.write(bytes([b[0] ^ 1]))
    for seg in cache_files(c):  # out of the page cache: the next reads go to the disk
        fd = os.open(seg, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    assert await (await bucket.get("obj")).read() == data
    figs = c.reader.figures()
    assert figs["l1"]["corrupt"] == 1
    assert figs["tiers"]["nodes"]["hits"] == 5 + 1
    if _supports_direct_io(c.reader.l1.dir):
        assert figs["l1"]["direct_reads"] >= 4
    with nodes_gone(c):  # everything from L1 again: the refetched chunk 1 too
        assert await (await bucket.get("obj")).read() == data


async def test_concurrent_misses_of_one_chunk_fetch_once(small_cluster, bucket):
    c = small_cluster
    c.reader.configure(cache_size=64 << 20, snapshots=False)
    data = rand(CHUNK, seed=8)
    await bucket.put("one", data)
    info = await bucket.head("one")
    results = []

    async def reader() -> None:
        results.append(await bucket.read_range(info, 0, CHUNK))

    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(reader)
    assert results == [data] * 12
    assert c.reader.figures()["tiers"]["nodes"]["hits"] == 1


async def test_chunk_bigger_than_the_cache_is_read_but_not_cached(small_cluster, bucket):
    c = small_cluster
    c.reader.configure(cache_size=CHUNK // 2, snapshots=False)
    data = rand(2 * CHUNK, seed=9)
    await bucket.put("obj", data)
    assert await (await bucket.get("obj")).read() == data
    assert c.reader.l1.status()["entries"] == 0


async def test_chunks_in_local_staging_are_read_from_there(small_cluster, bucket):
    """Local uploads: a chunk not yet replicated is read from staging (no replicator
    runs here), counted as a staging hit, and not copied into L1."""
    c = small_cluster
    c.writer.configure(mode="local")
    c.reader.configure(cache_size=64 << 20, snapshots=False)
    data = rand(3 * CHUNK, seed=10)
    await bucket.put("staged", data)
    assert {c.chunk_record(r.id)["loc"] for r in (await bucket.head("staged")).chunks} == {"staging"}
    with nodes_gone(c):
        assert await (await bucket.get("staged")).read() == data
    figs = c.reader.figures()
    assert figs["tiers"]["staging"]["hits"] == 3 and figs["tiers"]["nodes"]["hits"] == 0
    assert figs["l1"]["entries"] == 0
