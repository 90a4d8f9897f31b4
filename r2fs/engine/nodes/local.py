"""A node store in a local directory (ideally on its own disk).

`LocalNode` is the only thing that touches its files; other node stores
implement the same `NodeStore` interface.

Writes are crash-safe: temp file in the same directory, write, fdatasync,
rename over the final name, fsync of the directory. A reader therefore sees
either no shard file or a complete one; a process killed mid-write leaves at
most a temp file (`.*.tmp`), which `names()` still reports so an orphan scan
can remove it.

The directory fsyncs may be deferred (`sync_later=`): a shard's directory
entry only has to be durable before a chunk record that names it commits, so
a put starts the fsyncs of each chunk's directories in the background once
its shards are written (`start_sync`) and its commit waits for them, instead
of one fsync per shard and two more per new directory in the writing
thread. Directories created but not yet fsynced into their parent are
remembered process-wide (`_unsynced`), so a writer that finds such a
directory already there still syncs its parent before it relies on it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

from ..fileio import fsync_dir, write_all
from .interface import TEMP_SUFFIX, Buffer, NodeStore, NodeUnavailable, Scratch


class LocalNode(NodeStore):
    """A node backed by a local directory."""

    def __init__(self, node_id: str, path: str, region: str = "default") -> None:
        self.id = node_id
        self.path = os.path.abspath(path)
        self.region = region
        self._known_dirs: set[str] = set()
        self._direct_ok = True
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalNode({self.id!r}, {self.path!r}, region={self.region!r})"

    @property
    def location(self) -> str:
        return self.path

    # --- paths -------------------------------------------------------------------

    def _file(self, name: str) -> str:
        """Absolute path of a node-relative name; names never leave the node dir."""
        if (not name or name.startswith("/") or "\\" in name
                or any(part in ("", ".", "..") for part in name.split("/"))):
            raise ValueError(f"invalid node file name {name!r}")
        return os.path.join(self.path, name)

    def _ensure_dir(self, directory: str, sync_later: list[str] | None = None) -> None:
        """Create `directory` below the node root; its entry made durable now or later.

        Every parent whose fsync makes a new (or not yet synced) directory
        durable is fsynced here, or, given `sync_later`, appended to it for
        the caller's `sync_dirs`. The node root itself is never created: if
        it is gone (disk not mounted), writing there would silently fill the
        wrong disk.
        """
        if directory not in self._known_dirs:
            if not os.path.isdir(self.path):
                raise NodeUnavailable(f"node {self.id}: directory {self.path} is missing")
            missing = []
            d = directory
            while d != self.path and not os.path.isdir(d):
                missing.append(d)
                d = os.path.dirname(d)
            for d in reversed(missing):
                try:
                    os.mkdir(d, 0o755)
                except FileExistsError:
                    pass  # made meanwhile by another writer, whose parent fsync may not be done
                _note_unsynced(d)
            with self._lock:
                if len(self._known_dirs) > 100_000:  # bounded: at most 65,536 shard dirs anyway
                    self._known_dirs.clear()
                self._known_dirs.add(directory)
        parents = _unsynced_parents(directory)
        if sync_later is not None:
            sync_later.extend(parents)
        elif parents:
            sync_dirs(parents)

    # --- shard files ---------------------------------------------------------------

    def write_parts(self, name: str, parts: Sequence[Buffer], *,
                    scratch: Scratch | None = None,
                    sync_later: list[str] | None = None) -> None:
        """Durably write the concatenation of `parts` as `name` (vectored, no join).

        sync_later: if given, the directories whose fsync makes the new name
        durable are appended to it instead of being fsynced here; the file's
        data is durable on return either way, its name only after the
        caller's `sync_dirs(sync_later)`.

        scratch: a pool of page-aligned buffers; given one, a file of 64 KiB
        or more is written with O_DIRECT from an aligned copy of `parts`.
        Measured on the reference VM: about a quarter of the CPU of a write
        through the page cache (a put writes 1.5 times its size in shards,
        so this is a large share of a put's CPU), at the same throughput.
        The shards are then not cached; the L1 chunk cache is for that.
        """
        path = self._file(name)
        directory = os.path.dirname(path)
        try:
            self._ensure_dir(directory, sync_later)
        except OSError as e:
            raise NodeUnavailable(f"node {self.id}: cannot create {directory}: {e.strerror}") from None
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            # the directory vanished under us (node dir removed): forget the cache, retry once
            with self._lock:
                self._known_dirs.clear()
            self._ensure_dir(directory, sync_later)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            total = sum(len(p) for p in parts)
            if scratch is not None and self._direct_ok and total >= _DIRECT_MIN:
                self._write_direct(fd, parts, total, scratch)
            else:
                write_all(fd, parts)
            os.fdatasync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if sync_later is None:
            fsync_dir(directory)
        else:
            sync_later.append(directory)

    def _write_direct(self, fd: int, parts: Sequence[Buffer], total: int, scratch: Scratch) -> None:
        """Write `parts` to the empty file `fd`: the 4 KiB-aligned bulk with O_DIRECT,
        the tail through the page cache; any refusal falls back to an ordinary write."""
        only = memoryview(parts[0]).cast("B") if len(parts) == 1 else None
        if only is not None and not only.readonly and _address(only) % _DIRECT_ALIGN == 0:
            buf = None  # one part, already page-aligned (chunks.write_shards): no copy
            view = only
        else:
            buf = scratch.get(total)
            if _address(buf) % _DIRECT_ALIGN:
                scratch.put(buf)
                write_all(fd, parts)
                return
            view = memoryview(buf)[:total]
            off = 0
            for p in parts:
                view[off:off + len(p)] = p
                off += len(p)
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            bulk = total // _DIRECT_ALIGN * _DIRECT_ALIGN
            written = 0
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
                while written < bulk and written % _DIRECT_ALIGN == 0:
                    written += os.pwrite(fd, view[written:bulk], written)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._direct_ok = False  # this filesystem or device refuses: never again here
            finally:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            while written < total:  # the tail (or everything, after a refusal)
                written += os.pwrite(fd, view[written:], written)
        finally:
            del view, only
            if buf is not None:
                scratch.put(buf)

    def read(self, name: str) -> bytes:
        with open(self._file(name), "rb", buffering=0) as f:
            return f.readall()

    def read_into(self, name: str, alloc: Callable[[int], Buffer], *,
                  only_if_cached: bool = False, direct: bool = False) -> memoryview | None:
        """Read a whole file into a buffer from `alloc(size)` (e.g. a pool); a view of it.

        `view.obj` is the buffer, so the caller can hand it back to its pool.
        only_if_cached: return None, without reading, when the file's first or
        last page is not in the page cache (RWF_NOWAIT probe), so a caller can
        read hot files in its own thread and hand cold ones to parallel I/O.
        direct: read with O_DIRECT, bypassing the page cache (for files known
        to be cold: less kernel CPU than a buffered read, no cache pollution);
        needs a page-aligned buffer (alloc(n) gets n rounded up to 4 KiB);
        falls back to a buffered read where the filesystem or buffer refuses it.
        """
        path = self._file(name)
        if direct and self._direct_ok:
            view = self._read_direct(path, alloc)
            if view is not None:
                return view
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if only_if_cached and size and not _cached(fd, size):
                return None
            view = memoryview(alloc(size))[:size]
            return view[:_read_full(fd, view, 0)]
        finally:
            os.close(fd)

    def _read_direct(self, path: str, alloc: Callable[[int], Buffer]) -> memoryview | None:
        """The file read with O_DIRECT, or None if direct I/O does not apply here."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self._direct_ok = False  # e.g. tmpfs: never try again on this node
            return None
        try:
            size = os.fstat(fd).st_size
            if size < _DIRECT_MIN:
                return None
            span = -(-size // _DIRECT_ALIGN) * _DIRECT_ALIGN
            buf = alloc(span)
            if _address(buf) % _DIRECT_ALIGN:
                return None
            view = memoryview(buf)[:span]
            try:
                got = os.preadv(fd, [view], 0)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._direct_ok = False  # the device wants another alignment
                return None
        finally:
            os.close(fd)
        if got < size:  # a short read (signal, racing truncation): finish it buffered
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                got = _read_full(fd, view[:size], got)
            finally:
                os.close(fd)
        return view[:min(got, size)]

    def delete(self, name: str) -> bool:
        try:
            os.unlink(self._file(name))
        except FileNotFoundError:
            return False
        return True

    def size_of(self, name: str) -> int | None:
        try:
            return os.stat(self._file(name)).st_size
        except FileNotFoundError:
            return None

    def names(self) -> Iterator[tuple[str, float]]:
        """Every file under shards/ (shards and leftover temp files) with its mtime.

        Streams the directory tree: memory does not grow with the shard count.
        """
        for path, st in self._walk():
            yield os.path.relpath(path, self.path), st.st_mtime

    def _walk(self) -> Iterator[tuple[str, os.stat_result]]:
        for path, st, is_dir in _tree(os.path.join(self.path, "shards")):
            if not is_dir and stat.S_ISREG(st.st_mode):
                yield path, st

    # --- capacity and health ------------------------------------------------------

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def usage(self) -> tuple[int, int]:
        """(shard file count, bytes) -- a full walk; for status, not hot paths."""
        count = total = 0
        for _, st in self._walk():
            count += 1
            total += st.st_size
        return count, total

    def available(self) -> bool:
        return os.path.isdir(self.path) and os.access(self.path, os.R_OK | os.X_OK)

    def entries(self) -> Iterator[tuple[str, int, int, bool]]:
        """Every file and directory under the root, the root included (as ""), with
        st_blocks * 512 as storage used: what `du -s -B1` adds up."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        yield "", st.st_size, st.st_blocks * 512, True
        for path, st, is_dir in _tree(self.path):
            yield os.path.relpath(path, self.path), st.st_size, st.st_blocks * 512, is_dir


def _read_full(fd: int, view: memoryview, got: int) -> int:
    """Fill view[got:] from the file at that offset; returns the bytes now in view."""
    while got < len(view):
        n = os.preadv(fd, [view[got:]], got)
        if n == 0:  # the file shrank while we read: report what is there
            break
        got += n
    return got


_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def _cached(fd: int, size: int) -> bool:
    """Are the first and last pages of the file in the page cache? (a cheap guess)"""
    if _NOWAIT is None:
        return True  # cannot tell: behave as if cached (read in the caller's thread)
    probe = bytearray(1)
    try:
        return (os.preadv(fd, [probe], 0, _NOWAIT) == 1
                and os.preadv(fd, [probe], size - 1, _NOWAIT) == 1)
    except BlockingIOError:
        return False
    except OSError:
        return True  # flag unsupported here: fall back to a plain read


_DIRECT_ALIGN = 4096
#: Smaller files are read buffered: direct I/O saves nothing on them.
_DIRECT_MIN = 64 * 1024


def _address(buf: Buffer) -> int:
    """Memory address of a writable buffer (O_DIRECT needs it aligned)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


#: Directories this process created whose entry in their parent may not be
#: durable yet: directory -> (parent, note number), and parent -> those of its
#: children (so that a finished sync forgets them without scanning the lot).
#: Shared by all nodes (keys are absolute paths). The note number lets a sync
#: forget only entries made before it began (one made during it is not covered).
_unsynced: dict[str, tuple[str, int]] = {}
_unsynced_children: dict[str, set[str]] = {}
_unsynced_lock = threading.Lock()
_notes = 0


def _note_unsynced(directory: str) -> None:
    global _notes
    parent = os.path.dirname(directory)
    with _unsynced_lock:
        _notes += 1
        _unsynced[directory] = (parent, _notes)
        _unsynced_children.setdefault(parent, set()).add(directory)


def _unsynced_parents(directory: str) -> list[str]:
    """The parents to fsync before an entry inside `directory` can be relied on."""
    if not _unsynced:
        return []
    out = []
    with _unsynced_lock:
        d = directory
        while d in _unsynced:
            d = _unsynced[d][0]
            out.append(d)
    return out


#: Directory fsyncs run in this many threads. Why: a put makes one fsync per
#: directory it touched, ~2,500 per GiB on a fresh cluster; one after another
#: at its end they took 0.5-0.9 s of a 7 s put on the reference VM (ext4
#: without a journal: each one writes its own blocks).
_SYNC_WORKERS = 8
_sync_pool: ThreadPoolExecutor | None = None


class DirSync:
    """Directory fsyncs under way in the background (`start_sync`).

    Why: a put's chunks are written over seconds; syncing each chunk's
    directories while the next chunks are being written leaves almost none
    to do at the commit. `wait` makes them count (and raises the first failure).
    """

    __slots__ = ("_futures",)

    def __init__(self, futures: list[Future[None]]) -> None:
        self._futures = futures

    def wait(self) -> None:
        failures = [e for e in (f.exception() for f in self._futures) if e is not None]
        if failures:
            raise failures[0]


def _sync_and_forget(dirs: list[str], before: int) -> None:
    """fsync each directory, then forget the children made before `before` as synced."""
    for d in dirs:
        fsync_dir(d)
    _forget_synced(dirs, before)


def start_sync(directories: Iterable[str], *, parallel: bool = False) -> DirSync:
    """Begin fsyncing each directory once, in the background.

    By default one background job fsyncs them one after another: a put starts
    one such job per chunk (~10-18 directories on a fresh cluster), and one
    job instead of one per directory saves a put ~4,000 thread hand-offs per
    GiB; its commit only needs them done by then. `parallel` gives each
    directory its own job, for a caller that waits at once (`sync_dirs`).
    """
    global _sync_pool
    with _unsynced_lock:
        before = _notes
        if _sync_pool is None:
            _sync_pool = ThreadPoolExecutor(max_workers=_SYNC_WORKERS, thread_name_prefix="r2fs-dirsync")
        pool = _sync_pool
    dirs = list(dict.fromkeys(directories))
    if not dirs:
        return DirSync([])
    if parallel:
        return DirSync([pool.submit(_sync_and_forget, [d], before) for d in dirs])
    return DirSync([pool.submit(_sync_and_forget, dirs, before)])


def sync_dirs(directories: Iterable[str]) -> None:
    """fsync each directory once (the deferred half of `write_parts(sync_later=)`)."""
    start_sync(directories, parallel=True).wait()


def _forget_synced(dirs: list[str], before: int) -> None:
    """Directories made before `before` whose parent is now synced need no more syncing."""
    if not _unsynced:
        return
    with _unsynced_lock:
        for parent in dirs:
            children = _unsynced_children.get(parent)
            if not children:
                continue
            for d in [d for d in children if _unsynced[d][1] <= before]:
                del _unsynced[d]
                children.discard(d)
            if not children:
                del _unsynced_children[parent]


def _reset_after_fork() -> None:
    """A forked child (a mount daemonising) has none of the parent's threads."""
    global _unsynced_lock, _sync_pool
    _unsynced_lock = threading.Lock()
    _sync_pool = None


os.register_at_fork(after_in_child=_reset_after_fork)


def _tree(root: str) -> Iterator[tuple[str, os.stat_result, bool]]:
    """(path, lstat, is a directory) of everything below `root`, streamed (memory does
    not grow with the file count); entries deleted while we look are skipped."""
    stack = [root]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for entry in it:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if is_dir:
                    stack.append(entry.path)
                yield entry.path, st, is_dir
