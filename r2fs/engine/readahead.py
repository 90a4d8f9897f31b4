"""Read-ahead: sequential readers get the next chunks fetched concurrently.

A chunk read is I/O (k shard files) followed by CPU (RS decode, AES-GCM);
reading chunks one after the other leaves the disk idle while the CPU works
and the reverse. Fetching the next few chunks concurrently overlaps them.

* Who: a read of a range spanning several chunks (an S3 GET, a large read)
  prefetches inside its range; a read that starts where the previous read of
  the same object version ended (a sequential reader, like the kernel's reads
  of a mounted file) also prefetches past its end. A random reader's one-chunk
  reads trigger nothing.
* Memory: prefetched plaintext waits in a buffer shared by the process,
  bounded by `budget` bytes counting in-flight fetches; when it is full the
  oldest unclaimed chunk is dropped (it was also put in L1, so dropping costs
  little), and each stream runs at most `window` chunks ahead.
* A chunk read only partly (the kernel reads 1 MiB at a time, several
  requests in flight) stays in the same buffer -- a small window of
  plaintext -- until a read reaches its end, so it is fetched and
  authenticated once per stream, not once per request. Concurrent requests
  for pieces of one chunk all find it there (taking it out on first use
  made a second, concurrent piece fetch and decrypt the chunk again). A
  chunk read to its end moves to the front of the eviction order: it goes
  first when the budget needs room, but a piece requested late (the
  kernel's requests can be served out of order) still finds it.
* Prefetch tasks are trio system tasks: a reader needs no nursery, and one
  that stops reading (client gone) leaves at most `budget` bytes behind.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import OrderedDict
from typing import AsyncIterator, Awaitable, Callable

import trio

from .types import ChunkRef, MiB, ObjectInfo

log = logging.getLogger("r2fs.readahead")

#: Bytes buffered (ready or in flight) process-wide, and chunks a stream runs
#: ahead: 4 chunks in flight keep the 3 node decodes (reader.NODE_READS) busy;
#: 4, 8 or 16 made no difference to L1 hits (session 4), and 8 with a 64 MiB
#: budget held up to 64 MiB of plaintext besides the fetches' own buffers.
DEFAULT_BUDGET = 32 * MiB
DEFAULT_WINDOW = 4
#: Sequential-stream positions remembered (object versions being read).
STREAMS = 512
#: A read starting this close to where the last one ended continues its stream
#: (the kernel sends a mount's sequential reads slightly out of order); a read
#: of n bytes is allowed 2n of reordering (the kernel has several in flight).
SEQUENTIAL_SLACK = 128 * 1024
#: A hole is streamed as zero pieces of at most this size (bounded memory).
HOLE_PIECE = 1 * MiB

Fetch = Callable[[ChunkRef, str], Awaitable[bytes]]


class ReadAhead:
    """The prefetch buffer and the sequential-reader detector of one process."""

    def __init__(self, fetch: Fetch, *, budget: int = DEFAULT_BUDGET,
                 window: int = DEFAULT_WINDOW, enabled: bool = True,
                 hint: Callable[[list[bytes]], None] | None = None) -> None:
        """`hint(chunk ids)`: told about the chunks one window beyond the prefetch
        window, so a tier can start slow I/O for them early (L1: fadvise)."""
        self._fetch = fetch
        self._hint = hint
        self._hinted: OrderedDict[bytes, None] = OrderedDict()
        self.budget = budget
        self.window = window
        self.enabled = enabled
        self._lock = threading.Lock()
        self._active = time.monotonic()  # when a read last asked for a chunk
        self._ready: OrderedDict[bytes, bytes] = OrderedDict()  # oldest first
        self._ready_bytes = 0
        self._inflight: dict[bytes, int] = {}
        self._claimed: set[bytes] = set()  # in flight, but a reader already waits for it
        self._seen: set[bytes] = set()  # buffered chunks a reader has used (not "dropped")
        self._inflight_bytes = 0
        # version -> [where the last read ended, chunks up to this index were prefetched]
        self._streams: OrderedDict[str, list[int]] = OrderedDict()
        self._spans: OrderedDict[str, list[int]] = OrderedDict()
        #: waited: reads that found their chunk not fetched yet (read-ahead was late)
        self.counters = {"prefetched": 0, "used": 0, "dropped": 0, "failed": 0, "waited": 0}

    # --- the buffer ------------------------------------------------------------------

    def take(self, cid: bytes) -> bytes | None:
        """A prefetched chunk's plaintext (removed from the buffer), or None."""
        with self._lock:
            data = self._ready.pop(cid, None)
            if data is not None:
                self._ready_bytes -= len(data)
                if cid not in self._seen:
                    self.counters["used"] += 1
                self._seen.discard(cid)
            elif cid in self._inflight:
                # the caller will join the fetch in flight: do not park a second copy
                self._claimed.add(cid)
                self.counters["used"] += 1
            return data

    def _use(self, cid: bytes, whole: bool) -> bytes | None:
        """A buffered chunk for a read of part of it, left in the buffer: most
        recently used while pieces are still to come (`whole` False), first to
        evict once a read reached its end. None: fetch it (a prefetch in flight
        is claimed, so the fetch joins it instead of parking a second copy)."""
        with self._lock:
            data = self._ready.get(cid)
            if data is not None:
                self._ready.move_to_end(cid, last=not whole)
                if cid not in self._seen:
                    self._seen.add(cid)
                    self.counters["used"] += 1
            elif cid in self._inflight:
                self._claimed.add(cid)
                self.counters["used"] += 1
            return data

    def _reserve(self, ref: ChunkRef) -> bool:
        with self._lock:
            if ref.id in self._ready or ref.id in self._inflight:
                return False
            self._make_room(ref.size)
            if self._ready_bytes + self._inflight_bytes + ref.size > self.budget:
                return False
            self._inflight[ref.id] = ref.size
            self._inflight_bytes += ref.size
            return True

    def prefetch(self, refs: list[ChunkRef], context: str) -> None:
        """Start fetching these chunks in the background (as the budget allows)."""
        if not self.enabled:
            return
        for ref in refs:
            if ref.size and not ref.hole and self._reserve(ref):
                trio.lowlevel.spawn_system_task(self._one, ref, context, name="r2fs-readahead")

    async def _one(self, ref: ChunkRef, context: str) -> None:
        data = None
        try:
            data = await self._fetch(ref, context)
        except Exception as exc:  # noqa: BLE001 - the reader's own read reports it
            log.debug("read-ahead of %s chunk %s failed: %s", context, ref.hex, exc)
        finally:
            with self._lock:
                if data is None:
                    self.counters["failed"] += 1
                self._inflight_bytes -= self._inflight.pop(ref.id, 0)
                if data is not None:
                    self.counters["prefetched"] += 1
                if ref.id in self._claimed:
                    self._claimed.discard(ref.id)
                elif data is not None and ref.id not in self._ready:
                    self._ready[ref.id] = data
                    self._ready_bytes += len(data)

    def trim(self, idle: float) -> int:
        """Drop every buffered chunk if no read asked for one for `idle` seconds
        (a reader that stopped -- a client gone, a file closed half read -- no
        longer leaves up to `budget` bytes behind for good). Returns the bytes dropped."""
        with self._lock:
            if time.monotonic() - self._active < idle or not self._ready:
                return 0
            freed = self._ready_bytes
            for cid in self._ready:
                if cid not in self._seen:
                    self.counters["dropped"] += 1
            self._ready.clear()
            self._seen.clear()
            self._ready_bytes = 0
        return freed

    def buffered_bytes(self) -> int:
        with self._lock:
            return self._ready_bytes + self._inflight_bytes

    # --- streams -----------------------------------------------------------------------

    def _stream(self, info: ObjectInfo, offset: int, end: int) -> list[int] | None:
        """The stream state if this read continues the previous read of the same
        version (give or take a read-ahead's worth of reordering: the kernel
        may issue a sequential reader's reads concurrently), else None."""
        with self._lock:
            state = self._streams.pop(info.version, None)
            slack = max(SEQUENTIAL_SLACK, 2 * (end - offset))
            sequential = state is not None and abs(offset - state[0]) <= slack
            if not sequential:
                state = [end, -1]
            state[0] = max(state[0], end) if sequential else end
            self._streams[info.version] = state
            while len(self._streams) > STREAMS:
                self._streams.popitem(last=False)
        return state if sequential else None

    def _starts(self, info: ObjectInfo) -> list[int]:
        with self._lock:
            starts = self._spans.get(info.version)
            if starts is not None:
                self._spans.move_to_end(info.version)
                return starts
        starts, off = [], 0
        for ref in info.chunks:
            starts.append(off)
            off += ref.size
        with self._lock:
            self._spans[info.version] = starts
            while len(self._spans) > 64:
                self._spans.popitem(last=False)
        return starts

    def _plan(self, info: ObjectInfo, offset: int, end: int) -> "_Plan":
        refs = info.chunks
        starts = self._starts(info)
        plan = _Plan(refs, starts, max(0, bisect.bisect_right(starts, offset) - 1),
                     bisect.bisect_left(starts, end))
        plan.offset = offset
        plan.ahead = plan.hint_end = plan.last
        plan.stream = self._stream(info, offset, end) if self.enabled else None
        if plan.stream is not None:
            plan.ahead = min(len(refs), plan.last + self.window)
            plan.hint_end = min(len(refs), plan.last + 2 * self.window)
        return plan

    async def _chunk(self, plan: "_Plan", i: int, end: int, read: Fetch, context: str) -> bytes:
        """Chunk i of the plan: prefetch what follows it, then take or read it."""
        refs, stream = plan.refs, plan.stream
        self._active = time.monotonic()
        upto = min(plan.ahead, i + 1 + self.window)
        if self.enabled and (stream is None or upto - 1 > stream[1]):
            # (a stream asks only once per chunk, not on every small read)
            self.prefetch([refs[j] for j in range(i + 1, upto)], context)
            if stream is not None:
                stream[1] = upto - 1
            if self._hint is not None:
                self._give_hint([refs[j].id for j in range(
                    i + 1 + self.window, min(max(plan.ahead, plan.hint_end), i + 1 + 2 * self.window))
                    if not refs[j].hole])
        ref = refs[i]
        tail = end >= plan.starts[i] + ref.size  # this read reaches the chunk's end
        if tail and plan.offset <= plan.starts[i]:
            data = self.take(ref.id)  # the whole chunk in one read: nobody else wants it
        else:
            data = self._use(ref.id, tail)
        if data is None:
            self.counters["waited"] += 1
            data = await read(ref, context)
            if not tail:
                self._park(ref.id, data)  # the next requests want the rest of it
        return data

    async def chunks(self, info: ObjectInfo, offset: int, end: int, read: Fetch,
                     context: str) -> AsyncIterator[tuple[int, bytes]]:
        """(chunk start, plaintext) of every chunk overlapping [offset, end), in order.

        `read` is the tiered read (it finds a chunk this buffer is fetching
        in flight and waits for it rather than fetching it twice).
        """
        plan = self._plan(info, offset, end)
        for i in range(plan.first, plan.last):
            ref, start = plan.refs[i], plan.starts[i]
            if not ref.size:
                continue
            if ref.hole:  # zeros in bounded pieces, however large the hole
                pos, stop = max(offset, start), min(end, start + ref.size)
                while pos < stop:
                    n = min(HOLE_PIECE, stop - pos)
                    yield pos, bytes(n)
                    pos += n
                continue
            data = await self._chunk(plan, i, end, read, context)
            if ref.offset or len(data) != ref.size:  # a slice of the chunk
                data = memoryview(data)[ref.offset:ref.offset + ref.size]
            yield start, data

    async def read(self, info: ObjectInfo, offset: int, end: int, read: Fetch,
                   context: str, *, view: bool = False) -> bytes | memoryview:
        """Bytes [offset, end) as one object: `chunks` without the generator
        machinery, for the many small reads a mount makes (up to 1 MiB each).

        `view`: a range inside one chunk comes back as a view of that chunk's
        plaintext (fresh per fetch, never reused or written) instead of a copy;
        a mount's reads hand it straight to the kernel (about 10% of its CPU
        on a big sequential read was this copy)."""
        plan = self._plan(info, offset, end)
        pieces = []
        for i in range(plan.first, plan.last):
            ref = plan.refs[i]
            if not ref.size:
                continue
            start = plan.starts[i]
            lo, hi = max(offset, start) - start, min(end, start + ref.size) - start
            if ref.hole:
                pieces.append(memoryview(bytes(hi - lo)))
                continue
            data = await self._chunk(plan, i, end, read, context)
            pieces.append(memoryview(data)[ref.offset + lo:ref.offset + hi])
        if len(pieces) == 1:
            out: bytes | memoryview = pieces[0] if view else bytes(pieces[0])
        else:
            out = b"".join(pieces)
        del pieces
        return out

    def _give_hint(self, cids: list[bytes]) -> None:
        with self._lock:
            new = [c for c in cids if c not in self._hinted]
            for c in new:
                self._hinted[c] = None
            while len(self._hinted) > 1024:
                self._hinted.popitem(last=False)
        if new and self._hint is not None:
            self._hint(new)

    def _park(self, cid: bytes, data: bytes) -> None:
        """Keep a partly read chunk for the reader's next call (within the budget)."""
        with self._lock:
            if cid in self._ready or len(data) > self.budget:
                return
            self._make_room(len(data))
            if self._ready_bytes + self._inflight_bytes + len(data) <= self.budget:
                self._ready[cid] = data
                self._ready_bytes += len(data)
                self._seen.add(cid)

    def _make_room(self, size: int) -> None:
        """Evict from the front (chunks read to their end, then the oldest) until
        `size` more bytes fit the budget. Caller holds the lock."""
        while self._ready and self._ready_bytes + self._inflight_bytes + size > self.budget:
            cid, old = self._ready.popitem(last=False)
            self._ready_bytes -= len(old)
            if cid not in self._seen:
                self.counters["dropped"] += 1  # prefetched and never used
            self._seen.discard(cid)


class _Plan:
    """Which chunks a read covers, and how far its stream reads ahead."""

    __slots__ = ("refs", "starts", "first", "last", "ahead", "hint_end", "stream", "offset")

    def __init__(self, refs: tuple[ChunkRef, ...], starts: list[int], first: int, last: int) -> None:
        self.refs, self.starts, self.first, self.last = refs, starts, first, last
        self.offset = 0  # where the read starts
        self.ahead = self.hint_end = last
        self.stream: list[int] | None = None
