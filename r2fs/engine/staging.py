"""The local staging area: sealed chunks acknowledged before they reach the nodes.

In write mode `local` a chunk is made durable here (one file, fdatasync +
directory fsync; see `Staging.write`) and then recorded with loc="staging" together with
its replication-journal entry in one LMDB transaction. The replicator later
erasure-codes it onto the nodes and deletes the file.

A file holds the sealed (encrypted, authenticated) chunk behind a small
versioned header, so staging never holds plaintext and a damaged file is
detected (AES-GCM authentication on use, header checks here). File names carry
the chunk's generation, like shard names, so a chunk staged again after gc
began deleting an older copy can never lose its new file to that deletion.

Layout: <cluster>/staging/<aa>/<chunk-id-hex>.<gen>
"""

from __future__ import annotations

import os
import re
import struct
from typing import Callable, Iterator

from .errors import ChunkCorrupt, UnsupportedFormat
from .fileio import Buffer, fsync_dir, write_all

STAGING_DIR = "staging"
MAGIC = b"R2STAGE\0"
FORMAT = 1
_HEADER = struct.Struct(">8sH32sQ")  # magic, format, chunk id, sealed length
_NAME = re.compile(r"^([0-9a-f]{64})\.(\d+)$")


class Staging:
    """One staging directory; every method is blocking (call from a worker thread)."""

    def __init__(self, cluster_path: str) -> None:
        self.root = os.path.join(cluster_path, STAGING_DIR)
        self._known_dirs: set[str] = set()
        self._listeners: list[Callable[[], None]] = []

    # --- who wants to hear of new staged chunks (the replicator) ------------------------

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call `fn()` (on the trio thread) after each chunk staged by this process."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def notify(self) -> None:
        """A chunk was staged and recorded (called by the writer, on the trio thread)."""
        for fn in list(self._listeners):
            fn()

    def path_of(self, cid: bytes, gen: int) -> str:
        h = cid.hex()
        return os.path.join(self.root, h[:2], f"{h}.{gen}")

    def _ensure_dir(self, directory: str) -> None:
        if directory in self._known_dirs:
            return
        created = False
        for d in (self.root, directory):
            try:
                os.mkdir(d, 0o700)
                created = True
            except FileExistsError:
                pass
        if created:
            fsync_dir(os.path.dirname(directory))
            fsync_dir(os.path.dirname(self.root))
        self._known_dirs.add(directory)

    def write(self, cid: bytes, gen: int, sealed: Buffer, *,
              sync_later: list[str] | None = None) -> int:
        """Durably store a sealed chunk; returns the bytes written (header included).

        Written in place under its final name (unique: the generation is
        fresh), not temp + rename: a file no record names yet is never read,
        so a torn one is just an orphan for the sweep -- and one journal
        commit (fdatasync of a new file) instead of two (+ rename, + directory
        fsync of the rename) is what a local-mode acknowledgement waits for.
        The directory fsync after it finds nothing left to commit on ext4 but
        keeps the entry durable where that is not implied; given `sync_later`
        the directory is appended to it instead, for the caller's
        `nodes.sync_dirs` before the commit that records the chunk.
        """
        path = self.path_of(cid, gen)
        directory = os.path.dirname(path)
        self._ensure_dir(directory)
        header = _HEADER.pack(MAGIC, FORMAT, cid, len(sealed))
        view = memoryview(sealed).cast("B")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # the staging directory was removed under us: make it again
            self._known_dirs.clear()
            self._ensure_dir(directory)
            fd = os.open(path, flags, 0o600)
        try:
            write_all(fd, [header, view])
            os.fdatasync(fd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        os.close(fd)
        if sync_later is None:
            fsync_dir(directory)
        else:
            sync_later.append(directory)
        return _HEADER.size + len(view)

    def read(self, cid: bytes, gen: int) -> bytes | None:
        """The sealed chunk, or None when the file is not there."""
        path = self.path_of(cid, gen)
        try:
            with open(path, "rb", buffering=0) as f:
                blob = f.readall()
        except FileNotFoundError:
            return None
        if len(blob) < _HEADER.size:
            raise ChunkCorrupt(f"staged chunk {cid.hex()} at {path} is truncated")
        magic, fmt, file_cid, length = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise ChunkCorrupt(f"{path} is not a staged chunk (bad magic)")
        if fmt != FORMAT:
            raise UnsupportedFormat(f"staged chunk {path} has format {fmt}; "
                                    f"this r2fs reads format {FORMAT}")
        if file_cid != cid or len(blob) - _HEADER.size != length:
            raise ChunkCorrupt(f"staged chunk {cid.hex()} at {path} is damaged "
                               "(wrong chunk id or length)")
        return blob[_HEADER.size:]

    def delete(self, cid: bytes, gen: int) -> bool:
        try:
            os.unlink(self.path_of(cid, gen))
        except FileNotFoundError:
            return False
        return True

    def files(self) -> Iterator[tuple[str, bytes | None, int, float, int]]:
        """(path, chunk id, gen, mtime, size) of every file (chunk id None: a temp/foreign file)."""
        try:
            tops = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for top in tops:
            if not top.is_dir(follow_symlinks=False):
                continue
            try:
                entries = list(os.scandir(top.path))
            except FileNotFoundError:
                continue
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                m = _NAME.match(e.name)
                if m:
                    yield e.path, bytes.fromhex(m.group(1)), int(m.group(2)), st.st_mtime, st.st_size
                else:
                    yield e.path, None, 0, st.st_mtime, st.st_size

    def remove_file(self, path: str) -> int:
        """Delete one file found by `files()`; its size, or 0 if it was already gone."""
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return 0
        return size

