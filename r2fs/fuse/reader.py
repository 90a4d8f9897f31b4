"""Reading committed object data for the mount, chunk by chunk.

The kernel asks for at most 128 KiB-1 MiB per read while objects are stored
in (default 4 MiB) encrypted, erasure-coded chunks: decoding a whole chunk for
every kernel read would cost 4-32x the work. So decoded chunks are kept in a
small LRU (chunks are content-addressed and immutable: a cached chunk can
never be stale) and sequential readers get the next chunks prefetched
concurrently, so decoding overlaps with the reader's consumption.
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict

import trio

from ..engine.store import Bucket, Cluster
from ..engine.types import ChunkRef, ObjectInfo

log = logging.getLogger("r2fs.fuse")


class ChunkReader:
    def __init__(self, cluster: Cluster, bucket: Bucket, *, cache_bytes: int = 96 << 20,
                 readahead: int = 3) -> None:
        self._cluster = cluster
        self._bucket = bucket
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._limit = cache_bytes
        self._inflight: dict[bytes, trio.Event] = {}
        self._readahead = readahead
        self.nursery: trio.Nursery | None = None  # set by the mount for prefetching

    async def read(self, info: ObjectInfo, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the snapshot `info`, clipped to its size."""
        end = min(info.size, offset + length)
        if offset >= end:
            return b""
        if info.inline or not info.chunks:
            return await self._bucket.read_range(info, offset, end - offset)
        starts, refs = _spans(info)
        i = bisect.bisect_right(starts, offset) - 1
        out: list[bytes] = []
        pos = offset
        while pos < end:
            data = await self._chunk(refs[i], f"{info.bucket}/{info.key}")
            lo = pos - starts[i]
            hi = min(len(data), end - starts[i])
            out.append(data[lo:hi])
            pos = starts[i] + hi
            i += 1
        self._prefetch(info, refs, i, f"{info.bucket}/{info.key}")
        return out[0] if len(out) == 1 else b"".join(out)

    def _prefetch(self, info: ObjectInfo, refs: list[ChunkRef], nxt: int, context: str) -> None:
        if self.nursery is None:
            return
        for j in range(nxt, min(nxt + self._readahead, len(refs))):
            ref = refs[j]
            if ref.id not in self._cache and ref.id not in self._inflight:
                self.nursery.start_soon(self._prefetch_one, ref, context)

    async def _prefetch_one(self, ref: ChunkRef, context: str) -> None:
        try:
            await self._chunk(ref, context)
        except Exception as exc:  # noqa: BLE001 - the real read reports it
            log.debug("prefetch of %s failed: %s", context, exc)

    async def _chunk(self, ref: ChunkRef, context: str) -> bytes:
        while True:
            data = self._cache.get(ref.id)
            if data is not None:
                self._cache.move_to_end(ref.id)
                return data
            pending = self._inflight.get(ref.id)
            if pending is None:
                break
            await pending.wait()
            if ref.id not in self._cache:  # the fetch failed: try ourselves
                break
        done = self._inflight[ref.id] = trio.Event()
        try:
            data = await self._cluster.read_chunk(ref, context=context)
            self._store(ref.id, data)
            return data
        finally:
            del self._inflight[ref.id]
            done.set()

    def _store(self, cid: bytes, data: bytes) -> None:
        self._cache[cid] = data
        self._cached_bytes += len(data)
        while self._cached_bytes > self._limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= len(old)


_span_cache: dict[str, tuple[list[int], list[ChunkRef]]] = {}


def _spans(info: ObjectInfo) -> tuple[list[int], list[ChunkRef]]:
    """Chunk start offsets of a manifest (memoised per version: big files have many)."""
    hit = _span_cache.get(info.version)
    if hit is None:
        starts, refs, off = [], [], 0
        for ref in info.chunks:
            starts.append(off)
            refs.append(ref)
            off += ref.size
        hit = (starts, refs)
        if len(_span_cache) > 256:
            _span_cache.clear()
        _span_cache[info.version] = hit
    return hit
