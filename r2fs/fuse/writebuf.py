"""The write buffer of an open file: a local staging file plus dirty byte ranges.

An open file is its last committed manifest (`base`, an immutable snapshot)
overlaid with the changes made since. Changes go to a local staging file
(anonymous, on the cache disk) at their file offsets; `Ranges` says which
bytes there are the file's (merged, sorted intervals). Nothing is copied
from `base` on a partial write: a read takes the staged bytes where they
are and `base` elsewhere. Memory stays bounded for any file size, also for
sparse ones: a truncate only moves `size` and `base_limit`.

Truncation: bytes of `base` at or past `base_limit` (the smallest size the
file was truncated to since the last commit) are gone; reading there gives
zeros, as POSIX says for a file shrunk and then grown.

Commit (`Bucket.update`): only the dirty ranges are stored -- a range of at
most 64 KiB as a slice kept in the metadata, larger ones as chunks cut on
the chunk grid -- and layered over `base`'s extents; a truncate to any size
(up to 1 PiB) is one small manifest change. An fsync after a 4 KiB write
stores ~4 KiB plus metadata. The engine merges slices into whole chunks in
the background (engine/slices.py).

Small files never touch the disk: the staging "file" is a bytearray until
the file grows past MEMORY_LIMIT (a temporary file per small file cost a
third of a small-file write, and files whose publication is deferred would
each hold a descriptor).

Sequential writers would otherwise pay for all the encoding at close(): so
when a write completes a whole chunk-grid slot that is dirty from end to
end, the slot is encoded (`Cluster.write_chunk`) in the background, and its
reference is handed to the commit (`stored`) unless the slot changed again
meanwhile (a generation number per slot tells). A speculative chunk that ends
up unused is unreferenced garbage the engine's gc removes.
"""

from __future__ import annotations

import bisect
import logging
import os
import tempfile

import trio

from ..engine.errors import ChunkMissing
from ..engine.slices import subtract
from ..engine.store import Bucket, Cluster
from ..engine.types import ChunkRef, Conditional, DirTouch, ObjectInfo

log = logging.getLogger("r2fs.fuse")
MEMORY_LIMIT = 256 * 1024  # staging bytes kept in memory before a file takes over


class Ranges:
    """Sorted, disjoint, merged [start, end) intervals (the staged bytes)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.starts)

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self.ends, start)  # first interval ending at/after start
        j = bisect.bisect_right(self.starts, end)  # intervals starting at/before end
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def cut(self, size: int) -> None:
        """Forget everything at or past `size`."""
        i = bisect.bisect_left(self.ends, size + 1)
        del self.starts[i + 1:], self.ends[i + 1:]
        if i < len(self.starts):
            if self.starts[i] >= size:
                del self.starts[i], self.ends[i]
            else:
                self.ends[i] = size

    def covers(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.starts, start) - 1
        return i >= 0 and self.ends[i] >= end

    def pieces(self, start: int, end: int) -> list[tuple[int, int, bool]]:
        """[start, end) as (piece start, piece end, staged?) in order."""
        out = []
        pos = start
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        while pos < end:
            if i < len(self.starts) and self.starts[i] <= pos < self.ends[i]:
                stop = min(end, self.ends[i])
                out.append((pos, stop, True))
                pos = stop
                i += 1
                continue
            if i < len(self.starts) and self.ends[i] <= pos:
                i += 1
                continue
            stop = min(end, self.starts[i]) if i < len(self.starts) else end
            out.append((pos, stop, False))
            pos = stop
        return out

    def items(self) -> list[tuple[int, int]]:
        return [(a, b - a) for a, b in zip(self.starts, self.ends)]

    def clear(self) -> None:
        self.starts, self.ends = [], []


class FileBuffer:
    def __init__(self, *, cluster: Cluster, bucket: Bucket,
                 base: ObjectInfo | None, chunk_size: int, staging_dir: str,
                 nursery: trio.Nursery | None = None,
                 encoders: trio.CapacityLimiter | None = None,
                 token: trio.lowlevel.TrioToken | None = None) -> None:
        self._cluster = cluster
        self._bucket = bucket
        self._cs = chunk_size
        self._dir = staging_dir
        self._fd: int | None = None
        self._mem: bytearray | None = bytearray()  # staging in memory while small
        self._closed = False
        self.base = base
        self.size = base.size if base else 0
        self._limit = self.size  # base bytes at or beyond this offset are gone
        self.dirty = Ranges()
        self.changed = False  # anything (data or size) differs from `base`
        self._nursery = nursery  # for background encoding of completed slots
        self._token = token  # to start that encoding from the request thread
        self._encoders = encoders or trio.CapacityLimiter(2)
        self._gen: dict[int, int] = {}  # slot -> generation (bumped on every change)
        self._encoded: dict[int, tuple[int, ChunkRef]] = {}  # slot -> (generation, chunk)
        self._inflight: dict[int, trio.Event] = {}

    # --- staging file ------------------------------------------------------------

    def _staging(self) -> int:
        if self._fd is None:
            f = tempfile.TemporaryFile(dir=self._dir, prefix="r2fs-")
            self._fd = os.dup(f.fileno())
            f.close()
            if self._mem:
                os.pwrite(self._fd, self._mem, 0)
            self._mem = None
        return self._fd

    def _pread(self, length: int, offset: int) -> bytes:
        """Staging bytes [offset, offset+length), zero-filled past what was written."""
        if self._mem is not None:
            piece = bytes(self._mem[offset:offset + length])
        else:
            piece = os.pread(self._staging(), length, offset)
        if len(piece) < length:
            piece += bytes(length - len(piece))
        return piece

    def _pwrite(self, data: bytes | memoryview, offset: int) -> int:
        end = offset + len(data)
        if self._mem is not None and end <= MEMORY_LIMIT:
            if len(self._mem) < offset:
                self._mem.extend(bytes(offset - len(self._mem)))
            self._mem[offset:end] = data
            return len(data)
        return os.pwrite(self._staging(), data, offset)

    def _shrink(self, size: int) -> None:
        """Drop staging bytes at or past `size`."""
        if self._mem is not None:
            del self._mem[size:]
        elif self._fd is not None:
            os.ftruncate(self._fd, min(size, os.fstat(self._fd).st_size))

    def close(self) -> None:
        self._closed = True
        self._mem = bytearray()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- reads -----------------------------------------------------------------

    async def _base(self, start: int, end: int, *, view: bool = False) -> bytes | memoryview:
        """`base` bytes in [start, end), zero-filled past `base_limit`/base size.

        `view`: may be a view of cached plaintext (for a read reply, not kept)."""
        real_end = min(end, self._limit)
        data: bytes | memoryview = b""
        if self.base is not None and start < real_end:
            data = await self._bucket.read_range(self.base, start, real_end - start, view=view)
        if len(data) < end - start:
            data = b"".join((data, bytes(end - start - len(data))))
        return data

    async def read(self, offset: int, length: int, *, view: bool = False) -> bytes | memoryview:
        """`view=True` for a read reply: the bytes may be a view instead of a copy."""
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        if not self.dirty:
            return await self._base(offset, end, view=view)
        out = []
        for a, b, staged in self.dirty.pieces(offset, end):
            out.append(self._pread(b - a, a) if staged else await self._base(a, b))
        return out[0] if len(out) == 1 else b"".join(out)

    async def _staged(self, offset: int, length: int) -> bytes:
        """What the commit stores for a dirty range (the engine asks piece by piece)."""
        return self._pread(length, offset)

    def read_now(self, offset: int, length: int) -> bytes | None:
        """`read` without waiting (request thread): None if `base` bytes are needed."""
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        out = []
        for a, b, staged in self.dirty.pieces(offset, end):
            if staged:
                out.append(self._pread(b - a, a))
            elif self.base is not None and a < self._limit:
                return None
            else:
                out.append(bytes(b - a))  # a hole or past the base's limit: zeros
        return out[0] if len(out) == 1 else b"".join(out)

    # --- changes -----------------------------------------------------------------

    async def write(self, offset: int, data: bytes | memoryview) -> int:
        return self._write(offset, data, from_trio=True)

    def write_now(self, offset: int, data: bytes | memoryview) -> int | None:
        """`write` without waiting (request thread). Only dirty byte ranges are staged,
        so a write never needs `base` first: this always succeeds."""
        return self._write(offset, data, from_trio=False)

    def _write(self, offset: int, data: bytes | memoryview, *, from_trio: bool) -> int:
        if not data:
            return 0
        end = offset + len(data)
        if offset > self.size:
            # the gap (old size .. offset) must read as zeros: it lies at or past
            # base_limit only if we say so.
            self._limit = min(self._limit, self.size)
        written = self._pwrite(data, offset)
        self.dirty.add(offset, end)
        self._touch(range(offset // self._cs, (end - 1) // self._cs + 1))
        self.size = max(self.size, end)
        self.changed = True
        done = end // self._cs - 1  # the slot this write just completed, if any
        if done >= offset // self._cs and self._nursery is not None \
                and self.dirty.covers(done * self._cs, (done + 1) * self._cs) \
                and done not in self._inflight and (from_trio or self._token is not None):
            self._inflight[done] = trio.Event()
            if from_trio:
                self._nursery.start_soon(self._speculate, done)
            else:
                assert self._token is not None
                self._token.run_sync_soon(self._nursery.start_soon, self._speculate, done)
        return written

    async def truncate(self, size: int) -> None:
        """Constant work whatever the size: only `size`, `base_limit` and the ranges move."""
        if size == self.size:
            return
        if size < self.size:
            self.dirty.cut(size)
            self._touch([k for k in self._encoded if (k + 1) * self._cs > size])
            self._shrink(size)
            self._limit = min(self._limit, size)
        else:
            self._limit = min(self._limit, self.size)
        self.size = size
        self.changed = True

    async def materialize(self) -> None:
        """Copy what still comes from `base` into the staging file (the base may soon be
        deleted). Holes of a sparse base cost nothing: only its data is read."""
        end = min(self._limit, self.size)
        if self.base is not None:
            for a, b, staged in self.dirty.pieces(0, end):
                if not staged:
                    pos = a
                    while pos < b:
                        stop = min(b, pos + self._cs)
                        data = await self._base(pos, stop)
                        if data.count(0) != len(data):
                            self._pwrite(data, pos)
                            self.dirty.add(pos, stop)
                        pos = stop
        self.base = None
        self._limit = 0

    # --- background encoding of completed slots ---------------------------------------

    def _touch(self, slots: "range | list[int]") -> None:
        for slot in slots:
            self._gen[slot] = self._gen.get(slot, 0) + 1
            self._encoded.pop(slot, None)

    async def _speculate(self, slot: int) -> None:
        done = self._inflight[slot]
        try:
            async with self._encoders:
                start = slot * self._cs
                gen = self._gen.get(slot, 0)
                if self._closed or slot in self._encoded or \
                        not self.dirty.covers(start, start + self._cs):
                    return
                ref = await self._cluster.write_chunk(self._pread(self._cs, start),
                                                      bucket=self._bucket.name)
                if self._gen.get(slot, 0) == gen and self.dirty.covers(start, start + self._cs):
                    self._encoded[slot] = (gen, ref)
        except Exception as exc:  # noqa: BLE001 - the commit stores it again
            log.debug("background encoding of slot %d failed: %s", slot, exc)
        finally:
            del self._inflight[slot]
            done.set()

    # --- commit ------------------------------------------------------------------

    async def commit(self, key: str, *, custom_metadata: dict[str, str],
                     http_metadata: dict[str, str] | None,
                     only_if: Conditional | None = None, ino: int | None = None,
                     touch: tuple[DirTouch, ...] = ()) -> ObjectInfo:
        """Store the changes as the new version of `key` (if `only_if` holds)."""
        for pending in list(self._inflight.values()):
            await pending.wait()
        try:
            info = await self._update(key, custom_metadata, http_metadata, only_if, ino, touch)
        except ChunkMissing:  # a background chunk was collected before we used it
            self._encoded.clear()
            info = await self._update(key, custom_metadata, http_metadata, only_if, ino, touch)
        self._committed(info)
        return info

    async def _update(self, key: str, custom: dict[str, str], http: dict[str, str] | None,
                      only_if: Conditional | None, ino: int | None,
                      touch: tuple[DirTouch, ...]) -> ObjectInfo:
        stored = []
        writes = self.dirty.items()
        if self.size > self._cs:  # whole slots already encoded in the background
            for slot, (gen, ref) in sorted(self._encoded.items()):
                start = slot * self._cs
                if self._gen.get(slot, 0) == gen and start + ref.size <= self.size:
                    stored.append((start, ref))
            if stored:
                writes = subtract(writes, [(o, r.size) for o, r in stored])
        return await self._bucket.update(key, base=self.base, size=self.size, limit=self._limit,
                                         writes=writes, read=self._staged, stored=stored,
                                         custom_metadata=custom, http_metadata=http,
                                         only_if=only_if, keep_links=True, touch=touch, ino=ino)

    def patch(self, max_bytes: int) -> tuple[int, int, list[tuple[int, bytes]]] | None:
        """The changes since `base` as (size, limit, [(offset, bytes)]) -- what laid over
        `base` (`Bucket.update`) gives the current content: an fsync()'s journal
        record. None if more than `max_bytes` are dirty."""
        items = self.dirty.items()
        if sum(n for _, n in items) > max_bytes:
            return None
        return self.size, self._limit, [(o, self._pread(n, o)) for o, n in items]

    def committed(self, info: ObjectInfo) -> None:
        """The current content was stored as `info` by someone else (a batched publication)."""
        self._committed(info)

    def rebase(self, info: ObjectInfo) -> None:
        """Follow a newer version written elsewhere (only while nothing is changed here)."""
        assert not self.changed
        self._committed(info)

    def _committed(self, info: ObjectInfo) -> None:
        self.base = info
        self.size = info.size
        self._limit = info.size
        self.dirty.clear()
        self._encoded.clear()
        self._gen.clear()
        self.changed = False
        self._shrink(0)  # give the space back; ranges refill on demand
