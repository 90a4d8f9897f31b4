"""L1: a bounded local-disk cache of SEALED chunks, one per mount/gateway process.

Why sealed: the cache disk may be a shared scratch disk; keeping chunks as the
nodes hold them (AES-256-GCM, chunk id in the AAD) means no plaintext ever
lands there, and opening an entry *is* its integrity check -- a corrupt,
truncated or swapped file fails authentication, is dropped and the chunk is
fetched again. Chunks are immutable and content-addressed, so an entry is
never stale and nothing ever needs invalidation.

Eviction is 2Q: a chunk seen once goes to a FIFO probation queue (`a1in`);
a second access promotes it to the LRU main queue (`am`); chunks pushed out of
probation are remembered by id only (`ghost`) so that a comeback goes straight
to `am`. When space is needed, probation gives it up first once it holds more
than its share (`PROBATION_SHARE`), so one big sequential scan cycles through
probation instead of flushing the hot set.

The byte bound holds at all times: space is reserved (evicting first) under
the lock before a file is written, and released if the write fails. The index
(queue order + ghosts) is saved atomically and reloaded at start, and files
found on disk but missing from the index are adopted, so a restarted process
keeps a warm cache. One directory belongs to one process at a time (`flock`
on a slot); a second process on the same root takes the next slot.

Every method is synchronous and thread-safe (call it via trio.to_thread).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import threading
from collections import OrderedDict
from typing import Callable

from .chunks import BufferPool
from .crypto import SEAL_OVERHEAD
from .errors import ChunkCorrupt, R2fsError

Buffer = bytes | bytearray | memoryview

FORMAT = 1
#: Fraction of the capacity probation may keep once the cache is full.
PROBATION_SHARE = 0.25
#: Disk blocks: an entry costs its size rounded up to this on most filesystems.
BLOCK = 4096
DEFAULT_MAX = 2 * 1024 ** 3
MIN_FREE_FRACTION = 0.10
MAX_SLOTS = 64

#: open_into(chunk id, sealed, out): authenticate + decrypt into `out` (ChunkCorrupt on failure)
OpenInto = Callable[[bytes, Buffer, Buffer], None]


class CacheError(R2fsError):
    """The cache directory cannot be used (not writable, all slots taken)."""


def _cost(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


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
                total += _cost(os.stat(os.path.join(base, f)).st_size)
            except OSError:
                pass
    return total


class DiskCache:
    """A 2Q cache of sealed chunks under `<root>/slot<N>/`."""

    def __init__(self, root: str, capacity: int, open_into: OpenInto) -> None:
        self.root = os.path.abspath(root)
        self.capacity = max(0, int(capacity))
        self._open_into = open_into
        self._lock = threading.Lock()
        self._a1in: OrderedDict[bytes, int] = OrderedDict()  # id -> cost, oldest first
        self._am: OrderedDict[bytes, int] = OrderedDict()  # id -> cost, LRU first
        self._ghost: OrderedDict[bytes, None] = OrderedDict()
        self._sizes: dict[bytes, int] = {}  # id -> exact file size
        self._a1in_bytes = 0
        self.used = 0  # bytes reserved or held (costs)
        self._dirty = False
        self._buffers = BufferPool(16 * 1024 * 1024)
        self.counters = {"evictions": 0, "evicted_bytes": 0, "corrupt": 0, "write_errors": 0,
                         "fills": 0, "fill_bytes": 0}
        self.dir, self._lock_fd = self._take_slot()
        self._load()

    # --- directory and index ----------------------------------------------------------

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

    def _path(self, cid: bytes) -> str:
        h = cid.hex()
        return os.path.join(self.dir, h[:2], h)

    def _index_path(self) -> str:
        return os.path.join(self.dir, "index.json")

    def _load(self) -> None:
        """Rebuild the queues from the saved index, then adopt/clean what is on disk."""
        saved: dict = {}
        try:
            with open(self._index_path(), encoding="utf-8") as f:
                saved = json.load(f)
            if saved.get("format") != FORMAT:
                saved = {}
        except (OSError, ValueError):
            saved = {}
        on_disk: dict[bytes, int] = {}
        for sub in os.listdir(self.dir):
            d = os.path.join(self.dir, sub)
            if len(sub) != 2 or not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if name.endswith(".tmp"):
                    _unlink(p)  # a write cut short by a crash
                    continue
                try:
                    cid = bytes.fromhex(name)
                    on_disk[cid] = os.stat(p).st_size
                except (ValueError, OSError):
                    _unlink(p)
        for queue, name in ((self._a1in, "a1in"), (self._am, "am")):
            for h in saved.get(name, []):
                try:
                    cid = bytes.fromhex(h)
                except (TypeError, ValueError):
                    continue
                size = on_disk.pop(cid, None)
                if size is not None:
                    self._insert(queue, cid, size)
        for cid, size in on_disk.items():  # written after the last index save
            self._insert(self._a1in, cid, size)
        for h in saved.get("ghost", [])[-self._ghost_limit():]:
            try:
                self._ghost[bytes.fromhex(h)] = None
            except (TypeError, ValueError):
                continue
        with self._lock:
            self._make_room(0)  # the capacity may have been lowered since
        self._dirty = True

    def save_index(self) -> None:
        """Persist the queue order (atomic replace); cheap when nothing changed."""
        with self._lock:
            if not self._dirty:
                return
            state = {"format": FORMAT, "a1in": [c.hex() for c in self._a1in],
                     "am": [c.hex() for c in self._am], "ghost": [c.hex() for c in self._ghost]}
            self._dirty = False
        tmp = f"{self._index_path()}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f)
            os.replace(tmp, self._index_path())
        except OSError:
            _unlink(tmp)
            self._dirty = True

    def close(self) -> None:
        self.save_index()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # --- queues (callers hold the lock, except during _load) --------------------------

    def _ghost_limit(self) -> int:
        return max(1024, self.capacity // (64 * 1024))

    def _insert(self, queue: OrderedDict, cid: bytes, size: int) -> None:
        cost = _cost(size)
        queue[cid] = cost
        self._sizes[cid] = size
        self.used += cost
        if queue is self._a1in:
            self._a1in_bytes += cost

    def _remove(self, cid: bytes) -> int:
        """Forget an entry (file not touched); its cost, or 0."""
        self._sizes.pop(cid, None)
        cost = self._a1in.pop(cid, None)
        if cost is not None:
            self._a1in_bytes -= cost
        else:
            cost = self._am.pop(cid, None)
        if cost is None:
            return 0
        self.used -= cost
        self._dirty = True
        return cost

    def _make_room(self, need: int) -> bool:
        """Evict until `need` more bytes fit; False if they never can."""
        if need > self.capacity:
            return False
        while self.used + need > self.capacity and (self._a1in or self._am):
            from_probation = self._a1in and (
                not self._am or self._a1in_bytes > self.capacity * PROBATION_SHARE)
            if from_probation:
                cid = next(iter(self._a1in))
                self._ghost[cid] = None
                while len(self._ghost) > self._ghost_limit():
                    self._ghost.popitem(last=False)
            else:
                cid = next(iter(self._am))
            cost = self._remove(cid)
            _unlink(self._path(cid))
            self.counters["evictions"] += 1
            self.counters["evicted_bytes"] += cost
        return self.used + need <= self.capacity

    # --- public ------------------------------------------------------------------------

    def __contains__(self, cid: bytes) -> bool:
        with self._lock:
            return cid in self._sizes

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)

    def _lookup(self, cid: bytes) -> int | None:
        """The entry's file size (and count the access), or None."""
        with self._lock:
            size = self._sizes.get(cid)
            if size is None:
                return None
            if cid in self._a1in:  # second access: promote to the main queue
                cost = self._a1in.pop(cid)
                self._a1in_bytes -= cost
                self._am[cid] = cost
            else:
                self._am.move_to_end(cid)
            self._dirty = True
            return size

    def _verified(self, cid: bytes, size: int, sealed: Buffer, out: Buffer | None) -> bool:
        """Authenticate (and decrypt into `out`, or a scratch buffer); False (entry
        dropped) if the file is short or fails authentication."""
        scratch = None
        try:
            if len(sealed) != size or size < SEAL_OVERHEAD:
                raise ChunkCorrupt(f"cache entry {cid.hex()}: {len(sealed)} bytes, expected {size}")
            if out is None:
                scratch = self._buffers.get(size - SEAL_OVERHEAD)
                out = memoryview(scratch)[:size - SEAL_OVERHEAD]
            self._open_into(cid, sealed, out)
            return True
        except ChunkCorrupt:
            self._drop(cid, corrupt=True)
            return False
        finally:
            out = None
            if scratch is not None:
                self._buffers.put(scratch)

    def get(self, cid: bytes) -> bytearray | None:
        """The authenticated plaintext of a cached chunk, or None (miss).

        A file that fails authentication (bit rot, truncation, tampering) is
        removed and reported as a miss: the caller fetches the chunk again.
        """
        size = self._lookup(cid)
        if size is None:
            return None
        buf = self._buffers.get(size + 1)
        try:
            try:
                view = _read_file(self._path(cid), memoryview(buf)[:size + 1])
            except OSError:
                self._drop(cid, corrupt=False)  # evicted meanwhile, or the file vanished
                return None
            plaintext = bytearray(max(0, size - SEAL_OVERHEAD))
            ok = self._verified(cid, size, view, plaintext)
            del view
            return plaintext if ok else None
        finally:
            self._buffers.put(buf)

    def get_sealed(self, cid: bytes) -> bytes | None:
        """The sealed chunk as stored (authenticated first), for a peer; or None."""
        size = self._lookup(cid)
        if size is None:
            return None
        try:
            with open(self._path(cid), "rb", buffering=0) as f:
                sealed = f.read(size + 1)
        except OSError:
            self._drop(cid, corrupt=False)
            return None
        return sealed if self._verified(cid, size, sealed, None) else None

    def _drop(self, cid: bytes, *, corrupt: bool) -> None:
        with self._lock:
            self._remove(cid)
            if corrupt:
                self.counters["corrupt"] += 1
                _unlink(self._path(cid))

    def advise(self, cids: list[bytes]) -> None:
        """Ask the kernel to start reading these entries (they are about to be read).

        Why: separate 4 MiB files read one after another leave the disk idle
        between them (measured ~200 MiB/s on the reference VM, against ~500
        with several in flight); WILLNEED queues the reads without waiting.
        """
        for cid in cids:
            if cid not in self:
                continue
            try:
                fd = os.open(self._path(cid), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def put(self, cid: bytes, sealed: bytes | bytearray | memoryview) -> bool:
        """Store an already AUTHENTICATED sealed chunk; False if it was not cached.

        A full disk or an entry bigger than the whole cache is not an error: the
        read that fetched the chunk has its data either way.
        """
        size = len(sealed)
        cost = _cost(size)
        with self._lock:
            if cid in self._sizes:
                return True
            if not self._make_room(cost):
                return False
            self.used += cost  # reserved: the bound holds while the file is written
            ghost = cid in self._ghost  # evicted from probation lately: it is hot
            self._ghost.pop(cid, None)
        path = self._path(cid)
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(sealed).cast("B")
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError:
            _unlink(tmp)
            with self._lock:
                self.used -= cost
                self.counters["write_errors"] += 1
            return False
        with self._lock:
            self.used -= cost
            if cid in self._sizes:  # raced with another put of the same chunk
                return True
            self._insert(self._am if ghost else self._a1in, cid, size)
            self.counters["fills"] += 1
            self.counters["fill_bytes"] += size
            self._dirty = True
        return True

    def clear(self) -> None:
        """Remove every entry (and the ghosts): the cache is cold afterwards."""
        with self._lock:
            for cid in list(self._sizes):
                self._remove(cid)
            self._ghost.clear()
            for sub in os.listdir(self.dir):
                d = os.path.join(self.dir, sub)
                if len(sub) == 2 and os.path.isdir(d):
                    shutil.rmtree(d, ignore_errors=True)
            self._dirty = True

    def status(self) -> dict[str, int | str]:
        with self._lock:
            return {"dir": self.dir, "capacity_bytes": self.capacity, "used_bytes": self.used,
                    "entries": len(self._sizes), "probation_entries": len(self._a1in),
                    "main_entries": len(self._am), **self.counters}


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
            for sub in os.listdir(d):
                p = os.path.join(d, sub)
                if len(sub) == 2 and os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
            _unlink(os.path.join(d, "index.json"))
            cleared += 1
        finally:
            os.close(fd)
    return cleared, busy


def _read_file(path: str, into: memoryview) -> memoryview:
    """Read up to len(into) bytes of `path` into `into`; the filled view."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        got = 0
        while got < len(into):
            n = os.readv(fd, [into[got:]])
            if n == 0:
                break
            got += n
        return into[:got]
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
