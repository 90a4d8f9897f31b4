"""L1: a bounded local-disk cache of SEALED chunks, one per mount/gateway process.

Why sealed: the cache disk may be a shared scratch disk; keeping chunks as the
nodes hold them (AES-256-GCM, chunk id in the AAD) means no plaintext ever
lands there, and opening an entry *is* its integrity check -- a corrupt,
truncated or swapped entry fails authentication, is dropped and the chunk is
fetched again. Chunks are immutable and content-addressed, so an entry is
never stale and nothing ever needs invalidation.

Why segments: entries are appended to segment files (`seg-<n>`, up to
`segment_size` each) instead of one file per chunk. Measured on the reference
VM with a cold page cache, 4 MiB files read one after another ran at ~200
MiB/s and at most ~550 MiB/s with many in flight, while one file read in
order streams at the disk's ~0.9-1.7 GB/s: chunks cached in the order a
reader read them sit in order in one file, so a re-read streams too.

Eviction is 2Q over segments: new chunks go to the current probation
segment; the first hit promotes its whole segment to the main queue (LRU);
chunks of an evicted probation segment are remembered by id (`ghosts`), and
a ghost that comes back goes straight to a main segment. When space is
needed, probation gives it up first once it holds more than its share
(`PROBATION_SHARE`), so one big sequential scan cycles through probation
instead of flushing the hot set. Whole segments are evicted (an unlink).

The byte bound holds at all times: space is reserved under the lock
(evicting first) before an entry is written; a segment with a write in
flight is never evicted. Every entry has a header (magic, chunk id, length),
so the index is rebuilt at start by reading the headers -- a restarted
process keeps a warm cache, and an entry torn by a crash is cut off. The
queue labels and ghosts are saved in `state.json`. One directory belongs to
one process at a time (`flock` on a slot); a second process on the same root
takes the next slot.

Why direct I/O on a miss of the page cache: an entry is read with a
buffered `preadv2(RWF_NOWAIT)` first (served if the page cache holds it: a
hot entry costs no disk read) and what is not cached with O_DIRECT into a
page-aligned pooled buffer. Measured on the reference VM, reading 1 GiB of
cold segments cost ~0.5 CPU-s buffered and ~0.13 CPU-s direct; a cold L1
hit is CPU-bound on 2 cores (AES-GCM + FUSE), and the page cache would only
hold a second copy of what the mount's page cache already holds as plaintext.
Concurrency (read-ahead keeps several entries in flight) replaces the
kernel's read-ahead that direct reads give up. Entries are read into
buffers backed by transparent huge pages (`_ReadBuffer`): one disk request
per entry instead of five, 3x the direct-read throughput on the reference VM. Filesystems without O_DIRECT
(tmpfs) are read buffered, as before.

Every method is synchronous and thread-safe (call it via trio.to_thread).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import mmap
import os
import secrets
import struct
import threading
from collections import OrderedDict
from typing import Callable

from .chunks import BufferPool, RecycledBuffers, plaintext_buffer
from .crypto import SEAL_OVERHEAD
from .errors import ChunkCorrupt, R2fsError

Buffer = bytes | bytearray | memoryview

FORMAT = 1
#: Fraction of the capacity probation may keep once the cache is full.
PROBATION_SHARE = 0.25
#: Entries start on block boundaries; an entry costs header + data rounded up.
BLOCK = 4096
DEFAULT_MAX = 2 * 1024 ** 3
MIN_FREE_FRACTION = 0.10
MAX_SLOTS = 64
SEGMENT_MAX = 64 * 1024 * 1024
SEGMENT_MIN = 1024 * 1024
_HEADER = struct.Struct("<4sB3x32sQ")  # magic, format, chunk id, sealed length
MAGIC = b"R2L1"
SEG_PREFIX = "seg-"
#: A reader going through a segment in order has the kernel read this far ahead
#: (buffered reads only; direct reads rely on the caller's concurrency).
SEQUENTIAL_AHEAD = 16 * 1024 * 1024
#: Fills waiting for the background writers at most (each holds a buffer of its
#: entry: 12 held 48 MiB during a cold read; the writers keep up with 4).
FILL_QUEUE = 4
#: Background writer threads (a fill that finds the queue full is written by its caller).
FILL_WRITERS = 3
#: A read of an entry being written waits this long for it at most (then: a miss).
FILL_WAIT = 30.0
_NOWAIT = getattr(os, "RWF_NOWAIT", None)
_O_DIRECT = getattr(os, "O_DIRECT", 0)

#: open_into(chunk id, sealed, out): authenticate + decrypt into `out` (ChunkCorrupt on failure)
OpenInto = Callable[[bytes, Buffer, Buffer], None]


class CacheError(R2fsError):
    """The cache directory cannot be used (not writable, all slots taken)."""


#: Transparent huge page size (x86-64, arm64 with 4 KiB pages).
HUGE = 2 * 1024 * 1024
#: Bytes of read buffers kept for reuse (several entries in flight, plus peers' answers).
READ_BUFFERS = 64 * 1024 * 1024


class _ReadBuffer(mmap.mmap):
    """A private anonymous mapping whose window [start, start + size) an entry is
    read into with O_DIRECT; the window's blocks after the first lie in
    transparent huge pages (where the kernel allows them).

    Why: a direct read goes to the disk as a scatter list of the buffer's
    physical pages, and the virtio disk takes at most 254 segments per
    request (`/sys/block/vda/queue/max_segments`): a 4 MiB entry read into
    4 KiB pages is split into five requests, into two huge pages it is one.
    Measured on the reference VM, 8 concurrent 4 MiB O_DIRECT reads of L1
    segments: 490-680 MB/s into 4 KiB pages (shared or private mappings),
    1,960-2,250 MB/s into huge pages, at less than half the CPU. (The
    shared mappings `mmap(-1, n)` gives are shmem: never huge here.)
    The first block (the entry header, and the start of the sealed bytes)
    sits in the small page just below the first huge page, so a 4 MiB
    chunk's entry (4 MiB + one block) takes two huge pages, not three.
    """

    start: int
    size: int


def _read_buffer(size: int) -> _ReadBuffer:
    buf = _ReadBuffer(-1, size + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    first_huge = -(-(base + BLOCK) // HUGE) * HUGE
    buf.start, buf.size = first_huge - BLOCK - base, size
    huge_bytes = (size - BLOCK) // HUGE * HUGE
    if huge_bytes and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buf.madvise(mmap.MADV_HUGEPAGE, buf.start + BLOCK, huge_bytes)
        except OSError:
            pass  # no transparent huge pages here: 4 KiB pages, as before
    return buf


def _window(buf: _ReadBuffer) -> memoryview:
    """The block-aligned window of a read buffer (a view: it keeps `buf` in use)."""
    return memoryview(buf)[buf.start:buf.start + buf.size]


def _cost(size: int) -> int:
    return -(-(size + _HEADER.size) // BLOCK) * BLOCK


def default_capacity(root: str, *, max_bytes: int = DEFAULT_MAX) -> int:
    """At most `max_bytes`, and never so much that the disk would drop below 10% free.

    What the cache already holds counts as available (it would be reused).
    """
    probe = root
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "/"
    st = os.statvfs(probe)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    held = _du(root) if os.path.isdir(root) else 0
    return max(0, min(max_bytes, free + held - int(total * MIN_FREE_FRACTION)))


def _du(path: str) -> int:
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(base, f)).st_blocks * 512
            except OSError:
                pass
    return total


class _Segment:
    __slots__ = ("seq", "path", "main", "end", "entries", "pending", "next_read")

    def __init__(self, seq: int, path: str, main: bool) -> None:
        self.seq = seq
        self.path = path
        self.main = main
        self.end = 0  # bytes allocated (reserved or written)
        self.entries: dict[bytes, tuple[int, int]] = {}  # live: cid -> (offset, sealed size)
        self.pending = 0  # writes in flight
        self.next_read = -1  # where a sequential reader of this segment reads next


class DiskCache:
    """A 2Q cache of sealed chunks in segment files under `<root>/slot<N>/`."""

    def __init__(self, root: str, capacity: int, open_into: OpenInto,
                 segment_size: int | None = None) -> None:
        self.root = os.path.abspath(root)
        self.capacity = max(0, int(capacity))
        self.segment_size = segment_size or max(SEGMENT_MIN, min(SEGMENT_MAX, self.capacity // 16))
        self._open_into = open_into
        self._lock = threading.Lock()
        self._index: dict[bytes, tuple[_Segment, int, int]] = {}
        self._probation: OrderedDict[int, _Segment] = OrderedDict()  # oldest first
        self._main: OrderedDict[int, _Segment] = OrderedDict()  # least recently used first
        self._current: dict[bool, _Segment | None] = {False: None, True: None}
        self._ghost: OrderedDict[bytes, None] = OrderedDict()
        self._writing: set[bytes] = set()
        #: fills handed to the background writer, not yet on disk: cid -> done
        self._fills: dict[bytes, threading.Event] = {}
        self._fill_queue: list[tuple[bytes, _Segment, int, int, mmap.mmap]] = []
        self._fill_cond = threading.Condition(self._lock)
        self._fill_threads: list[threading.Thread] = []
        self._closing = False
        #: entries authenticated since this process opened the cache (written by
        #: it, or read and verified): served to peers without opening them again
        self._trusted: set[bytes] = set()
        self._next_seq = 1
        self.used = 0
        self._probation_bytes = 0
        self._dirty = False
        self._buffers = BufferPool(64 * 1024 * 1024)
        #: what entries are read into (recycled once no view of them is left)
        self._read_buffers = RecycledBuffers(_read_buffer, READ_BUFFERS)
        #: O_DIRECT reads work here (turned off at the first EINVAL: tmpfs and the like)
        self._direct = bool(_O_DIRECT) and _NOWAIT is not None
        self.counters = {"evictions": 0, "evicted_bytes": 0, "evicted_chunks": 0, "corrupt": 0,
                         "write_errors": 0, "fills": 0, "fill_bytes": 0, "direct_reads": 0,
                         "background_fills": 0, "skipped_fills": 0}
        self.dir, self._lock_fd = self._take_slot()
        self._load()

    # --- directory, state, start-up ----------------------------------------------------

    def _take_slot(self) -> tuple[str, int]:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cache directory {self.root}: {e.strerror}") from None
        for n in range(MAX_SLOTS):
            d = os.path.join(self.root, f"slot{n}")
            try:
                os.makedirs(d, exist_ok=True)
                fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise CacheError(f"cache directory {d}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # another process uses this slot
                raise CacheError(f"cache directory {d}: {e.strerror}") from None
            return d, fd
        raise CacheError(f"cache directory {self.root}: all {MAX_SLOTS} slots are in use")

    def _state_path(self) -> str:
        return os.path.join(self.dir, "state.json")

    def _load(self) -> None:
        """Rebuild the index from the segments' entry headers, the queues from state.json."""
        try:
            with open(self._state_path(), encoding="utf-8") as f:
                state = json.load(f)
            if state.get("format") != FORMAT:
                state = {}
        except (OSError, ValueError):
            state = {}
        main_order = [s for s in state.get("main", []) if isinstance(s, int)]
        segments: dict[int, _Segment] = {}
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.endswith(".tmp"):
                _unlink(path)
                continue
            if not name.startswith(SEG_PREFIX):
                continue
            try:
                seq = int(name[len(SEG_PREFIX):])
            except ValueError:
                continue
            segments[seq] = _Segment(seq, path, seq in main_order)
        for seq in sorted(segments):  # later copies of a chunk win
            self._scan(segments[seq])
        self._next_seq = max(segments, default=0) + 1
        for seq in main_order:
            if seq in segments:
                self._main[seq] = segments.pop(seq)
        for seq in sorted(segments):
            self._probation[seq] = segments[seq]
            self._probation_bytes += segments[seq].end
        self.used = sum(s.end for s in self._all())
        for h in state.get("ghost", [])[-self._ghost_limit():]:
            try:
                self._ghost[bytes.fromhex(h)] = None
            except (TypeError, ValueError):
                continue
        with self._lock:
            self._make_room(0)  # the capacity may have been lowered since

    def _scan(self, seg: _Segment) -> None:
        """Index a segment's entries; cut off a torn tail (a crash mid-append)."""
        try:
            fd = os.open(seg.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            off = 0
            while off + _HEADER.size <= size:
                magic, fmt, cid, length = _HEADER.unpack(os.pread(fd, _HEADER.size, off))
                if magic != MAGIC or fmt != FORMAT or off + _HEADER.size + length > size:
                    break
                old = self._index.get(cid)
                if old is not None:
                    old[0].entries.pop(cid, None)
                seg.entries[cid] = (off, length)
                self._index[cid] = (seg, off, length)
                off += _cost(length)
            if off < size:
                os.ftruncate(fd, off)
            seg.end = off
        finally:
            os.close(fd)

    def _all(self) -> list[_Segment]:
        return [*self._probation.values(), *self._main.values()]

    def save_index(self) -> None:
        """Persist the queue labels and ghosts (atomic replace); cheap when unchanged."""
        with self._lock:
            if not self._dirty:
                return
            state = {"format": FORMAT, "main": list(self._main),
                     "ghost": [c.hex() for c in self._ghost]}
            self._dirty = False
        tmp = f"{self._state_path()}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f)
            os.replace(tmp, self._state_path())
        except OSError:
            _unlink(tmp)
            self._dirty = True

    def close(self) -> None:
        self._stop_filler()
        self.save_index()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # --- space (callers hold the lock) ---------------------------------------------------

    def _ghost_limit(self) -> int:
        return max(1024, self.capacity // (64 * 1024))

    def _victim(self) -> _Segment | None:
        """The segment to evict next (2Q); never one with a write in flight."""
        prob = [s for s in self._probation.values() if not s.pending]
        main = [s for s in self._main.values() if not s.pending]
        over = self._probation_bytes > self.capacity * PROBATION_SHARE
        if prob and (not main or over):
            return prob[0]
        if over:
            # probation is over its share but all of it has writes in flight (a
            # scan's fills queued for the writer): skip this fill rather than
            # push out the hot set
            return None
        return main[0] if main else (prob[0] if prob else None)

    def _evict(self, seg: _Segment) -> None:
        if seg.main:
            del self._main[seg.seq]
        else:
            del self._probation[seg.seq]
            self._probation_bytes -= seg.end
            for cid in seg.entries:  # seen once, then pushed out: remember the id
                self._ghost[cid] = None
            while len(self._ghost) > self._ghost_limit():
                self._ghost.popitem(last=False)
        for cid in seg.entries:
            if self._index.get(cid, (None,))[0] is seg:
                del self._index[cid]
                self._trusted.discard(cid)
        if self._current[seg.main] is seg:
            self._current[seg.main] = None
        self.used -= seg.end
        _unlink(seg.path)
        self.counters["evictions"] += 1
        self.counters["evicted_bytes"] += seg.end
        self.counters["evicted_chunks"] += len(seg.entries)
        self._dirty = True

    def _make_room(self, need: int) -> bool:
        """Evict until `need` more bytes fit; False if they cannot."""
        if need > self.capacity:
            return False
        while self.used + need > self.capacity:
            victim = self._victim()
            if victim is None:
                return False
            self._evict(victim)
        return True

    def _reserve(self, cid: bytes, cost: int) -> tuple[_Segment, int] | None:
        main = cid in self._ghost  # pushed out of probation lately, and back: it is hot
        seg = self._current[main]
        if seg is not None and seg.end + cost > self.segment_size and seg.end > 0:
            seg = self._current[main] = None  # full: the next entry starts a new segment
        if not self._make_room(cost):
            return None
        seg = self._current[main]  # eviction may have removed it
        if seg is None:
            seq = self._next_seq
            self._next_seq += 1
            seg = _Segment(seq, os.path.join(self.dir, f"{SEG_PREFIX}{seq:012d}"), main)
            (self._main if main else self._probation)[seq] = seg
            self._current[main] = seg
        off = seg.end
        seg.end += cost
        seg.pending += 1
        self.used += cost
        if not seg.main:
            self._probation_bytes += cost
        self._ghost.pop(cid, None)
        return seg, off

    # --- public ----------------------------------------------------------------------------

    def __contains__(self, cid: bytes) -> bool:
        self._await_fill(cid)
        with self._lock:
            return cid in self._index

    def __len__(self) -> int:
        self.flush()
        with self._lock:
            return len(self._index)

    def flush(self) -> None:
        """Wait until every fill handed to the background writer is on disk."""
        with self._lock:
            waits = list(self._fills.values())
        for done in waits:
            done.wait(FILL_WAIT)

    def locate(self, cid: bytes) -> tuple[str, int, int] | None:
        """(segment file, offset of the sealed bytes, length) of an entry, for tools and tests."""
        self._await_fill(cid)
        with self._lock:
            hit = self._index.get(cid)
            return None if hit is None else (hit[0].path, hit[1] + _HEADER.size, hit[2])

    def _lookup(self, cid: bytes) -> tuple[_Segment, int, int] | None:
        """The entry (and count the access: promote / refresh its segment), or None."""
        with self._lock:
            hit = self._index.get(cid)
            if hit is None:
                return None
            seg = hit[0]
            if not seg.main:  # second access: the segment joins the main queue
                del self._probation[seg.seq]
                self._probation_bytes -= seg.end
                if self._current[False] is seg:
                    self._current[False] = None
                seg.main = True
                self._main[seg.seq] = seg
            else:
                self._main.move_to_end(seg.seq)
            self._dirty = True
            return hit

    @staticmethod
    def _follow(fd: int, seg: _Segment, off: int, size: int) -> None:
        """A read that continues where the last read of this segment ended is
        sequential: have the kernel read the next entries ahead (they were cached
        in this order, so they will be read in this order)."""
        end = off + _cost(size)
        # (read-ahead makes a sequential reader's reads arrive slightly out of order)
        if seg.next_read >= 0 and abs(off - seg.next_read) <= SEQUENTIAL_AHEAD // 2:
            try:
                os.posix_fadvise(fd, end, SEQUENTIAL_AHEAD, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
        seg.next_read = end

    def _read(self, cid: bytes, hit: tuple[_Segment, int, int], into: memoryview) -> int | None:
        """Read header + sealed bytes into `into` (the window of a `_ReadBuffer`:
        block-aligned, whole blocks); the sealed length, or None (dropped)."""
        seg, off, size = hit
        want = _HEADER.size + size
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._drop(cid, seg, corrupt=False)  # evicted meanwhile
            return None
        try:
            got = self._read_span(fd, seg, off, want, into, len(into) >= _cost(size))
        except OSError:
            got = 0
        finally:
            os.close(fd)
        if got < want or _HEADER.unpack(into[:_HEADER.size]) != (MAGIC, FORMAT, cid, size):
            self._drop(cid, seg, corrupt=True)
            return None
        return size

    def _read_span(self, fd: int, seg: _Segment, off: int, want: int, into: memoryview,
                   direct: bool) -> int:
        """Bytes [off, off+want) of the segment into `into`; returns bytes read.

        An entry whose last byte is in the page cache (a non-blocking probe) is
        read buffered: it was written or read lately, a hot one costs no disk
        read. Otherwise with O_DIRECT (see the module docstring). Buffered
        wherever direct reads cannot be used.
        """
        got = 0
        if direct and self._direct and not self._cached(fd, off + want - 1, into[want - 1:want]):
            span = -(-want // BLOCK) * BLOCK  # whole blocks, as O_DIRECT reads them
            got = self._read_direct(seg.path, off, want, into[:span])
            if got >= want:
                self.counters["direct_reads"] += 1  # (a race on a statistic is harmless)
                return got
        if not self._direct:
            self._follow(fd, seg, off, want - _HEADER.size)
        while got < want:
            n = os.preadv(fd, [into[got:want]], off + got)
            if n == 0:
                break
            got += n
        return got

    @staticmethod
    def _cached(fd: int, pos: int, probe: memoryview) -> bool:
        """Whether the byte at `pos` is in the page cache, without waiting for a
        disk read (FADV_RANDOM: a miss makes the kernel read one page, not a
        read-ahead window)."""
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            return os.preadv(fd, [probe], pos, _NOWAIT) > 0
        except BlockingIOError:
            return False
        except OSError:
            return True  # no probe here: read buffered

    def _read_direct(self, path: str, off: int, want: int, into: memoryview) -> int:
        """Up to `want` bytes at the block-aligned `off` with O_DIRECT into the
        block-sized, aligned `into`; 0 if direct I/O is not possible here."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _O_DIRECT)
        except OSError as e:
            if e.errno == errno.EINVAL:
                self._direct = False
            return 0
        try:
            got = 0
            while got < want:
                try:
                    n = os.preadv(fd, [into[got:]], off + got)
                except OSError as e:
                    if e.errno == errno.EINVAL:
                        self._direct = False
                    return 0 if got % BLOCK else got
                if n <= 0:
                    break
                got += n
                if n % BLOCK:
                    break  # the end of the file
            return min(got, want)
        finally:
            os.close(fd)

    def _verified(self, cid: bytes, seg: _Segment, sealed: Buffer, out: Buffer | None) -> bool:
        """Authenticate (and decrypt into `out`, or a scratch buffer); False (dropped) if not."""
        scratch = None
        try:
            if len(sealed) < SEAL_OVERHEAD:
                raise ChunkCorrupt(f"cache entry {cid.hex()} is too short")
            if out is None:
                scratch = self._buffers.get(len(sealed) - SEAL_OVERHEAD)
                out = memoryview(scratch)[:len(sealed) - SEAL_OVERHEAD]
            self._open_into(cid, sealed, out)
            with self._lock:
                if cid in self._index:
                    self._trusted.add(cid)
            return True
        except ChunkCorrupt:
            self._drop(cid, seg, corrupt=True)
            return False
        finally:
            out = None
            if scratch is not None:
                self._buffers.put(scratch)

    def get(self, cid: bytes) -> bytearray | None:
        """The authenticated plaintext of a cached chunk, or None (miss).

        An entry that fails authentication (bit rot, truncation, tampering) is
        dropped and reported as a miss: the caller fetches the chunk again.
        """
        self._await_fill(cid)
        hit = self._lookup(cid)
        if hit is None:
            return None
        view = _window(self._read_buffers.get(_cost(hit[2])))  # reused once the view is gone
        try:
            size = self._read(cid, hit, view)
            if size is None:
                return None
            plaintext = plaintext_buffer(max(0, size - SEAL_OVERHEAD))  # the cipher fills it
            ok = self._verified(cid, hit[0], view[_HEADER.size:_HEADER.size + size], plaintext)
            return plaintext if ok else None
        finally:
            del view  # (the buffer is reused once no view of it is left)

    def get_sealed(self, cid: bytes) -> memoryview | None:
        """The sealed chunk as stored, for a peer; or None.

        Read like `get` (page cache or O_DIRECT) into a recycled read
        buffer, and handed out as a view of it (no copy: the buffer is reused
        once the view is gone). An entry not authenticated since this process
        opened the cache is authenticated first (a damaged one is dropped, not
        passed on); one that was is sent as it is -- the receiving peer
        authenticates every chunk before use anyway, and opening it twice for
        every transfer was a third of the CPU an L2 hit costs.
        """
        self._await_fill(cid)
        hit = self._lookup(cid)
        if hit is None:
            return None
        seg, size = hit[0], hit[2]
        view = _window(self._read_buffers.get(_cost(size)))
        if self._read(cid, hit, view) is None:
            return None
        sealed = view[_HEADER.size:_HEADER.size + size]
        del view
        with self._lock:
            trusted = cid in self._trusted
        if trusted:
            return sealed  # the peer authenticates it before any use
        return sealed if self._verified(cid, seg, sealed, None) else None

    def _drop(self, cid: bytes, seg: _Segment, *, corrupt: bool) -> None:
        with self._lock:
            if self._index.get(cid, (None,))[0] is seg:
                del self._index[cid]
                self._trusted.discard(cid)
            seg.entries.pop(cid, None)
            if corrupt:
                self.counters["corrupt"] += 1

    @property
    def takes_hints(self) -> bool:
        """Whether `advise` does anything (entries are read buffered here)."""
        return not self._direct

    def advise(self, cids: list[bytes]) -> None:
        """Ask the kernel to start reading these entries (they are about to be read).

        Only where entries are read buffered: direct reads would not use it.
        """
        if self._direct:
            return
        with self._lock:
            spots = [(h[0].path, h[1], _HEADER.size + h[2]) for h in map(self._index.get, cids) if h]
        for path, off, length in spots:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, off, length, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def frame(self, size: int) -> memoryview:
        """A buffer of `size` bytes to decode or receive a sealed chunk into, so
        that `put(..., framed=True)` hands it to the background writer without
        copying it (it sits behind room for the entry header in a pooled
        buffer). Hand it to `put` or `release`; never use it afterwards."""
        buf = self._buffers.get(_HEADER.size + size)
        return memoryview(buf)[_HEADER.size:_HEADER.size + size]

    def release(self, frame: memoryview) -> None:
        """Give back a `frame` that will not be `put`."""
        self._buffers.put(frame.obj)

    def put(self, cid: bytes, sealed: Buffer, *, framed: bool = False) -> bool:
        """Store an already AUTHENTICATED sealed chunk; False if it was not cached.

        `framed`: `sealed` is a view from `frame()`; the cache takes it over.

        A full disk or an entry bigger than the whole cache is not an error: the
        read that fetched the chunk has its data either way.

        The entry (header + sealed bytes, in one buffer) is written by a
        background thread and the caller goes on at once: a buffered write of
        4 MiB (copy into the page cache, page allocation, ext4 delayed
        allocation) was 18% of a mount daemon's CPU on a cold read (`perf`,
        reference VM), time the read waited. At most FILL_QUEUE entries wait;
        beyond that, the caller writes its fill itself, as before. Why not
        O_DIRECT: measured on the reference VM, direct fills cost far less CPU
        (0.13 vs ~1-2 CPU-s/GiB) but compete with the shard reads for the
        disk at once, where buffered ones are written back after the read:
        a cold read through a mount ran at 209-254 MB/s with direct fills
        (background) and 311-407 MB/s with buffered ones.
        """
        size = len(sealed)
        cost = _cost(size)
        given = sealed.obj if framed and isinstance(sealed, memoryview) else None
        with self._lock:
            spot = None
            if cid not in self._index and cid not in self._writing:
                spot = self._reserve(cid, cost)
            if spot is None:
                cached = cid in self._index or cid in self._writing
                if not cached:  # no room: every evictable segment has writes in flight
                    self.counters["skipped_fills"] += 1
            else:
                self._writing.add(cid)
            queued = len(self._fill_queue) < FILL_QUEUE and not self._closing
        if spot is None:
            if given is not None:
                self._buffers.put(given)
            return cached
        seg, off = spot
        buf = given
        if queued:
            if buf is None:
                buf = self._buffers.get(_HEADER.size + size)
                memoryview(buf)[_HEADER.size:_HEADER.size + size] = memoryview(sealed).cast("B")
            _HEADER.pack_into(buf, 0, MAGIC, FORMAT, cid, size)
            with self._lock:
                self._fills[cid] = threading.Event()
                self._fill_queue.append((cid, seg, off, size, buf))
                self._start_filler()
                self._fill_cond.notify()
            return True
        parts = [_HEADER.pack(MAGIC, FORMAT, cid, size), memoryview(sealed).cast("B")]
        ok = self._write_buffered(seg.path, off, parts)
        del parts
        if given is not None:
            self._buffers.put(given)
        return self._written(cid, seg, off, size, ok)

    @staticmethod
    def _write_buffered(path: str, off: int, parts: list) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                total = sum(len(p) for p in parts)
                done = 0
                while done < total:
                    done += os.pwritev(fd, _tail(parts, done), off + done)
                return True
            finally:
                os.close(fd)
        except OSError:
            return False

    def _written(self, cid: bytes, seg: _Segment, off: int, size: int, ok: bool,
                 background: bool = False) -> bool:
        """Account for a finished fill (index it, or keep its hole counted)."""
        with self._lock:
            self._writing.discard(cid)
            seg.pending -= 1
            done = self._fills.pop(cid, None)
            if done is not None:
                done.set()
            if not ok:
                self.counters["write_errors"] += 1  # the hole stays counted: the bound holds
                return False
            seg.entries[cid] = (off, size)
            self._index[cid] = (seg, off, size)
            self._trusted.add(cid)  # put() takes authenticated chunks only
            self.counters["fills"] += 1
            self.counters["fill_bytes"] += size
            if background:
                self.counters["background_fills"] += 1
        return True

    def _start_filler(self) -> None:
        """Start the background writers (caller holds the lock). Counts live
        ones only: a forked child has none of its parent's threads."""
        self._fill_threads = [t for t in self._fill_threads if t.is_alive()]
        while len(self._fill_threads) < FILL_WRITERS:
            thread = threading.Thread(target=self._filler, name="r2fs-l1-fill", daemon=True)
            thread.start()
            self._fill_threads.append(thread)

    def _filler(self) -> None:
        while True:
            with self._lock:
                while not self._fill_queue and not self._closing:
                    self._fill_cond.wait()
                if not self._fill_queue:
                    return  # closing, and everything is written
                cid, seg, off, size, buf = self._fill_queue.pop(0)
            ok = False
            try:
                view = memoryview(buf)
                ok = self._write_buffered(seg.path, off, [view[:_HEADER.size + size]])
                del view
            finally:
                self._written(cid, seg, off, size, ok, background=True)
                self._buffers.put(buf)

    def _stop_filler(self) -> None:
        """Write out every queued fill and stop the writers."""
        with self._lock:
            self._closing = True
            self._fill_cond.notify_all()
            threads, self._fill_threads = self._fill_threads, []
        for thread in threads:
            thread.join()
        with self._lock:
            self._closing = False

    def _await_fill(self, cid: bytes) -> None:
        """If `cid` is being written by the background writer, wait for it to land."""
        with self._lock:
            done = self._fills.get(cid)
        if done is not None:
            done.wait(FILL_WAIT)

    def trim(self, idle: float) -> int:
        """Release the fill and read buffers kept for reuse if unused for `idle`
        seconds (see chunks.BufferPool.trim); returns the bytes released."""
        return self._buffers.trim(idle) + self._read_buffers.trim(idle)

    def clear(self) -> None:
        """Remove every entry (and the ghosts): the cache is cold afterwards."""
        self.flush()
        with self._lock:
            for seg in self._all():
                if not seg.pending:
                    self._evict(seg)
            self._ghost.clear()
            self._dirty = True
        self.save_index()

    def status(self) -> dict[str, int | str]:
        """Figures after the queued fills landed (at most FILL_QUEUE writes away)."""
        self.flush()
        with self._lock:
            return {"dir": self.dir, "capacity_bytes": self.capacity, "used_bytes": self.used,
                    "entries": len(self._index), "probation_segments": len(self._probation),
                    "main_segments": len(self._main), "fills_queued": len(self._fill_queue),
                    **self.counters}


def _tail(parts: list, skip: int) -> list:
    """The buffers of `parts` after the first `skip` bytes."""
    out = []
    for p in parts:
        if skip >= len(p):
            skip -= len(p)
            continue
        out.append(memoryview(p)[skip:])
        skip = 0
    return out


def clear_unused(root: str) -> tuple[int, int]:
    """Empty every slot under `root` that no running process holds.

    (slots cleared, slots busy). A slot in use is left alone: its process's
    index would otherwise disagree with the disk.
    """
    cleared = busy = 0
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not name.startswith("slot") or not os.path.isdir(d):
            continue
        try:
            fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise CacheError(f"cache directory {d}: {e.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                busy += 1
                continue
            for f in os.listdir(d):
                if f.startswith(SEG_PREFIX) or f.startswith("state.json"):
                    _unlink(os.path.join(d, f))
            cleared += 1
        finally:
            os.close(fd)
    return cleared, busy


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
