"""Durable local file writing shared by node directories, staging, keys and snapshots."""

from __future__ import annotations

import mmap
import os
from typing import Sequence

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
