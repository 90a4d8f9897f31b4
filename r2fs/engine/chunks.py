"""The chunk data path: seal -> RS-encode -> shard files on nodes, and back.

This is the only module that combines keys, crypto, erasure, shards and nodes.
It knows nothing about buckets, objects or LMDB: the store passes in a chunk
id, a generation (bumped when a chunk is stored again after garbage
collection, so old and new shard files never share a name) and the placement
recorded in the chunk's metadata record.

Every method is synchronous, thread-safe and meant to be called through
`trio.to_thread.run_sync`. Shard files of one chunk are written and read
concurrently on a small shared I/O pool: an fsync waits on the disk, not the
CPU, so k+m of them in parallel cost about as much as one.
"""

from __future__ import annotations

import mmap
import os
import re
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import xxhash

from .crypto import (SEAL_OVERHEAD, open_chunk, open_chunk_into, seal_chunk, seal_chunk_into,
                     uninitialized)
from . import memory
from .erasure import Erasure
from .errors import ChunkCorrupt, DataUnavailable, UnsupportedFormat
from .keys import MasterKey
from .nodes import NodeStore, NodeUnavailable
from .shards import HEADER_SIZE, ShardInvalid, pack_header, pack_shard_parts, read_shard

Buffer = bytes | bytearray | memoryview

_SHARD_NAME = re.compile(r"^([0-9a-f]{64})\.(\d+)\.(\d+)$")
_IO_WORKERS = 16
#: Cold shard files are read with O_DIRECT (measured: ~30-40% less kernel CPU
#: than a buffered read of a cold file, and shards are not cached twice when
#: the L1 chunk cache holds the chunk anyway). Hot files are read buffered.
_DIRECT = True
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _io_pool() -> ThreadPoolExecutor:
    """One process-wide pool for shard I/O (threads are made lazily, at most _IO_WORKERS)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_IO_WORKERS, thread_name_prefix="r2fs-shard-io")
        return _pool


def _after_fork_in_child() -> None:
    """A forked child (a mount daemonising) gets no threads: start a fresh pool there.

    The parent's executor would count its dead workers as busy and never run
    a task; its locks may have been held by a thread that does not exist.
    """
    global _pool, _pool_lock, _buffers, _plain, _sent
    _pool = None
    _pool_lock = threading.Lock()
    _buffers = BufferPool()
    _plain = RecycledBuffers(uninitialized, 96 * 1024 * 1024)
    _sent = RecycledBuffers(_aligned, 32 * 1024 * 1024)


def _release(view: memoryview) -> None:
    """Hand a pooled buffer back, given a view of it (views of it must be dead after this)."""
    _buffers.put(view.obj)


def _release_all(views: dict[int, memoryview]) -> None:
    for view in views.values():
        _release(view)
    views.clear()


def _describe(context: str, chunk_id: bytes) -> str:
    where = f"{context}: " if context else ""
    return f"{where}chunk {chunk_id.hex()}"


#: Every buffer pool of the process (the shared ones here, L1's): see `_growing`.
_every_pool: "weakref.WeakSet[BufferPool | RecycledBuffers]" = weakref.WeakSet()
#: A pool that must allocate (its working set grows) first frees the buffers the
#: other pools have not handed out for this long, at most once per this long.
SWEEP_IDLE = 0.5
_last_sweep = 0.0


def _growing() -> None:
    """A pool is about to map a new buffer: give back what the others keep idle.

    Why: each pool is bounded and trimmed after TRIM_IDLE on its own, but a
    workload that changes phase (a big file read, then one written) has the
    new phase's buffers mapped on top of the old phase's, still kept: a
    mount's peak RSS was the sum of both working sets (168-189 MiB against
    the memory test's 180 MiB bound). Released here, the peak follows the
    larger of them. Cheap: only on a pool miss, once per SWEEP_IDLE.
    """
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < SWEEP_IDLE:
        return
    _last_sweep = now
    if sum(pool.trim(SWEEP_IDLE) for pool in list(_every_pool)):
        memory.release_free_heap()  # (plaintext buffers are bytearrays: glibc's heap)


class BufferPool:
    """Large scratch buffers reused across calls, for data that never leaves this module.

    Why: a 4 MiB bytearray freshly allocated per call costs ~1,000 page faults
    (glibc hands big blocks back to the kernel on free); measured on the
    reference VM, a chunk read went from ~830 to ~330 MB/s because of them.
    Shard file contents and sealed chunks are therefore read/decoded into
    pooled buffers; only the plaintext returned to the caller is fresh.
    Bounded: at most `max_bytes` are kept; the rest is freed normally. The
    shared pool keeps 96 MiB: a put's working set (6 chunks in flight, each a
    plaintext, a sealed chunk and k+m shard files) fits, so a steady put
    allocates nothing new (32 MiB made ~60% of those buffers fresh mappings).
    """

    MIN = 128 * 1024
    GRAIN = 64 * 1024
    #: Buffers of HUGE_MIN..HUGE bytes (a shard file of a 2-8 MiB chunk) are
    #: one private 2 MiB mapping backed by a transparent huge page. Why: an
    #: O_DIRECT transfer goes to the disk as a list of the buffer's physical
    #: pages, and the virtio disk takes at most 254 of them per request
    #: (/sys/block/vda/queue/max_segments): a 1 MiB shard plus its header in
    #: 4 KiB pages (257) is split into two requests, in one huge page it is
    #: one. Measured on the reference VM, 12 writers of such shard files
    #: (O_DIRECT + fdatasync): 198-271 MB/s from shared mappings (what
    #: `mmap(-1, n)` gives; shmem never gets huge pages here) against
    #: 327-492 MB/s from huge pages. The kernel places 2 MiB anonymous
    #: mappings on a 2 MiB boundary; where it does not, or has no THP, the
    #: buffer is ordinary pages and everything works as before.
    HUGE = 2 * 1024 * 1024
    HUGE_MIN = 512 * 1024

    def __init__(self, max_bytes: int = 96 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._free: list[mmap.mmap] = []
        self._freed_at: list[float] = []  # when each _free buffer was given back
        self._held = 0
        self._lock = threading.Lock()
        _every_pool.add(self)

    def get(self, size: int) -> bytearray | mmap.mmap:
        """A buffer of at least `size` bytes (contents undefined).

        Pooled buffers are anonymous mappings: page-aligned, as O_DIRECT reads need.
        """
        if size < self.MIN:
            return bytearray(size)
        with self._lock:
            best = -1
            for i, buf in enumerate(self._free):
                if size <= len(buf) <= 2 * size and (best < 0 or len(buf) < len(self._free[best])):
                    best = i
            if best >= 0:
                buf = self._free.pop(best)
                del self._freed_at[best]
                self._held -= len(buf)
                return buf
        _growing()
        return self._new(size)

    def _new(self, size: int) -> mmap.mmap:
        if not self.HUGE_MIN <= size <= self.HUGE:
            return mmap.mmap(-1, -(-size // self.GRAIN) * self.GRAIN)
        buf = mmap.mmap(-1, self.HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                buf.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass  # no transparent huge pages: ordinary pages, as before
        return buf

    def put(self, buf: object) -> None:
        """Give a buffer from `get` back; it must no longer be used by anyone."""
        if not isinstance(buf, mmap.mmap) or len(buf) < self.MIN:
            return
        with self._lock:
            if self._held + len(buf) <= self.max_bytes:
                self._free.append(buf)
                self._freed_at.append(time.monotonic())
                self._held += len(buf)
                return
        _close(buf)  # (unmapped now, not whenever the garbage collector gets to it)

    def trim(self, idle: float) -> int:
        """Unmap the kept buffers that were not reused for `idle` seconds.

        Why: the pool is sized for a big transfer's working set, and without
        this it kept that much resident for the rest of the process's life
        (a mount held ~170 MiB of such buffers after one 1 GiB read); now
        what it keeps follows the recent working set. Returns the bytes released.
        """
        old = time.monotonic() - idle
        with self._lock:
            gone = [b for b, t in zip(self._free, self._freed_at) if t <= old]
            if not gone:
                return 0
            keep = [(b, t) for b, t in zip(self._free, self._freed_at) if t > old]
            self._free = [b for b, _ in keep]
            self._freed_at = [t for _, t in keep]
            freed = sum(len(b) for b in gone)
            self._held -= freed
        for buf in gone:
            _close(buf)
        return freed


class RecycledBuffers:
    """Buffers that leave this module, reused once nothing references them any more.

    Why: the plaintext of a chunk read leaves the engine (read-ahead keeps it,
    a mount replies with views of it, a GET streams it), and so does a sealed
    chunk sent to a peer; neither can be given back explicitly like a
    `BufferPool` buffer. A fresh 4 MiB buffer per chunk costs ~1,000 page
    faults (zeroed pages, memcg charges): measured with `perf` on the
    reference VM, 13% of a mount daemon's CPU on L1 hits and 7% on cold reads.
    Instead every buffer handed out stays on a list, and one whose reference
    count shows that only that list holds it (no caller, no memoryview, no
    read-ahead slot: each of those holds a reference) is handed out again. A
    reference can only be gained from an existing one, so a buffer seen
    unreferenced under the GIL cannot be in use.

    `make(size)` creates a buffer of `size` bytes (a bytearray for plaintext:
    callers see the same type as before; a page-aligned mmap for O_DIRECT).
    Bounded: at most `max_bytes` are tracked; beyond that, buffers are plain
    fresh allocations that the garbage collector frees as before.
    """

    MIN = 256 * 1024

    def __init__(self, make: Callable[[int], Any], max_bytes: int) -> None:
        self._make = make
        self.max_bytes = max_bytes
        self._by_size: dict[int, list[Any]] = {}
        self._held = 0
        self._lock = threading.Lock()
        self._handed: dict[int, float] = {}  # id(buffer) -> when it was last handed out
        _every_pool.add(self)

    @staticmethod
    def _unused(bufs: list[Any]) -> Any:
        for buf in bufs:
            if sys.getrefcount(buf) <= _UNUSED_REFS:
                return buf
        return None

    def get(self, size: int) -> Any:
        """A buffer of exactly `size` bytes, contents undefined (to be overwritten)."""
        if size < self.MIN:
            return self._make(size)
        with self._lock:
            bufs = self._by_size.setdefault(size, [])
            buf = self._unused(bufs)
            if buf is not None:
                self._handed[id(buf)] = time.monotonic()
                return buf
            tracked = self._held + size <= self.max_bytes
            if tracked:
                self._held += size  # (reserved: a racing get stays within max_bytes)
        _growing()
        buf = self._make(size)
        if tracked:
            with self._lock:
                self._by_size.setdefault(size, []).append(buf)
                self._handed[id(buf)] = time.monotonic()
        return buf

    def trim(self, idle: float) -> int:
        """Forget (and free) the buffers nobody references that were not handed
        out for `idle` seconds; returns the bytes released (see BufferPool.trim)."""
        old = time.monotonic() - idle
        freed = 0
        with self._lock:
            for size, bufs in list(self._by_size.items()):
                keep = []
                for buf in bufs:
                    if sys.getrefcount(buf) <= _UNUSED_REFS and self._handed[id(buf)] <= old:
                        freed += size
                        del self._handed[id(buf)]
                        _close(buf)
                    else:
                        keep.append(buf)
                if keep:
                    self._by_size[size] = keep
                else:
                    del self._by_size[size]
            self._held -= freed
        return freed


def _close(buf: object) -> None:
    """Unmap a pooled mapping now (a bytearray is simply dropped by the caller)."""
    if isinstance(buf, mmap.mmap):
        try:
            buf.close()
        except BufferError:
            pass  # a view of it is still alive somewhere: the garbage collector frees it


def _calibrate() -> int:
    """The reference count `RecycledBuffers._unused` sees for a buffer only its list holds."""
    seen: list[int] = []
    bufs = [bytearray(1)]
    for buf in bufs:
        seen.append(sys.getrefcount(buf))
    return seen[0]


def _aligned(size: int) -> mmap.mmap:
    return mmap.mmap(-1, size)


_UNUSED_REFS = _calibrate()
_plain = RecycledBuffers(uninitialized, 96 * 1024 * 1024)
_sent = RecycledBuffers(_aligned, 32 * 1024 * 1024)


def plaintext_buffer(size: int) -> bytearray:
    """A bytearray for a chunk's plaintext that may leave the engine (see
    RecycledBuffers); completely overwrite it before anyone reads it."""
    return _plain.get(size)


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer (O_DIRECT reads) whose contents may leave the engine,
    e.g. a sealed chunk a peer is sent (see RecycledBuffers)."""
    return _sent.get(size)


_buffers = BufferPool()
os.register_at_fork(after_in_child=_after_fork_in_child)


def trim_idle(idle: float) -> int:
    """Release the shared pools' buffers if they were not used for `idle` seconds
    (a long-running process calls this now and then); returns the bytes released."""
    return _buffers.trim(idle) + _plain.trim(idle) + _sent.trim(idle)


def borrow(size: int) -> memoryview:
    """A scratch view of exactly `size` bytes from the shared pool (contents undefined);
    hand it back with `give_back` once nobody uses it (for a put's joined plaintext:
    a fresh 4 MiB `bytes` per chunk cost ~1,000 page faults each, measured as most of
    a put's 286,000 minor faults per GiB)."""
    return memoryview(_buffers.get(size))[:size]


def give_back(piece: object) -> None:
    """Return a view from `borrow` to the pool; anything else is left to the GC."""
    if isinstance(piece, memoryview):
        _release(piece)


class ChunkStore:
    def __init__(self, master: MasterKey, nodes: Mapping[str, NodeStore], k: int, m: int,
                 stripe_size: int = 256 * 1024) -> None:
        self.master = master
        self.nodes = nodes
        self.k, self.m = k, m
        self.erasure = Erasure(k, m, stripe_size)
        self.stripe_size = stripe_size
        #: Called as on_damage(chunk id, problems) after a read that succeeded by
        #: decoding around bad or missing shards (heal on read: the store queues
        #: the chunk's repair). Must be cheap and never raise.
        self.on_damage: Callable[[bytes, list[str]], None] | None = None
        #: Called with a node id this store does not know (a node added since the
        #: process started): the node, after re-reading the cluster's node list, or None.
        self.resolve_node: Callable[[str], NodeStore | None] | None = None

    # --- crypto --------------------------------------------------------------------

    def seal(self, chunk_id: bytes, plaintext: Buffer) -> bytearray:
        return seal_chunk(self.master, chunk_id, plaintext)

    def unseal(self, chunk_id: bytes, sealed: Buffer) -> bytearray:
        if len(sealed) < SEAL_OVERHEAD:
            return open_chunk(self.master, chunk_id, sealed)  # (its error message)
        plaintext = plaintext_buffer(len(sealed) - SEAL_OVERHEAD)
        open_chunk_into(self.master, chunk_id, sealed, plaintext)
        return plaintext

    # --- names -----------------------------------------------------------------------

    def shard_names(self, chunk_id: bytes, gen: int) -> list[str]:
        h = chunk_id.hex()
        base = f"shards/{h[:2]}/{h[2:4]}/{h}.{gen}."
        return [f"{base}{i}" for i in range(self.k + self.m)]

    @staticmethod
    def parse_shard_name(name: str) -> tuple[bytes, int, int] | None:
        """(chunk id, gen, index) of a shard file name (bare or node-relative), else None.

        Temp files and anything unexpected give None, so an orphan scan can
        treat "not a shard name" and "shard of no known chunk" alike.
        """
        parts = name.split("/")
        match = _SHARD_NAME.match(parts[-1])
        if match is None:
            return None
        h = match.group(1)
        if len(parts) > 1 and parts[-4:-1] != ["shards", h[:2], h[2:4]]:
            return None
        return bytes.fromhex(h), int(match.group(2)), int(match.group(3))

    # --- write -----------------------------------------------------------------------

    def node(self, node_id: str) -> NodeStore | None:
        """The node of that id, also one added after this process started; None if unknown."""
        node = self.nodes.get(node_id)
        if node is None and node_id and self.resolve_node is not None:
            node = self.resolve_node(node_id)
        return node

    def _node(self, node_id: str) -> NodeStore:
        node = self.node(node_id)
        if node is None:
            raise NodeUnavailable(f"node {node_id} is not part of this cluster")
        return node

    def seal_and_write(self, chunk_id: bytes, gen: int, plaintext: Buffer,
                       placement: Sequence[str], *,
                       sync_later: list[str] | None = None) -> tuple[int, int]:
        """seal + write_shards without a fresh buffer for the sealed chunk.

        Returns (sealed length, stored bytes). Preferred over the two calls
        on the put path: the sealed chunk lives in a reused buffer, handed
        back as soon as it is encoded (the shard files are written from their
        own buffers), so a chunk waiting on its fsyncs holds no sealed copy.
        """
        sealed_len = len(plaintext) + SEAL_OVERHEAD
        buf: Any = _buffers.get(sealed_len)
        try:
            sealed = memoryview(buf)[:sealed_len]
            seal_chunk_into(self.master, chunk_id, plaintext, sealed)
            files, direct = self._encode_shards(chunk_id, sealed)
            del sealed
            if direct is not None:  # the shard files no longer refer to `sealed`
                _buffers.put(buf)
                buf = None
            stored = self._write_shard_files(chunk_id, gen, placement, files, direct, sync_later)
        finally:
            if buf is not None:
                _buffers.put(buf)
        return sealed_len, stored

    def write_shards(self, chunk_id: bytes, gen: int, sealed: Buffer,
                     placement: Sequence[str], *, sync_later: list[str] | None = None) -> int:
        """RS-encode a sealed chunk and durably write shard i on node placement[i].

        All k+m shards must land, otherwise the ones written are removed and
        NodeUnavailable is raised: a chunk is never recorded with less
        redundancy than the cluster promises. Returns the bytes stored.
        `sync_later`: see `NodeStore.write_parts` (the shards' names become
        durable with the caller's `nodes.sync_dirs`).
        """
        files, direct = self._encode_shards(chunk_id, sealed)
        return self._write_shard_files(chunk_id, gen, placement, files, direct, sync_later)

    def _encode_shards(self, chunk_id: bytes, sealed: Buffer
                       ) -> tuple[list[list[Buffer]], list[tuple[Buffer, int]] | None]:
        """(per shard file, the buffers it is written from; the pooled buffers of
        the direct encoder, to hand back, or None when the files may be views of `sealed`)."""
        # Preferred: fragments encoded straight into one page-aligned buffer per
        # shard file, header in front, written from there (erasure.DirectEncoder).
        direct = self.erasure.encode_into(sealed, _buffers.get, HEADER_SIZE)
        files: list[list[Buffer]]
        if direct is not None:
            files = []
            for i, (buf, payload_len) in enumerate(direct):
                view = memoryview(buf)[:HEADER_SIZE + payload_len]
                digest = xxhash.xxh3_128_digest(view[HEADER_SIZE:])
                view[:HEADER_SIZE] = pack_header(chunk_id, i, self.k, self.m, self.stripe_size,
                                                 payload_len, digest, self.erasure.codec)
                files.append([view])
        else:
            parts = self.erasure.encode_parts(sealed)
            files = [pack_shard_parts(chunk_id, i, self.k, self.m, self.stripe_size, parts[i],
                                      self.erasure.codec) for i in range(self.k + self.m)]
        return files, direct

    def _write_shard_files(self, chunk_id: bytes, gen: int, placement: Sequence[str],
                           files: list[list[Buffer]], direct: list[tuple[Buffer, int]] | None,
                           sync_later: list[str] | None) -> int:
        """Write shard file i on node placement[i] (see write_shards); hands `direct` back."""
        n = self.k + self.m
        try:
            if len(placement) != n:
                raise ValueError(f"placement has {len(placement)} nodes, need {n}")
            nodes = [self._node(nid) for nid in placement]
            names = self.shard_names(chunk_id, gen)
            # In parallel on the I/O pool, although the hand-offs cost CPU (a put on
            # tmpfs, CPU-bound, was 20-40% faster writing them one after another in
            # this thread): on the VM's disk (write-back cache: every fdatasync is a
            # flush) k+m fsyncs in flight per chunk measured 10-20% more put MB/s
            # than one at a time per chunk -- concurrent flushes are merged.
            pool = _io_pool()
            futures = [pool.submit(nodes[i].write_parts, names[i], files[i], scratch=_buffers,
                                   sync_later=sync_later) for i in range(n)]
            errors = []
            for i, fut in enumerate(futures):
                try:
                    fut.result()
                except (OSError, NodeUnavailable) as e:
                    errors.append(f"{placement[i]}: {getattr(e, 'strerror', None) or e}")
            stored = sum(len(p) for f in files for p in f)
        finally:
            if direct is not None:
                files.clear()
                for buf, _ in direct:
                    _buffers.put(buf)
        if errors:
            for i in range(n):
                try:
                    nodes[i].delete(names[i])
                except (OSError, NodeUnavailable):
                    pass  # what stays behind is an orphan for gc's scan
            raise NodeUnavailable(
                f"chunk {chunk_id.hex()}: could not store shards ({'; '.join(errors)})")
        return stored

    # --- read ------------------------------------------------------------------------

    def _fetch(self, chunk_id: bytes, name: str, index: int, node_id: str,
               only_if_cached: bool = False, direct: bool = False) -> memoryview | None:
        """One verified shard payload (a view into a pooled buffer; see _release).

        only_if_cached: None if the file is not in the page cache (nothing read).
        """
        node = self.node(node_id)
        if node is None:
            raise NodeUnavailable(f"unknown node {node_id}")
        blob = node.read_into(name, _buffers.get, only_if_cached=only_if_cached, direct=direct)
        if blob is None:
            return None
        try:
            header, payload = read_shard(blob, expect_chunk_id=chunk_id, expect_index=index)
            if (header.k, header.m, header.codec, header.stripe_size) != (
                    self.k, self.m, self.erasure.codec, self.stripe_size):
                raise ShardInvalid(
                    f"shard coded as RS({header.k},{header.m}) codec {header.codec} stripe "
                    f"{header.stripe_size}, cluster uses RS({self.k},{self.m}) codec "
                    f"{self.erasure.codec} stripe {self.stripe_size}")
        except BaseException:
            _release(blob)
            raise
        return payload

    def _gather(self, chunk_id: bytes, gen: int, placement: Sequence[str],
                context: str, *, notify: bool = True) -> dict[int, memoryview]:
        """At least k verified shard payloads (data shards first, read in parallel).

        Parity shards are read only when a data shard is missing or fails its
        checksum. Fewer than k good shards -> DataUnavailable naming `context`.
        The caller must `_release` every returned view. With `notify`, a read
        that succeeded around bad shards is reported to `on_damage`.
        """
        n = self.k + self.m
        if len(placement) != n:
            raise ValueError(f"placement has {len(placement)} nodes, need {n}")
        names = self.shard_names(chunk_id, gen)
        pool = _io_pool()
        good: dict[int, memoryview] = {}
        problems: list[str] = []
        unsupported: list[str] = []

        def collect(indices: range) -> None:
            # Hot shards (in the page cache) are read right here: a hop to another
            # thread costs more than the copy. Once one shard turns out cold, the
            # others go to the I/O pool at once (O_DIRECT), so the disk sees them
            # all together, and this thread reads the first cold one itself.
            cold: list[int] = []
            for i in indices:
                if cold:
                    cold.append(i)
                    continue
                try:
                    view = self._fetch(chunk_id, names[i], i, placement[i], True)
                except Exception as e:  # noqa: BLE001 -- classified by note()
                    note(i, e)
                    continue
                if view is None:
                    cold.append(i)
                else:
                    good[i] = view
            if not cold:
                return
            futures = {i: pool.submit(self._fetch, chunk_id, names[i], i, placement[i],
                                      False, _DIRECT) for i in cold[1:]}
            for i in cold:
                try:
                    view = (futures[i].result() if i in futures else
                            self._fetch(chunk_id, names[i], i, placement[i], False, _DIRECT))
                except Exception as e:  # noqa: BLE001
                    note(i, e)
                    continue
                if view is not None:  # never None without only_if_cached
                    good[i] = view

        def note(i: int, error: Exception) -> None:
            """Record why shard i is unusable; re-raise what is not about the shard."""
            where = f"shard {i} on {placement[i]}"
            if isinstance(error, FileNotFoundError):
                problems.append(f"{where}: missing")
            elif isinstance(error, UnsupportedFormat):
                unsupported.append(str(error))
                problems.append(f"{where}: {error}")
            elif isinstance(error, (ShardInvalid, NodeUnavailable)):
                problems.append(f"{where}: {error}")
            elif isinstance(error, OSError):
                problems.append(f"{where}: {error.strerror or error}")
            else:
                raise error

        try:
            collect(range(self.k))
            if len(good) < self.k and self.m:
                collect(range(self.k, n))
        except BaseException:
            _release_all(good)
            raise
        if len(good) < self.k:
            count = len(good)
            _release_all(good)
            what = _describe(context, chunk_id)
            if unsupported and count + len(unsupported) >= self.k:
                raise UnsupportedFormat(f"{what}: {unsupported[0]}")
            raise DataUnavailable(
                f"{what} is unreadable: {count} good shards of {self.k} needed "
                f"({'; '.join(problems)})")
        if problems and notify and self.on_damage is not None:
            self.on_damage(chunk_id, problems)
        return good

    def _decode(self, chunk_id: bytes, good: dict[int, memoryview], sealed_len: int,
                out: bytearray | memoryview | None, context: str) -> bytearray | memoryview:
        try:
            return self.erasure.decode(good, sealed_len, out=out)
        except DataUnavailable as e:
            raise DataUnavailable(f"{_describe(context, chunk_id)} is unreadable: {e}") from None
        finally:
            _release_all(good)

    def read_sealed(self, chunk_id: bytes, gen: int, placement: Sequence[str], sealed_len: int,
                    *, context: str = "") -> bytearray | memoryview:
        """The sealed chunk (a fresh buffer) from any k good shards."""
        good = self._gather(chunk_id, gen, placement, context)
        return self._decode(chunk_id, good, sealed_len, None, context)

    def read(self, chunk_id: bytes, gen: int, placement: Sequence[str], sealed_len: int,
             *, context: str = "", into: memoryview | None = None,
             on_sealed: Callable[[memoryview], None] | None = None) -> bytearray:
        """The authenticated plaintext of a chunk; never unauthenticated bytes.

        The sealed chunk is decoded into `into` (exactly `sealed_len` bytes:
        a chunk cache's frame, written out from there) or a pooled buffer;
        the returned plaintext is a recycled buffer (see RecycledBuffers).
        `on_sealed`, if given, is called with the sealed chunk once it has
        authenticated (to fill a chunk cache without a second 4 MiB buffer);
        the view is valid only during the call.
        """
        if sealed_len < SEAL_OVERHEAD:
            raise ChunkCorrupt(f"{_describe(context, chunk_id)}: recorded sealed length "
                               f"{sealed_len} is impossible")
        if into is not None and len(into) != sealed_len:
            raise ValueError(f"decode buffer is {len(into)} bytes, need {sealed_len}")
        good = self._gather(chunk_id, gen, placement, context)
        buf = _buffers.get(sealed_len) if into is None else None
        try:
            sealed = memoryview(buf)[:sealed_len] if into is None else into
            self._decode(chunk_id, good, sealed_len, sealed, context)
            plaintext = plaintext_buffer(sealed_len - SEAL_OVERHEAD)
            try:
                open_chunk_into(self.master, chunk_id, sealed, plaintext)
                if on_sealed is not None:
                    on_sealed(sealed)
            except ChunkCorrupt as e:
                if not context:
                    raise
                raise ChunkCorrupt(f"{context}: {e}") from None
            finally:
                del sealed
        finally:
            if buf is not None:
                _buffers.put(buf)
        return plaintext

    # --- delete ------------------------------------------------------------------------

    def delete_shards(self, chunk_id: bytes, gen: int, placement: Sequence[str]) -> tuple[int, int]:
        """(files removed, bytes freed); missing files and unknown nodes are fine."""
        removed = freed = 0
        for name, node_id in zip(self.shard_names(chunk_id, gen), placement):
            node = self.node(node_id)
            if node is None:
                continue
            size = node.size_of(name)
            if size is not None and node.delete(name):
                removed += 1
                freed += size
        return removed, freed
