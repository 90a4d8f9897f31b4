"""Following the change feed: what a mount's change poller reads.

Why a reader object and not a sequence number: on an engine with concurrent
writers (PostgreSQL) a change can commit after others with higher seqs were
read, so "everything up to seq N" is not a position one int can hold without
waiting for every older transaction to end (which any open transaction on the
server would make forever). The engine's cursor holds what it needs
(`MetaEngine.feed_start` / `feed_read`); this wraps it for the store's API.
"""

from __future__ import annotations

from .meta import MetaEngine
from .types import Change

#: A change that stands for "anything may have changed" (changes were pruned unread).
EVERYTHING = Change(0, "", "")


class ChangeFeed:
    """Reads the changes committed after it was made, each once (blocking calls)."""

    def __init__(self, meta: MetaEngine) -> None:
        self._meta = meta
        self._cursor = meta.feed_start()
        self.more = False  # the last read was cut by its limit: read again

    def read(self, limit: int = 10000) -> list[Change]:
        """Changes not read yet, in no promised order (at most about 2 * `limit`);
        [EVERYTHING] if some were pruned before this reader got to them."""
        batch = self._meta.feed_read(self._cursor, limit)
        self._cursor = batch.cursor
        self.more = batch.more
        if batch.lost:
            return [EVERYTHING]
        return [Change(s, b, k) for s, b, k in batch.changes]
