"""Open files: one shared write buffer per inode, however many handles.

Two descriptors on the same file must see each other's writes at once, so
the state (buffer, attributes, pending metadata) lives per inode and handles
only count references and remember their open flags. All changes to one
open file are serialised by its lock (a commit must not interleave with a
write, or the write could be lost from the dirty set).

Deferred publication: a small file (inline-sized) closed dirty is recorded
in the mount's journal (journal.py: survives kill -9) and *held* -- kept
here with one reference -- for PUBLISH_DELAY; then the publisher commits
every due file concurrently, so the metadata group commit folds many files
into one transaction. Due files that are plain content changes are
published together through one `Bucket.put_many` (one sealing pass in one
worker thread, one metadata commit) instead of one put each: that per-file
overhead was most of the mount's CPU for small files. chmod/chown/utimens/
rename that `rsync` and `tar` do right after close() land in that same
commit. Attribute changes to a closed
file are held the same way (LINGER). fsync() commits synchronously, except
for new small files and small in-place updates: journaled and fdatasync'd,
committed a moment later (`OpenFiles.fsync`).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import trio

from ..engine.errors import NoSuchKey, PreconditionFailed
from ..engine.store import PutItem
from ..engine.types import ObjectInfo
from . import attrs as A
from .context import MountContext
from .deletes import DeferredDeletes
from .dirattrs import DeferredDirAttrs
from .journal import Journal, condition
from .names import is_under
from .dirs import parent_touch
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
    held: bool = False  # one reference kept until the publisher commits it
    jid: int | None = None  # journal id of its closed, unpublished content
    cond: str | None = None  # publish condition (journal.condition): the version it replaces
    refs: int = 0
    lock: trio.Lock = field(default_factory=trio.Lock)
    #: when it (unpublished) last changed its directory's entries -- created, renamed
    #: here: the times its publication gives the directory (not its own later ctime)
    entry_ns: int = 0

    @property
    def dirty(self) -> bool:
        return self.buf.changed or self.meta_dirty

    @property
    def users(self) -> int:
        """References other than the publisher's hold."""
        return self.refs - (1 if self.held else 0)


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
#: How long a closed small file waits before it is published (its journal
#: record makes it safe meanwhile); what arrives in that window shares commits.
PUBLISH_DELAY = 0.1
#: The publisher runs at most this often, so that files closed one after
#: another are published together (a round per due file made batches of one).
PUBLISH_TICK = 0.05
#: Bounds on what is held unpublished (memory: held buffers live in RAM).
HELD_MAX_FILES = 4096
HELD_MAX_BYTES = 32 << 20
#: fsync() of an in-place update with at most this many changed bytes is journaled
PATCH_MAX = 1 << 20
PUBLISHERS = 32  # publications in flight at once (the group commit batches them)
BATCH_MAX = 256  # files per Bucket.put_many (one LMDB group commit holds 256)
#: Only a close that follows another within this window is deferred: bulk
#: writers (cp -r, rsync, tar, a loop of small files) get batched commits,
#: while a lone close (an editor's save, a script writing one file and then
#: reading it over S3) is committed before close() returns, visible at once.
BULK_WINDOW = 0.1


class OpenFiles:
    def __init__(self, ctx: MountContext) -> None:
        self._ctx = ctx
        self.on_commit: Callable[[int, ObjectInfo], None] = lambda ino, info: None
        self.on_abandon: Callable[[int], None] = lambda ino: None
        self._files: dict[int, OpenFile] = {}
        self._handles: dict[int, Handle] = {}
        self._fh = itertools.count(1)
        self.journal: Journal | None = None  # set by the mount: enables deferred publication
        self.deletes: DeferredDeletes | None = None  # set by the mount: unlinks not yet committed
        self.markers: DeferredDirAttrs | None = None  # set by the mount: directories not yet made
        self._held: dict[int, tuple[float, OpenFile, int]] = {}  # ino -> (due, file, bytes)
        self._synced: dict[int, OpenFile] = {}  # held by fsync() (published even if open)
        self._held_bytes = 0
        self._wake = trio.Event()
        self._next_due = math.inf  # when the publisher wakes next on its own
        self._inflight: dict[int, tuple[OpenFile, trio.Event]] = {}  # being published now
        self._last_close = -math.inf

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
            # only held: another writer may have changed the object meanwhile
            current = info or await self._ctx.bucket.head(path)
            if of.buf.base is not None and current.version != of.buf.base.version:
                of.buf.rebase(current)
                of.meta = dict(current.custom_metadata)
                of.http = dict(current.http_metadata) or None
        if of is None:
            if info is None:
                info = await self._ctx.bucket.head(path)
            return self.adopt(ino, info)
        of.refs += 1
        self._ctx.table.pin(ino)
        return of

    def adopt(self, ino: int, info: ObjectInfo) -> OpenFile:
        """`acquire` of a file nobody has open, whose object `info` the caller just read."""
        of = self._files.setdefault(ino, self._new(ino, info))  # (another task may have raced us)
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
                         nursery=ctx.nursery, encoders=ctx.encoders, token=ctx.trio_token)
        buf.changed = True
        of = OpenFile(ino=ino, buf=buf, attrs=attrs, meta={}, http=None, pending=True, refs=1,
                      entry_ns=attrs.ctime_ns)
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
                         nursery=ctx.nursery, encoders=ctx.encoders, token=ctx.trio_token)
        return OpenFile(ino=ino, buf=buf, attrs=attrs, meta=dict(info.custom_metadata),
                        http=dict(info.http_metadata) or None)

    def open_handle(self, of: OpenFile, *, append: bool, writable: bool) -> Handle:
        h = Handle(next(self._fh), of, append, writable)
        self._handles[h.fh] = h
        return h

    async def release(self, of: OpenFile, *, publish: bool = False) -> None:
        """Drop one reference; the last one commits and frees the buffer.

        A held file's hold commits it (`publish`): other releases leave it be.
        """
        try:
            # (a file journaled by fsync() is published even while open: fsync promised
            # other interfaces would see it a moment later, not at close)
            synced = publish and self._synced.pop(of.ino, None) is of
            if (of.users == 1 or synced) and of.dirty and (publish or not of.held):
                async with of.lock:
                    await self.commit(of, conditional=publish)
        finally:
            self._drop(of)

    def drop_now(self, of: OpenFile) -> None:
        """Undo an `adopt` (nothing to commit: the file was only read)."""
        self._drop(of)

    def _drop(self, of: OpenFile) -> None:
        """One reference less; the last one frees the buffer."""
        of.refs -= 1
        if of.refs == 0 and self._files.get(of.ino) is of:
            del self._files[of.ino]
            of.buf.close()
        self._ctx.table.unpin(of.ino)

    async def linger(self, of: OpenFile) -> None:
        """Take over one reference of a file nobody has open, commit it LINGER later.

        Attribute changes made meanwhile land in the same commit. Unmount and
        signals commit held files too (`commit_all`).
        """
        if of.held or self._ctx.nursery is None:
            await self.release(of)
            return
        self._hold(of, LINGER)

    def _hold(self, of: OpenFile, delay: float, nbytes: int | None = None) -> None:
        """Hold `of` for the publisher; `nbytes` of the hold budget (default: its size)."""
        of.held = True
        due = self._ctx.now() + delay
        nbytes = of.buf.size if nbytes is None else nbytes
        self._held[of.ino] = (due, of, nbytes)
        self._held_bytes += nbytes
        if due < self._next_due:  # (else the publisher is awake by then anyway)
            self._next_due = due
            self._ctx.in_trio(self._wake_publisher)

    def _wake_publisher(self) -> None:
        self._wake.set()

    def _unhold(self, of: OpenFile) -> None:
        """Hand the hold's reference to the caller, who releases it (and so publishes)."""
        entry = self._held.get(of.ino)
        if entry is not None and entry[1] is of:
            del self._held[of.ino]
            self._held_bytes -= entry[2]
        of.held = False

    async def flush(self, of: OpenFile) -> None:
        """close() of a descriptor: make the file safe, publish it soon (caller holds `of.lock`).

        Small files closed in bulk go to the journal and are held for the
        publisher; others (and everything when the journal or the hold budget
        is not there) are committed now.
        """
        path = self._ctx.table.path_or_none(of.ino)
        if path is None or not of.dirty:
            return
        now = self._ctx.now()
        deferred = self._deferrable(of, now) or self._joins_hold(of)
        self._last_close = now
        if not deferred:
            await self.commit(of)
            return
        self._journal_and_hold(of, path, await of.buf.read(0, of.buf.size))

    def flush_now(self, of: OpenFile) -> bool:
        """`flush` without waiting (request thread, `of.lock` free): False if it must commit now."""
        path = self._ctx.table.path_or_none(of.ino)
        if path is None or not of.dirty:
            return True
        now = self._ctx.now()
        if not (self._deferrable(of, now) or self._joins_hold(of)):
            return False  # (the async flush decides again, and commits)
        content = of.buf.read_now(0, of.buf.size)
        if content is None:
            return False
        self._last_close = now
        self._journal_and_hold(of, path, content)
        return True

    def _deferrable(self, of: OpenFile, now: float) -> bool:
        return self._bulk(of.buf.size, now)

    def _joins_hold(self, of: OpenFile) -> bool:
        """A file an fsync() journaled and holds: its close joins that hold -- while it
        is still small (grown past the inline threshold, e.g. truncated to a terabyte,
        its content is no journal record: the close commits)."""
        return (self._synced.get(of.ino) is of and of.held and of.jid is not None
                and of.buf.size <= self._ctx.inline_threshold)

    def _bulk(self, size: int, now: float) -> bool:
        ctx = self._ctx
        return (now - self._last_close < BULK_WINDOW and self.journal is not None
                and ctx.nursery is not None and size <= ctx.inline_threshold
                and len(self._held) < HELD_MAX_FILES
                and self._held_bytes + size <= HELD_MAX_BYTES)

    def bulk_now(self, size: int) -> bool:
        """Whether a new object of `size` bytes made now (a symlink) is published deferred."""
        return self._bulk(size, self._ctx.now())

    def symlink_now(self, ino: int, attrs: A.PosixAttrs, path: str, target: bytes) -> OpenFile:
        """A new symlink (`bulk_now` said so): in memory, journaled and held for the
        publisher like a small file closed in bulk (no handle stays open on it)."""
        of = self.create(ino, attrs)
        n = of.buf.write_now(0, memoryview(target))
        assert n == len(target)  # (a new buffer: nothing to read first)
        self._last_close = self._ctx.now()
        self._journal_and_hold(of, path, target)
        self._drop(of)  # the creation's reference; the hold keeps it
        return of

    async def fsync(self, of: OpenFile) -> None:
        """fsync(): durable before it returns (caller holds `of.lock`).

        A new small file not published yet goes to the close journal, fdatasync'd:
        durable on this host (a remount replays it), published a moment later like
        a closed file, and nothing to commit at all if it is unlinked before that
        (sqlite's -journal: created, written, fsynced twice, unlinked per commit --
        four metadata commits, now none). An in-place update of a published file
        of at most PATCH_MAX changed bytes (a database's pages) goes there too, as
        the changed ranges over the version it was made on (`Journal.patch`):
        durable on this host, committed a moment later, many fsyncs per metadata
        commit. Everything else commits.
        """
        path = self._ctx.table.path_or_none(of.ino)
        ctx = self._ctx
        base = of.buf.base
        if (path is not None and of.dirty and not of.pending and base is not None
                and of.buf.changed and self.journal is not None and ctx.nursery is not None
                and len(self._held) < HELD_MAX_FILES
                and self._held_bytes + PATCH_MAX <= HELD_MAX_BYTES
                and (patch := of.buf.patch(PATCH_MAX)) is not None):
            size, limit, pieces = patch
            old = of.jid
            of.cond = base.etag  # (its publication replaces only that version)
            of.jid = self.journal.patch(ctx.bucket_name, path, base, size, limit, pieces,
                                        A.to_metadata(of.attrs, of.meta), of.http, of.ino)
            if old is not None:
                self.journal.done(old)  # (superseded: the new record holds all of it)
            if not of.held:
                of.refs += 1
                ctx.table.pin(of.ino)
                self._hold(of, PUBLISH_DELAY, PATCH_MAX)
            self._synced[of.ino] = of
            await trio.to_thread.run_sync(self.journal.sync)
            return
        if (path is not None and of.dirty and of.pending and of.buf.base is None
                and of.buf.changed and self.journal is not None and ctx.nursery is not None
                and of.buf.size <= ctx.inline_threshold and len(self._held) < HELD_MAX_FILES
                and self._held_bytes + of.buf.size <= HELD_MAX_BYTES):
            old, of.jid = of.jid, None  # (superseded only once the new record is in)
            self._journal_and_hold(of, path, await of.buf.read(0, of.buf.size))
            self._synced[of.ino] = of
            if old is not None:
                self.journal.done(old)
            await trio.to_thread.run_sync(self.journal.sync)
            return
        await self.commit(of)

    def _journal_and_hold(self, of: OpenFile, path: str, content: bytes) -> None:
        ctx = self._ctx
        journal = self.journal
        assert journal is not None
        if of.jid is not None:
            journal.done(of.jid)  # superseded by this close
        if of.buf.base is not None:
            of.cond = of.buf.base.etag
        elif of.pending and of.cond is None:
            of.cond = ""
        of.jid = journal.put(ctx.bucket_name, path, content, A.to_metadata(of.attrs, of.meta),
                             of.http, of.cond, ino=of.ino)
        if not of.held:
            of.refs += 1
            ctx.table.pin(of.ino)
            self._hold(of, PUBLISH_DELAY)

    def release_now(self, of: OpenFile) -> bool:
        """`release` without waiting: False if this last reference must commit."""
        if of.users == 1 and of.dirty and not of.held:
            return False
        self._drop(of)
        return True

    def attrs_changed(self, of: OpenFile) -> None:
        """Attributes of a closed, unpublished file changed: the journal follows."""
        if of.jid is not None and self.journal is not None:
            self.journal.attrs(of.jid, A.to_metadata(of.attrs, of.meta))

    def moved(self, of: OpenFile, new_path: str, cond: str | None) -> None:
        """An unpublished file was renamed: it will be published at `new_path` only."""
        of.cond = cond
        if of.jid is not None and self.journal is not None:
            self.journal.move(of.jid, new_path, cond)

    def orphaned(self, of: OpenFile | None) -> None:
        """Its name is gone (unlinked/replaced): its journal record must not come back."""
        if of is not None:
            self._synced.pop(of.ino, None)
        if of is not None and of.jid is not None and self.journal is not None:
            self.journal.done(of.jid)
            of.jid = None

    async def run_publisher(self) -> None:
        """Commit held files when they are due, many per engine call."""
        limit = trio.CapacityLimiter(PUBLISHERS)
        async with trio.open_nursery() as nursery:
            while True:
                now = self._ctx.now()
                due = [of for t, of, _ in self._held.values() if t <= now]
                for of in due:
                    self._unhold(of)
                    self._inflight[of.ino] = (of, trio.Event())
                if due and self.deletes is not None and len(self.deletes):
                    await self.deletes.settle()  # a publication may take a name just unlinked
                if due and self.markers is not None and self.markers.has_new:
                    await self.markers.settle()  # (files appear in their directories' markers)
                for i in range(0, len(due), BATCH_MAX):
                    nursery.start_soon(self._publish_batch, due[i:i + BATCH_MAX], limit, nursery)
                # at most one round per PUBLISH_TICK: what falls due meanwhile goes together
                self._next_due = max(now + PUBLISH_TICK,
                                     min((t for t, _, _ in self._held.values()), default=math.inf))
                self._wake = trio.Event()
                with trio.move_on_at(self._next_due):
                    await self._wake.wait()

    async def _publish_batch(self, files: list[OpenFile], limit: trio.CapacityLimiter,
                             nursery: trio.Nursery) -> None:
        """Publish due files whose content changed with one `Bucket.put_many`.

        Only files nobody has open and whose lock is free right now take part
        (the lock is held until their result is applied, exactly like a
        single commit); the others -- busy, attribute-only changes, orphans
        -- go through `_publish` one by one.
        """
        ctx = self._ctx
        batch: list[tuple[OpenFile, str]] = []
        for of in files:
            path = ctx.table.path_or_none(of.ino)
            if (path is not None and of.users == 1 and of.buf.changed
                    and of.buf.size <= ctx.inline_threshold and not of.lock.locked()):
                of.lock.acquire_nowait()
                batch.append((of, path))
            else:
                nursery.start_soon(self._publish, of, limit)
        if not batch:
            return
        touching = _newest_per_directory(batch)
        try:
            async with limit:
                items = [PutItem(path, await of.buf.read(0, of.buf.size), http_metadata=of.http,
                                 custom_metadata=A.to_metadata(of.attrs, of.meta),
                                 only_if=condition(of.cond), keep_links=True, ino=of.ino,
                                 touch=self._created(of, path) if i in touching else ())
                         for i, (of, path) in enumerate(batch)]
                results = await ctx.bucket.put_many(items)
            for (of, path), result in zip(batch, results):
                if isinstance(result, PreconditionFailed):
                    self._lost(of, path)
                elif isinstance(result, Exception):  # its journal record stays for a remount
                    log.error("could not publish %s: %s", path, result)
                else:
                    of.buf.committed(result)
                    self._published(of, result)
        except Exception:  # noqa: BLE001 - logged; the journal keeps them; the mount goes on
            log.exception("could not publish %d files", len(batch))
        finally:
            for of, _ in batch:
                of.lock.release()
                self._drop(of)
                self._not_inflight(of)

    async def _publish(self, of: OpenFile, limit: trio.CapacityLimiter) -> None:
        """Release the hold's reference: publishes unless someone has the file open."""
        try:
            async with limit:
                await self.release(of, publish=True)
        except Exception:  # noqa: BLE001 - logged; the mount goes on
            log.exception("could not commit inode %d", of.ino)
        finally:
            self._not_inflight(of)

    def _not_inflight(self, of: OpenFile) -> None:
        entry = self._inflight.get(of.ino)
        if entry is not None and entry[0] is of:
            del self._inflight[of.ino]
            entry[1].set()

    def in_flight(self, ino: int) -> bool:
        """The publisher has taken this file and is committing it now."""
        return ino in self._inflight

    async def wait_inflight(self, *inos: int | None) -> None:
        """Wait until none of these inodes has a publication in flight.

        A rename decides from the bucket's current state (what the target
        holds, what a local rename's publication must replace); a publication
        already taken by the publisher would change that state behind its back
        (seen: git's ref update renamed over a ref whose older version was being
        published, and the older version won).
        """
        for ino in inos:
            while ino is not None and (entry := self._inflight.get(ino)) is not None:
                await entry[1].wait()

    async def settle(self, prefix: str | None = None) -> None:
        """Publish now every held file (under directory `prefix`): rmdir/rename need the bucket right.

        Loops until none is left held or in flight: the publisher may take
        files over while we wait for others.
        """
        def under(of: OpenFile) -> bool:
            path = self._ctx.table.path_or_none(of.ino)
            return prefix is None or (path is not None and is_under(path, prefix))

        while True:
            inflight = [done for of, done in self._inflight.values() if under(of)]
            held = [of for _, of, _ in self._held.values() if under(of)]
            if not inflight and not held:
                return
            for done in inflight:
                await done.wait()
            for of in held:
                if of.held and self._held.get(of.ino, (0, None))[1] is of:
                    self._unhold(of)
                    await self.release(of, publish=True)

    def close_handle(self, fh: int) -> Handle:
        return self._handles.pop(fh)

    async def commit(self, of: OpenFile, *, conditional: bool = False) -> ObjectInfo | None:
        """Make the file durable in the bucket (caller holds `of.lock`).

        Orphans (unlinked while open) have nowhere to go and are kept local.
        `conditional`: a deferred publication, which loses to a write made
        elsewhere after the close it publishes.
        """
        path = self._ctx.table.path_or_none(of.ino)
        if path is None:
            self.orphaned(of)
            return None
        if not of.dirty:
            return None
        if self.deletes is not None and self.deletes.hidden(path):
            await self.deletes.settle()  # the old object goes first, then this one
        meta = A.to_metadata(of.attrs, of.meta)
        if of.buf.changed:
            only_if = condition(of.cond) if conditional else None
            try:
                info = await of.buf.commit(path, custom_metadata=meta, http_metadata=of.http,
                                           only_if=only_if, ino=of.ino,
                                           touch=self._created(of, path))
            except PreconditionFailed:
                self._lost(of, path)
                return None
        else:
            try:
                info = await self._ctx.bucket.update_metadata(path, custom_metadata=meta)
            except NoSuchKey:  # deleted by another writer meanwhile: the delete wins
                of.meta_dirty = False
                return None
            of.buf.base = info
        self._published(of, info)
        return info

    @staticmethod
    def _created(of: OpenFile, path: str) -> tuple:
        """A file created through the mount appears in its directory with this commit:
        the directory's times change with it (to the creation or local rename time)."""
        return parent_touch(path, of.entry_ns or of.attrs.ctime_ns, late=True) if of.pending else ()

    def _published(self, of: OpenFile, info: ObjectInfo) -> None:
        """`of`'s changes are the bucket's version `info` now."""
        self._synced.pop(of.ino, None)
        of.meta = dict(info.custom_metadata)
        of.meta_dirty = False
        of.pending = False
        of.cond = None
        if of.jid is not None and self.journal is not None:
            self.journal.done(of.jid)
        of.jid = None
        self.on_commit(of.ino, info)

    def _lost(self, of: OpenFile, path: str) -> None:
        log.info("%s was changed elsewhere after it was closed here; the newer version stays", path)
        self._abandon(of)

    def _abandon(self, of: OpenFile) -> None:
        """A deferred publication lost to a newer version: forget the local changes."""
        if of.jid is not None and self.journal is not None:
            self.journal.done(of.jid)
        of.jid = None
        of.buf.changed = False
        of.buf.dirty.clear()
        of.meta_dirty = False
        of.cond = None
        self.on_abandon(of.ino)

    async def commit_all(self) -> None:
        """Flush every dirty file (unmount, signals)."""
        for of in self.all():
            try:
                async with of.lock:
                    await self.commit(of, conditional=of.jid is not None and of.users <= 0)
            except Exception:  # noqa: BLE001 - keep flushing the others
                log.exception("could not flush inode %d", of.ino)


def _newest_per_directory(batch: list[tuple[OpenFile, str]]) -> set[int]:
    """Which files of a batch move their directory's times: per directory, the one
    created (or renamed in) last. The others' touches would rewrite the same marker
    with older times in the same transaction (~6% of a small-file write's CPU)."""
    newest: dict[str, tuple[int, int]] = {}
    for i, (of, path) in enumerate(batch):
        if of.pending:
            parent, ns = path.rpartition("/")[0], of.entry_ns or of.attrs.ctime_ns
            if parent not in newest or ns >= newest[parent][0]:
                newest[parent] = (ns, i)
    return {i for _, i in newest.values()}
