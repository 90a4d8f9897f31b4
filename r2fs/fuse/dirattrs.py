"""Directory attribute changes in group commits: chmod/chown/utimens of directories.

`tar x` and `cp -a` set each directory's owner, mode and times, one call
after another, each of which was a synchronous marker put. Here a change
is answered at once (the mount shows the new attributes), and a moment
later one `Bucket.put_many` writes the markers of every directory changed
meanwhile. rename and unmount settle first; rmdir drops what was pending
for the directory. Not journaled: a kill -9 within ~50 ms of the change
loses the new attributes of the directory (its entries are unaffected).
"""

from __future__ import annotations

import logging

from ..engine.store import PutItem
from . import attrs as A
from .context import MountContext
from .gather import GroupCommit
from .names import dir_prefix, is_under

log = logging.getLogger("r2fs.fuse")


class DeferredDirAttrs(GroupCommit):
    def __init__(self, ctx: MountContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._pending: dict[str, tuple[A.PosixAttrs, dict[str, str], int | None]] = {}
        #: the batch being committed: still what `get` answers until the put is done
        #: (else a lookup meanwhile reads the old marker and the mount caches that)
        self._inflight: dict[str, tuple[A.PosixAttrs, dict[str, str], int | None]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, path: str) -> tuple[A.PosixAttrs, dict[str, str]] | None:
        """The directory's attributes and metadata not yet committed, if any."""
        pending = self._pending.get(path) or self._inflight.get(path)
        return pending[:2] if pending is not None else None

    def set(self, path: str, attrs: A.PosixAttrs, meta: dict[str, str],
            ino: int | None = None) -> None:
        """`ino`: the directory's inode number (a marker made for an implicit
        directory keeps the number it was shown with)."""
        self._pending[path] = (attrs, meta, ino)
        self._kick()

    def drop_tree(self, path: str) -> None:
        """The directory (and all below) is gone: nothing to commit there."""
        for p in [p for p in self._pending if is_under(p, path)]:
            del self._pending[p]
        for p in [p for p in self._inflight if is_under(p, path)]:
            del self._inflight[p]

    async def _commit_pending(self) -> None:
        batch, self._pending = self._pending, {}
        self._inflight = batch
        items = [PutItem(dir_prefix(p), b"", custom_metadata=A.to_metadata(a, m), ino=ino)
                 for p, (a, m, ino) in batch.items()]
        try:
            results = await self._ctx.bucket.put_many(items)
        except Exception:  # noqa: BLE001 - logged; the mount goes on
            log.exception("could not commit the attributes of %d directories", len(items))
            return
        finally:
            self._inflight = {}
        for item, result in zip(items, results):
            if isinstance(result, Exception):
                log.error("could not commit the attributes of %s: %s", item.key, result)
