"""Read-ahead: sequential readers prefetch, random readers do not, memory stays bounded."""

from __future__ import annotations

import random

import trio

from conftest import CHUNK
from helpers import rand


async def settle(reader) -> None:
    """Let prefetch tasks finish (they run as trio system tasks)."""
    for _ in range(300):
        if not reader.readahead._inflight:
            return
        await trio.sleep(0.01)


async def test_sequential_reads_prefetch_past_their_end(small_cluster, bucket):
    c = small_cluster
    data = rand(12 * CHUNK, seed=21)
    await bucket.put("seq", data)
    info = await bucket.head("seq")
    step = 64 * 1024
    got = bytearray()
    for off in range(0, 2 * CHUNK, step):  # small reads, like the kernel's
        got += await bucket.read_range(info, off, step)
    await settle(c.reader)
    ra = c.reader.readahead.counters
    assert ra["prefetched"] >= c.reader.readahead.window
    for off in range(2 * CHUNK, len(data), step):
        got += await bucket.read_range(info, off, step)
    assert bytes(got) == data
    nodes = c.reader.figures()["tiers"]["nodes"]["hits"]
    assert nodes == 12  # each chunk fetched once, prefetched or not
    assert c.reader.readahead.counters["used"] >= 8


async def test_random_single_chunk_reads_do_not_prefetch(small_cluster, bucket):
    c = small_cluster
    data = rand(16 * CHUNK, seed=22)
    await bucket.put("rnd", data)
    info = await bucket.head("rnd")
    rng = random.Random(5)
    prev_end = None
    reads = 0
    while reads < 30:
        i = rng.randrange(16)
        off = i * CHUNK + rng.randrange(CHUNK - 5000)
        if prev_end is not None and abs(off - prev_end) < CHUNK:
            continue  # that one would look like a sequential reader's next read
        assert await bucket.read_range(info, off, 4096) == data[off:off + 4096]
        prev_end = off + 4096
        reads += 1
    await settle(c.reader)
    assert c.reader.readahead.counters["prefetched"] == 0


async def test_a_get_prefetches_within_its_range_only(small_cluster, bucket):
    c = small_cluster
    data = rand(20 * CHUNK, seed=23)
    await bucket.put("obj", data)
    from r2fs.engine.types import Range
    body = await bucket.get("obj", range=Range(offset=2 * CHUNK, length=4 * CHUNK))
    assert await body.read() == data[2 * CHUNK:6 * CHUNK]
    await settle(c.reader)
    assert c.reader.figures()["tiers"]["nodes"]["hits"] == 4


async def test_no_readahead_when_turned_off(small_cluster, bucket):
    c = small_cluster
    c.reader.configure(cache_size=0, readahead=False, snapshots=False)
    data = rand(8 * CHUNK, seed=24)
    await bucket.put("obj", data)
    assert await (await bucket.get("obj")).read() == data
    assert c.reader.readahead.counters["prefetched"] == 0


async def test_prefetch_memory_stays_within_the_budget(small_cluster, bucket):
    c = small_cluster
    ra = c.reader.readahead
    ra.budget = 3 * CHUNK
    data = rand(30 * CHUNK, seed=25)
    await bucket.put("obj", data)
    peak = 0
    got = bytearray()
    async for piece in await bucket.get("obj"):
        peak = max(peak, ra.buffered_bytes())
        got += piece
        await trio.sleep(0.005)  # a slow consumer: prefetches pile up to the budget
    assert bytes(got) == data
    assert 0 < peak <= 3 * CHUNK


async def test_abandoned_stream_leaves_only_the_budget_behind(small_cluster, bucket):
    c = small_cluster
    ra = c.reader.readahead
    data = rand(30 * CHUNK, seed=26)
    await bucket.put("obj", data)
    body = await bucket.get("obj")
    it = body.__aiter__()
    assert await it.__anext__() == data[:CHUNK]
    await it.aclose()  # the client went away
    await settle(c.reader)
    assert ra.buffered_bytes() <= ra.budget
    assert ra.buffered_bytes() <= ra.window * CHUNK


async def test_concurrent_pieces_of_one_chunk_are_fetched_and_opened_once(small_cluster, bucket):
    """The kernel has several requests for pieces of one chunk in flight at once:
    they all use one fetch (one L1 hit, one authentication), not one each."""
    c = small_cluster
    c.reader.configure(cache_size=64 << 20, snapshots=False)
    data = rand(6 * CHUNK, seed=27)
    await bucket.put("obj", data)
    info = await bucket.head("obj")
    assert await (await bucket.get("obj")).read() == data  # L1 holds every chunk now
    await settle(c.reader)
    before = c.reader.figures()["tiers"]["l1"]["hits"]
    piece = CHUNK // 4
    got: dict[int, bytes] = {}

    async def read(off: int) -> None:
        got[off] = await bucket.read_range(info, off, piece)

    for start in range(0, len(data), 4 * piece):  # four requests at a time, like the kernel's
        async with trio.open_nursery() as nursery:
            for off in range(start, start + 4 * piece, piece):
                nursery.start_soon(read, off)
    assert b"".join(got[o] for o in sorted(got)) == data
    await settle(c.reader)
    assert c.reader.figures()["tiers"]["l1"]["hits"] - before == 6


def test_no_readahead_also_leaves_the_kernel_window_of_a_mount_alone(small_cluster):
    """--no-readahead switches off both halves of read-ahead: the engine's
    prefetch and the mount's enlarged kernel window (unless -o asks for one)."""
    from r2fs.fuse.mount import kernel_read_ahead_kb, parse_options

    c = small_cluster
    c.reader.configure(cache_size=0, snapshots=False)
    opts, _ = parse_options(None)
    assert kernel_read_ahead_kb(opts, c) == 4096
    c.reader.configure(cache_size=0, readahead=False, snapshots=False)
    assert kernel_read_ahead_kb(opts, c) == 0  # 0: the kernel's default stays
    for text in ("read_ahead_kb=4096", "allow_other, read_ahead_kb=1024"):
        opts, _ = parse_options(text)
        assert kernel_read_ahead_kb(opts, c) == opts.read_ahead_kb
