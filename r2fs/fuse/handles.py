"""Open files: one shared write buffer per inode, however many handles.

Two descriptors on the same file must see each other's writes at once, so
the state (buffer, attributes, pending metadata) lives per inode and handles
only count references and remember their open flags. All changes to one
open file are serialised by its lock (a commit must not interleave with a
write, or the write could be lost from the dirty set).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Callable

import trio

from ..engine.errors import NoSuchKey
from ..engine.types import ObjectInfo
from . import attrs as A
from .context import MountContext
from .writebuf import FileBuffer

log = logging.getLogger("r2fs.fuse")


@dataclass
class OpenFile:
    ino: int
    buf: FileBuffer
    attrs: A.PosixAttrs
    meta: dict[str, str]  # custom metadata to write (attributes included at commit)
    http: dict[str, str] | None
    meta_dirty: bool = False
    pending: bool = False  # created through the mount, not yet in the bucket
    lingering: bool = False  # held (one ref) to gather attribute changes into one commit
    refs: int = 0
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def dirty(self) -> bool:
        return self.buf.changed or self.meta_dirty

    @property
    def users(self) -> int:
        """References other than the linger hold."""
        return self.refs - (1 if self.lingering else 0)


@dataclass
class Handle:
    fh: int
    file: OpenFile
    append: bool
    writable: bool


#: How long attribute changes to a closed file wait to be committed together.
#: `rsync` and `tar` set times, mode and owner one call after another right
#: after close(): one metadata commit instead of three.
LINGER = 0.3


class OpenFiles:
    def __init__(self, ctx: MountContext) -> None:
        self._ctx = ctx
        self.on_commit: Callable[[int, ObjectInfo], None] = lambda ino, info: None
        self._files: dict[int, OpenFile] = {}
        self._handles: dict[int, Handle] = {}
        self._fh = itertools.count(1)

    def get(self, ino: int) -> OpenFile | None:
        return self._files.get(ino)

    def handle(self, fh: int) -> Handle:
        return self._handles[fh]

    def all(self) -> list[OpenFile]:
        return list(self._files.values())

    async def acquire(self, ino: int, path: str, info: ObjectInfo | None = None) -> OpenFile:
        """The open state of `ino` (read from the bucket if nobody has it open)."""
        of = self._files.get(ino)
        if of is not None and of.users == 0 and not of.buf.changed and path:
            # only lingering: another writer may have changed the object meanwhile
            current = info or await self._ctx.bucket.head(path)
            if of.buf.base is not None and current.version != of.buf.base.version:
                of.buf.rebase(current)
                of.meta = dict(current.custom_metadata)
                of.http = dict(current.http_metadata) or None
        if of is None:
            if info is None:
                info = await self._ctx.bucket.head(path)
            of = self._new(ino, info)
            # another task may have raced us through `head`
            of = self._files.setdefault(ino, of)
        of.refs += 1
        self._ctx.table.pin(ino)
        return of

    def create(self, ino: int, attrs: A.PosixAttrs) -> OpenFile:
        """A new file, kept local until its first flush: one commit per small file.

        (The kernel already holds the name, so other openers on this mount
        find it; readdir merges pending files in.)
        """
        ctx = self._ctx
        buf = FileBuffer(cluster=ctx.cluster, bucket=ctx.bucket, base=None,
                         chunk_size=ctx.chunk_size, staging_dir=ctx.staging_dir,
                         nursery=ctx.nursery, encoders=ctx.encoders)
        buf.changed = True
        of = OpenFile(ino=ino, buf=buf, attrs=attrs, meta={}, http=None, pending=True, refs=1)
        self._files[ino] = of
        ctx.table.pin(ino)
        return of

    def pending_in(self, parent: str) -> list[tuple[str, OpenFile]]:
        """Files created in directory `parent` that are not yet in the bucket."""
        out = []
        for of in self._files.values():
            path = self._ctx.table.path_or_none(of.ino)
            if of.pending and path is not None and path.rpartition("/")[0] == parent:
                out.append((path, of))
        return out

    def _new(self, ino: int, info: ObjectInfo) -> OpenFile:
        ctx = self._ctx
        kind = A.kind_of(info.key, info.custom_metadata)
        attrs = A.from_metadata(info.custom_metadata, kind, ctx.owner, int(info.uploaded * A.NS))
        buf = FileBuffer(cluster=ctx.cluster, bucket=ctx.bucket, base=info,
                         chunk_size=ctx.chunk_size, staging_dir=ctx.staging_dir,
                         nursery=ctx.nursery, encoders=ctx.encoders)
        return OpenFile(ino=ino, buf=buf, attrs=attrs, meta=dict(info.custom_metadata),
                        http=dict(info.http_metadata) or None)

    def open_handle(self, of: OpenFile, *, append: bool, writable: bool) -> Handle:
        h = Handle(next(self._fh), of, append, writable)
        self._handles[h.fh] = h
        return h

    async def release(self, of: OpenFile) -> None:
        """Drop one reference; the last one commits and frees the buffer."""
        try:
            if of.users == 1 and of.dirty:
                async with of.lock:
                    await self.commit(of)
        finally:
            of.refs -= 1
            if of.refs == 0 and self._files.get(of.ino) is of:
                del self._files[of.ino]
                of.buf.close()
            self._ctx.table.unpin(of.ino)

    async def linger(self, of: OpenFile) -> None:
        """Take over one reference of a file nobody has open, commit it LINGER later.

        Attribute changes made meanwhile land in the same commit. Unmount and
        signals commit lingering files too (`commit_all`).
        """
        nursery = self._ctx.nursery
        if of.lingering or nursery is None:
            await self.release(of)
            return
        of.lingering = True
        nursery.start_soon(self._linger, of)

    async def _linger(self, of: OpenFile) -> None:
        try:
            await trio.sleep(LINGER)
        finally:
            of.lingering = False  # (if cancelled: unmount's commit_all still sees the file)
        try:
            await self.release(of)
        except Exception:  # noqa: BLE001 - logged; the mount goes on
            log.exception("could not commit attributes of inode %d", of.ino)

    def close_handle(self, fh: int) -> Handle:
        return self._handles.pop(fh)

    async def commit(self, of: OpenFile) -> ObjectInfo | None:
        """Make the file durable in the bucket (caller holds `of.lock`).

        Orphans (unlinked while open) have nowhere to go and are kept local.
        """
        path = self._ctx.table.path_or_none(of.ino)
        if path is None or not of.dirty:
            return None
        meta = A.to_metadata(of.attrs, of.meta)
        if of.buf.changed:
            info = await of.buf.commit(path, custom_metadata=meta, http_metadata=of.http)
        else:
            try:
                info = await self._ctx.bucket.update_metadata(path, custom_metadata=meta)
            except NoSuchKey:  # deleted by another writer meanwhile: the delete wins
                of.meta_dirty = False
                return None
            of.buf.base = info
        of.meta = dict(info.custom_metadata)
        of.meta_dirty = False
        of.pending = False
        self.on_commit(of.ino, info)
        return info

    async def commit_all(self) -> None:
        """Flush every dirty file (unmount, signals)."""
        for of in self.all():
            try:
                async with of.lock:
                    await self.commit(of)
            except Exception:  # noqa: BLE001 - keep flushing the others
                log.exception("could not flush inode %d", of.ino)
