"""Giving freed heap memory back to the system (glibc), for long-running processes.

Why: glibc keeps freed memory in its heaps (the main heap and one arena per
thread that allocated) and returns it to the kernel only from the top of a
heap. A mount's worker threads allocate and free many 4 MiB plaintext
buffers (bytearrays: `malloc`) during a big read; once glibc's dynamic
mmap threshold has risen past 4 MiB they come from the heaps, and what the
read left behind stayed resident. `malloc_trim(0)` hands every free page
of every arena back (madvise DONTNEED). Elsewhere (not glibc) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

_lock = threading.Lock()
_trim = None
_looked = False


def _malloc_trim():  # type: ignore[no-untyped-def]
    global _trim, _looked
    with _lock:
        if not _looked:
            _looked = True
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                fn = libc.malloc_trim
                fn.argtypes, fn.restype = (ctypes.c_size_t,), ctypes.c_int
                _trim = fn
            except (OSError, AttributeError):
                _trim = None
        return _trim


def release_free_heap() -> bool:
    """Return the heap's free pages to the kernel; True if glibc did release some."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident() -> tuple[int, int]:
    """(resident bytes, of which file-backed or shared) of this process, from
    /proc/self/statm (one small read: cheap enough for every maintenance round);
    (0, 0) where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0, 0


#: The metadata's memory map (LMDB, opened without MDB_WRITEMAP: the map is
#: read-only and shared, written through pwrite).
_LMDB_DATA = "data.mdb"
_MADV_DONTNEED = 4


def _madvise():  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), ctypes.c_int
    return fn


def release_metadata_map() -> int:
    """Unmap the pages of this process's LMDB maps (`data.mdb`, read-only shared
    mappings); returns how many mappings were released.

    Why: every page a transaction reads through LMDB's map stays resident in
    the process (counted in its RSS) for as long as the map exists, so the
    mount's RSS grew with the metadata it had touched -- 110 MiB of a 430 MiB
    peak after untarring and copying a source tree (small files live inline
    in the metadata). MADV_DONTNEED on a shared file mapping only drops the
    process's page-table entries: the pages stay in the page cache, the next
    access maps them again (a minor fault), and nothing can be lost (the map
    is never written through; readers see the same file pages). Linux only.
    """
    fn = _madvise()
    if fn is None:
        return 0
    done = 0
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            lines = [line.split() for line in f if line.rstrip().endswith("/" + _LMDB_DATA)]
    except OSError:
        return 0
    for parts in lines:
        if len(parts) < 6 or parts[1] != "r--s":
            continue  # not LMDB's read-only shared map (a writemap would be rw-s: left alone)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if fn(lo, hi - lo, _MADV_DONTNEED) == 0:
            done += 1
    return done
