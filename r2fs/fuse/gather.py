"""Changes the mount answers at once and commits a moment later, many per transaction.

A `GroupCommit` collects pending changes (the subclass keeps them) and
commits them together GATHER after the first one arrived, in one engine
call; `settle()` commits whatever is pending now, for operations that must
decide from the bucket's state. deletes.py (unlinks) and dirattrs.py
(directory attribute changes) are the two kinds.
"""

from __future__ import annotations

import trio

from .context import MountContext

#: How long changes gather before their group commit.
GATHER = 0.05


class GroupCommit:
    def __init__(self) -> None:
        self._wake = trio.Event()
        self._idle = trio.Event()  # set when a running commit ends
        self._running = False
        self._kick_queued = False  # a _kick is on its way to the trio thread

    def __len__(self) -> int:
        raise NotImplementedError

    async def _commit_pending(self) -> None:
        """Commit everything pending (the subclass's one engine call per batch)."""
        raise NotImplementedError

    def _kick(self) -> None:
        self._wake.set()

    def kick_soon(self, ctx: MountContext) -> None:
        """Wake the committer from either thread; one hand-off to trio per group commit,
        not per change (each run_sync_soon wakes the trio thread: an rm -rf paid one per
        file). A change that arrives before the commit starts needs none."""
        if not self._kick_queued:
            self._kick_queued = True
            ctx.in_trio(self._kick)

    async def run(self) -> None:
        """The committer: GATHER after a change arrives, one commit of everything pending."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(GATHER)
            self._kick_queued = False  # (what arrived until now is in this commit: no kick)
            await self._commit()

    async def settle(self) -> None:
        """Commit every pending change now (the bucket must be right for what follows)."""
        while len(self) or self._running:
            if self._running:
                await self._idle.wait()
            else:
                await self._commit()

    async def _commit(self) -> None:
        if self._running or not len(self):
            return
        self._running = True
        self._idle = trio.Event()
        try:
            await self._commit_pending()
        finally:
            self._running = False
            self._idle.set()
