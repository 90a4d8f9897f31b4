"""The write buffer of an open file: a local staging file plus dirty chunks.

An open file is its last committed manifest (`base`, an immutable snapshot)
overlaid with the changes made since. Changes go to a local staging file
(anonymous, on the cache disk) at their file offsets; the chunk-sized slots
they touch are "dirty". A slot that is only partly overwritten is first
filled from `base`, so a dirty slot in the staging file is always complete.
Memory stays bounded for any file size: at most one chunk is in memory while
committing.

Truncation: bytes of `base` at or past `base_limit` (the smallest size the
file was truncated to since the last commit) are gone; reading there gives
zeros, as POSIX says for a file shrunk and then grown.

Commit: files up to one chunk go through `Bucket.put` (so the engine may
keep them inline in their manifest); larger files are committed with
`Bucket.put_chunks`, re-encoding only dirty slots and reusing `base`'s chunk
references for the others (when `base` is chunked on the same grid).

Small files never touch the disk: the staging "file" is a bytearray until
the file grows past MEMORY_LIMIT (a temporary file per small file cost a
third of a small-file write, and files whose publication is deferred would
each hold a descriptor).

Sequential writers would otherwise pay for all the encoding at close(): so
when a write crosses a slot boundary, the slot just completed is encoded
(`Cluster.write_chunk`) in the background, and its reference is used at
commit unless the slot changed again meanwhile (a generation number per slot
tells). A speculative chunk that ends up unused is unreferenced garbage the
engine's gc removes.
"""

from __future__ import annotations

import logging
import os
import tempfile

import trio

from ..engine.errors import ChunkMissing
from ..engine.store import Bucket, Cluster
from ..engine.types import ChunkRef, Conditional, ObjectInfo

log = logging.getLogger("r2fs.fuse")
COMMIT_INFLIGHT = 3  # chunks encoded concurrently by one commit
MEMORY_LIMIT = 256 * 1024  # staging bytes kept in memory before a file takes over


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
        self.dirty: set[int] = set()
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
        pos = offset
        while pos < end:
            slot = pos // self._cs
            stop = min(end, (slot + 1) * self._cs)
            if slot in self.dirty:
                piece = self._pread(stop - pos, pos)
            else:
                piece = await self._base(pos, stop)
            out.append(piece)
            pos = stop
        return b"".join(out)

    def read_now(self, offset: int, length: int) -> bytes | None:
        """`read` without waiting (request thread): None if `base` bytes are needed."""
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        pos = offset
        while pos < end:
            slot = pos // self._cs
            stop = min(end, (slot + 1) * self._cs)
            if slot not in self.dirty and self.base is not None and pos < min(stop, self._limit):
                return None
            pos = stop
        out = []
        pos = offset
        while pos < end:
            slot = pos // self._cs
            stop = min(end, (slot + 1) * self._cs)
            out.append(self._pread(stop - pos, pos) if slot in self.dirty else bytes(stop - pos))
            pos = stop
        return b"".join(out)

    # --- changes -----------------------------------------------------------------

    async def _make_dirty(self, slot: int, covered: tuple[int, int] | None = None) -> None:
        """Fill slot `slot` of the staging file from `base` unless `covered` overwrites it all."""
        if slot in self.dirty:
            return
        start = slot * self._cs
        end = min(start + self._cs, self.size, self._limit)
        if start < end and not (covered and covered[0] <= start and covered[1] >= end):
            data = await self._base(start, end)
            self._pwrite(data, start)
        self.dirty.add(slot)

    async def write(self, offset: int, data: bytes | memoryview) -> int:
        if not data:
            return 0
        end = offset + len(data)
        for slot in range(offset // self._cs, (end - 1) // self._cs + 1):
            await self._make_dirty(slot, (offset, end))
        return self._write_dirty(offset, data, from_trio=True)

    def write_now(self, offset: int, data: bytes | memoryview) -> int | None:
        """`write` without waiting (request thread): None if a slot must first be filled from `base`."""
        if not data:
            return 0
        end = offset + len(data)
        slots = range(offset // self._cs, (end - 1) // self._cs + 1)
        for slot in slots:
            if slot in self.dirty:
                continue
            start = slot * self._cs
            stop = min(start + self._cs, self.size, self._limit)
            if start < stop and not (offset <= start and end >= stop):
                return None
        self.dirty.update(slots)
        return self._write_dirty(offset, data, from_trio=False)

    def _write_dirty(self, offset: int, data: bytes | memoryview, *, from_trio: bool) -> int:
        """Write into slots that are dirty (complete in staging) already."""
        end = offset + len(data)
        if offset > self.size:
            # the gap (old size .. offset) must read as zeros: it lies at or past
            # base_limit only if we say so.
            self._limit = min(self._limit, self.size)
        written = self._pwrite(data, offset)
        self._touch(range(offset // self._cs, (end - 1) // self._cs + 1))
        self.size = max(self.size, end)
        self.changed = True
        done = end // self._cs - 1  # the slot this write just completed, if any
        if done >= offset // self._cs and self._nursery is not None and done in self.dirty \
                and done not in self._inflight and (from_trio or self._token is not None):
            self._inflight[done] = trio.Event()
            if from_trio:
                self._nursery.start_soon(self._speculate, done)
            else:
                assert self._token is not None
                self._token.run_sync_soon(self._nursery.start_soon, self._speculate, done)
        return written

    async def truncate(self, size: int) -> None:
        if size == self.size:
            return
        if size < self.size:
            if size % self._cs:
                await self._make_dirty(size // self._cs)
            self.dirty = {s for s in self.dirty if s * self._cs < size}
            self._touch([k for k in self._encoded if k >= size // self._cs] + [size // self._cs])
            self._shrink(size)
            self._limit = min(self._limit, size)
        else:
            self._limit = min(self._limit, self.size)
            self._touch([self.size // self._cs])
        self.size = size
        self.changed = True

    async def materialize(self) -> None:
        """Copy everything into the staging file (the base may soon be deleted)."""
        for slot in range((self.size + self._cs - 1) // self._cs):
            await self._make_dirty(slot)
        self.base = None
        self._limit = 0

    # --- commit ------------------------------------------------------------------

    def _touch(self, slots: "range | list[int]") -> None:
        for slot in slots:
            self._gen[slot] = self._gen.get(slot, 0) + 1
            self._encoded.pop(slot, None)

    async def _encode(self, slot: int) -> ChunkRef:
        """Store slot `slot` as a chunk; remember it if the slot is unchanged meanwhile."""
        start = slot * self._cs
        gen = self._gen.get(slot, 0)
        data = await self.read(start, min(start + self._cs, self.size) - start)
        ref = await self._cluster.write_chunk(data, bucket=self._bucket.name)
        if slot in self.dirty and self._gen.get(slot, 0) == gen:
            self._encoded[slot] = (gen, ref)
        return ref

    async def _speculate(self, slot: int) -> None:
        done = self._inflight[slot]
        try:
            async with self._encoders:
                if slot in self.dirty and slot not in self._encoded and not self._closed:
                    await self._encode(slot)
        except Exception as exc:  # noqa: BLE001 - the commit encodes it again
            log.debug("background encoding of slot %d failed: %s", slot, exc)
        finally:
            del self._inflight[slot]
            done.set()

    # --- commit ------------------------------------------------------------------

    async def commit(self, key: str, *, custom_metadata: dict[str, str],
                     http_metadata: dict[str, str] | None,
                     only_if: Conditional | None = None) -> ObjectInfo:
        """Store the current content as the new version of `key` (if `only_if` holds)."""
        if self.size <= self._cs:
            info = await self._bucket.put(key, await self.read(0, self.size), only_if=only_if,
                                          custom_metadata=custom_metadata, http_metadata=http_metadata)
        else:
            refs = await self._chunk_refs()
            try:
                info = await self._bucket.put_chunks(key, refs, custom_metadata=custom_metadata,
                                                     http_metadata=http_metadata, only_if=only_if)
            except ChunkMissing:  # a background chunk was collected before we used it
                self._encoded.clear()
                refs = await self._chunk_refs()
                info = await self._bucket.put_chunks(key, refs, custom_metadata=custom_metadata,
                                                     http_metadata=http_metadata, only_if=only_if)
        self._committed(info)
        return info

    async def _chunk_refs(self) -> list[ChunkRef]:
        for pending in list(self._inflight.values()):
            await pending.wait()
        reusable: dict[int, ChunkRef] = {}
        if self.base is not None and not self.base.inline:
            reusable = {off: ref for off, ref in self.base.chunk_spans()}
        nslots = (self.size + self._cs - 1) // self._cs
        refs: list[ChunkRef | None] = [None] * nslots
        todo = []
        for slot in range(nslots):
            start = slot * self._cs
            end = min(start + self._cs, self.size)
            ref = reusable.get(start)
            done = self._encoded.get(slot)
            if slot not in self.dirty and ref is not None and ref.size == end - start and end <= self._limit:
                refs[slot] = ref
            elif done is not None and done[0] == self._gen.get(slot, 0) and done[1].size == end - start:
                refs[slot] = done[1]
            else:
                todo.append(slot)
        limit = trio.Semaphore(COMMIT_INFLIGHT)

        async def one(slot: int) -> None:
            try:
                refs[slot] = await self._encode(slot)
            finally:
                limit.release()

        async with trio.open_nursery() as nursery:
            for slot in todo:
                await limit.acquire()
                nursery.start_soon(one, slot)
        return refs  # type: ignore[return-value]

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
        self._shrink(0)  # give the space back; slots refill on demand
