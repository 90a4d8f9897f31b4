"""Directory markers in group commits: mkdir, and chmod/chown/utimens of directories.

`tar x`, `rsync -a` and `cp -a` make each directory and then set its owner,
mode and times, one call after another, each of which was a synchronous
marker put. Here both are answered at once (the mount shows the new
directory and its attributes), and a moment later one `Bucket.put_many`
writes the markers of every directory made or changed meanwhile.

- A new directory (mkdir) is create-only, carries its parent's new times
  (DirTouch) and the inode number the mount reserved and showed; it is
  journaled (a `put` of the marker: kill -9 keeps it, journal.py). Until
  its commit it exists only in this mount (`creating`), like a deferred
  file; rmdir of it before then just forgets it (`cancel_new`).
- An attribute change of an existing directory is journaled as a marker
  put (no condition) and committed the same way.
rename, rmdir of a parent, file publications and unmount settle first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from ..engine.errors import PreconditionFailed
from ..engine.store import PutItem
from ..engine.types import Conditional, DirTouch
from . import attrs as A
from .context import MountContext
from .gather import GroupCommit
from .journal import Journal
from .names import dir_prefix, is_under, split

log = logging.getLogger("r2fs.fuse")


@dataclass
class Pending:
    attrs: A.PosixAttrs
    meta: dict[str, str]
    ino: int | None
    new: bool = False  # made by mkdir here, not in the bucket yet
    jid: int | None = None  # its journal record (new directories)
    touch: tuple[DirTouch, ...] = ()  # its parent's new times (new directories)


class DeferredDirAttrs(GroupCommit):
    def __init__(self, ctx: MountContext, journal: Journal | None = None) -> None:
        super().__init__()
        self._ctx = ctx
        self._journal = journal
        self._pending: dict[str, Pending] = {}
        self._committing: dict[str, Pending] = {}  # the batch being committed now
        self._new = 0  # new directories pending or being committed

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def has_new(self) -> bool:
        """Some directory made here is not in the bucket yet (or being committed)."""
        return self._new > 0

    @property
    def running(self) -> bool:
        return self._running

    def get(self, path: str) -> tuple[A.PosixAttrs, dict[str, str]] | None:
        """The directory's attributes and metadata not yet committed (or being committed)."""
        p = self._pending.get(path) or self._committing.get(path)
        return (p.attrs, p.meta) if p is not None else None

    def creating(self, path: str) -> Pending | None:
        """`path` was made here and its marker is not committed yet."""
        for batch in (self._pending, self._committing):
            p = batch.get(path)
            if p is not None and p.new:
                return p
        return None

    def creating_in(self, parent: str) -> list[tuple[str, Pending]]:
        """New directories in directory `parent` whose markers are not committed yet."""
        if not self._new:
            return []
        return [(path, p) for batch in (self._committing, self._pending)
                for path, p in batch.items() if p.new and split(path)[0] == parent]

    def creating_under(self, path: str) -> bool:
        return self._new > 0 and any(p.new and is_under(q, path)
                                     for batch in (self._committing, self._pending)
                                     for q, p in batch.items())

    def create(self, path: str, attrs: A.PosixAttrs, ino: int,
               touch: tuple[DirTouch, ...] = ()) -> None:
        """mkdir: the marker (create-only, number `ino`) is journaled now, committed soon."""
        assert self._journal is not None
        jid = self._journal.put(self._ctx.bucket_name, dir_prefix(path), b"",
                                A.to_metadata(attrs), None, "", ino=ino)
        self._pending[path] = Pending(attrs, {}, ino, new=True, jid=jid, touch=touch)
        self._new += 1
        self.kick_soon(self._ctx)

    def set(self, path: str, attrs: A.PosixAttrs, meta: dict[str, str],
            ino: int | None = None) -> None:
        """`ino`: the directory's inode number (a marker made for an implicit
        directory keeps the number it was shown with)."""
        p = self._pending.get(path)
        if p is not None:  # (a new one is still made with these attributes)
            p.attrs, p.meta = attrs, meta
            if self._journal is not None and p.jid is not None:
                self._journal.attrs(p.jid, A.to_metadata(attrs, meta))
        else:
            jid = None
            if self._journal is not None:  # (kill -9 keeps what was acknowledged)
                jid = self._journal.put(self._ctx.bucket_name, dir_prefix(path), b"",
                                        A.to_metadata(attrs, meta), None, None, ino=ino)
            self._pending[path] = Pending(attrs, meta, ino, jid=jid)
        self.kick_soon(self._ctx)  # (either thread: a directory's setattr is answered in both)

    def cancel_new(self, path: str) -> bool:
        """rmdir of a directory made here whose marker is not committed: forget it.
        False if it is not (or no longer) pending as new."""
        p = self._pending.get(path)
        if p is None or not p.new:
            return False
        self._forget(path)
        return True

    def touch(self, path: str, ns: int) -> None:
        """Entries of `path` changed at `ns`: a marker not committed yet (or being
        committed) carries the new mtime/ctime, else its put would undo the times the
        entry change committed (the marker is written whole). Either thread."""
        p = self._pending.get(path)
        if p is not None:  # (its commit is on its way already)
            p.attrs = _times(p.attrs, ns)
            if self._journal is not None and p.jid is not None:
                self._journal.attrs(p.jid, A.to_metadata(p.attrs, p.meta))
            return
        c = self._committing.get(path)
        if c is not None:  # (its put may land after the entry change: put again)
            self._ctx.in_trio(self._touch_again, path, _times(c.attrs, ns), c.meta, c.ino, ns)

    def _touch_again(self, path: str, attrs: A.PosixAttrs, meta: dict[str, str],
                     ino: int | None, ns: int) -> None:
        """(trio, soon after `touch`) A marker was being committed when its entries
        changed: put it again with the new times -- onto a change made since, if there
        is one (a chmod right after the entry change), never over it: setting the
        committing marker's whole attributes lost that chmod (0750 came back 0755)."""
        if path in self._pending:
            self.touch(path, ns)
        else:
            self.set(path, attrs, meta, ino)

    def drop_tree(self, path: str) -> None:
        """The directory (and all below) is gone: nothing to commit there."""
        for p in [p for p in self._pending if is_under(p, path)]:
            self._forget(p)
        for p in [p for p in self._committing if is_under(p, path)]:
            del self._committing[p]  # (no longer shown; its commit's journal record ends as usual)

    def _forget(self, path: str) -> None:
        p = self._pending.pop(path)
        self._new -= p.new
        if self._journal is not None and p.jid is not None:
            self._journal.done(p.jid)

    async def _commit_pending(self) -> None:
        batch = self._committing = self._pending
        self._pending = {}
        new = sum(p.new for p in batch.values())  # (counted before drop_tree may shrink it)
        try:
            await self._put(batch)
        finally:
            self._committing = {}
            self._new -= new

    async def _put(self, batch: dict[str, Pending]) -> None:
        entries = list(batch.items())  # (drop_tree may remove some from `batch` meanwhile)
        items = [PutItem(dir_prefix(path), b"", custom_metadata=A.to_metadata(p.attrs, p.meta),
                         ino=p.ino, touch=p.touch,
                         only_if=Conditional(etag_does_not_match="*") if p.new else None)
                 for path, p in entries]
        try:
            results = await self._ctx.bucket.put_many(items)
        except Exception:  # noqa: BLE001 - logged; the mount goes on (new ones: journaled)
            log.exception("could not commit the markers of %d directories", len(items))
            return
        for (path, p), result in zip(entries, results):
            if isinstance(result, PreconditionFailed) and p.new:
                log.info("directory %s was made elsewhere meanwhile; that marker stays", path)
            elif isinstance(result, Exception):
                log.error("could not commit the marker of %s: %s", path, result)
                continue  # (a new one's journal record stays for a remount)
            if p.jid is not None and self._journal is not None:
                self._journal.done(p.jid)
        # (a failed commit leaves the journal records for a remount)


def _times(a: A.PosixAttrs, ns: int) -> A.PosixAttrs:
    return replace(a, mtime_ns=max(a.mtime_ns, ns), ctime_ns=max(a.ctime_ns, ns))
