"""Unlinks in group commits: `rm -rf` and delete loops do not wait for a metadata commit each.

An unlink of a file nobody has open is answered at once: the name leaves
the mount (inode table, node cache, listings) and the journal records the
delete (a `del` record: survives kill -9 like a deferred publication), and
a moment later (gather.py) one `Bucket.delete([...])` commits every unlink that
arrived meanwhile, in one transaction; directories that would vanish get
their marker just before it (dirs.keep_before), so they never vanish.

rmdir of an empty directory joins the same group commits: its marker key
(`dir/`, ETag None: whatever it is) is deleted with the unlinks of its
entries, in the same transaction; no marker is then made for a directory
whose own marker is being deleted or created (dirattrs.py).

Until then the object is still in the bucket: the mount hides it
(`hidden`), and everything that decides from the bucket's state -- rmdir,
rename, mkdir/symlink over the name, a publication at the same key, readdir
snapshots -- first calls `settle()`. Other interfaces (S3) see the object
for at most ~PUBLISH_TICK more, as they see deferred publications late.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..engine.types import DirTouch
from .context import MountContext
from .gather import GroupCommit
from .dirs import keep_before
from .journal import Journal
from .names import dir_prefix, split

log = logging.getLogger("r2fs.fuse")

#: Keys per Bucket.delete (one transaction).
BATCH_MAX = 1024


class DeferredDeletes(GroupCommit):
    def __init__(self, ctx: MountContext, journal: Journal) -> None:
        super().__init__()
        self._ctx = ctx
        self._journal = journal
        self._pending: dict[str, int] = {}  # path -> journal id
        self._touches: dict[str, DirTouch] = {}  # marker key -> its parent-times change
        #: directories whose marker is still to be created (dirattrs.py): never made here
        self.creating: Callable[[str], object] = lambda path: None

    def hidden(self, path: str) -> bool:
        """Unlinked (or, a directory, removed) here, not yet deleted from the bucket."""
        return bool(self._pending) and (path in self._pending or dir_prefix(path) in self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, path: str, etag: str | None, touch: tuple[DirTouch, ...] = (),
            version: str | None = None) -> None:
        """Unlink `path` (`version`, if known: what a replay deletes; else the one with
        `etag`) in the next group commit. Either thread. `path` a marker key (`dir/`)
        and `etag` None: rmdir. `touch`: its parent's new times, committed with the delete."""
        for t in touch:
            self._touches[t.key] = t  # (the latest change of each directory)
        if path in self._pending:
            return
        self._pending[path] = self._journal.delete(self._ctx.bucket_name, path, etag, version)
        self.kick_soon(self._ctx)

    async def _commit_pending(self) -> None:
        while self._pending:
            batch = list(self._pending.items())[:BATCH_MAX]
            await self._keep_parents([p for p, _ in batch])
            try:
                touch, self._touches = tuple(self._touches.values()), {}
                await self._ctx.bucket.delete([p for p, _ in batch], touch=touch)
            except Exception:  # noqa: BLE001 - logged; the files stay (shown again)
                log.exception("could not delete %d unlinked files", len(batch))
                for p, jid in batch:
                    del self._pending[p]
                    self._journal.done(jid)
                return
            for p, jid in batch:
                del self._pending[p]
                self._journal.done(jid)

    async def _keep_parents(self, keys: list[str]) -> None:
        """Directories the batch would empty get their marker first (dirs.keep_before)."""
        going = set(keys)
        removed = {k[:-1] for k in keys if k.endswith("/")}
        parents = {split(k[:-1] if k.endswith("/") else k)[0] for k in keys} - {""}
        for parent in parents:
            if parent in removed or self.hidden(parent) or self.creating(parent):
                continue  # (removed with it, or to be removed, or made soon)
            try:
                await keep_before(self._ctx, parent, going)
            except Exception:  # noqa: BLE001
                log.exception("could not keep directory %s", parent)
