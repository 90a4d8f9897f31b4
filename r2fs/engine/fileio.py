"""Durable local file writing shared by node directories, staging, keys and snapshots,
and the cluster's lock files."""

from __future__ import annotations

import fcntl
import mmap
import os
from contextlib import contextmanager
from typing import Iterator, Sequence

Buffer = bytes | bytearray | memoryview | mmap.mmap


def write_all(fd: int, parts: Sequence[Buffer]) -> None:
    """Write every byte of `parts` with writev, resuming after short writes."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        written = os.writev(fd, views[:512])  # stay below IOV_MAX
        while written:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0



def fsync_dir(directory: str) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: str, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on `path` (created, with its directory, if need be).

    Yields True once held; with `wait=False` yields False at once if another
    process (or another descriptor in this one) holds it. Released on exit.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the flock
