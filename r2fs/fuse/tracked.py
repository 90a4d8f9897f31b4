"""Remembering which changes in the change feed are the mount's own.

The change poller invalidates the kernel's caches for keys changed by other
writers. Invalidating after our own writes would only throw away good cache
entries (every file just written would need a fresh lookup), so each
mutation this mount makes is counted here, and the poller skips that many
changes of the key. Counts expire after a while so a change that never
showed up in the feed cannot hide a later foreign one for long.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from ..engine.store import Bucket

_EXPIRY = 30.0


class OwnChanges:
    def __init__(self) -> None:
        self._pending: dict[str, list[float]] = {}

    def expect(self, key: str) -> None:
        self._pending.setdefault(key, []).append(time.monotonic())

    def unexpect(self, key: str) -> None:
        stamps = self._pending.get(key)
        if stamps:
            stamps.pop()
            if not stamps:
                del self._pending[key]

    def is_own(self, key: str) -> bool:
        """Consume one expected change of `key` if there is one."""
        stamps = self._pending.get(key)
        if not stamps:
            return False
        stamps.pop(0)
        if not stamps:
            del self._pending[key]
        return True

    def expire(self) -> None:
        limit = time.monotonic() - _EXPIRY
        for key in [k for k, s in self._pending.items() if s[-1] < limit]:
            del self._pending[key]


class TrackedBucket:
    """A Bucket whose single-key mutations are recorded in an OwnChanges."""

    def __init__(self, bucket: Bucket, own: OwnChanges) -> None:
        self._b = bucket
        self._own = own
        self.name = bucket.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._b, name)

    async def _tracked(self, keys: Iterable[str], call: Any) -> Any:
        keys = list(keys)
        for k in keys:
            self._own.expect(k)
        try:
            return await call
        except BaseException:
            for k in keys:
                self._own.unexpect(k)
            raise

    @staticmethod
    def _touched(kw: dict[str, Any]) -> list[str]:
        """The directory markers a change also updates (engine DirTouch)."""
        return [t.key for t in kw.get("touch") or ()]

    async def put(self, key: str, value: Any, **kw: Any) -> Any:
        return await self._tracked([key, *self._touched(kw)], self._b.put(key, value, **kw))

    async def put_many(self, items: list[Any]) -> list[Any]:
        keys = [k for it in items for k in (it.key, *(t.key for t in it.touch))]
        results = await self._tracked(keys, self._b.put_many(items))
        for it, r in zip(items, results):
            if isinstance(r, Exception):  # not committed: no change of ours to skip
                for k in (it.key, *(t.key for t in it.touch)):
                    self._own.unexpect(k)
        return results

    async def put_chunks(self, key: str, chunks: Any, **kw: Any) -> Any:
        return await self._tracked([key, *self._touched(kw)], self._b.put_chunks(key, chunks, **kw))

    async def update(self, key: str, **kw: Any) -> Any:
        return await self._tracked([key, *self._touched(kw)], self._b.update(key, **kw))

    async def update_metadata(self, key: str, **kw: Any) -> Any:
        return await self._tracked([key], self._b.update_metadata(key, **kw))

    async def rename(self, src: str, dst: str, **kw: Any) -> Any:
        return await self._tracked([src, dst, *self._touched(kw)], self._b.rename(src, dst, **kw))

    async def link(self, src: str, dst: str, **kw: Any) -> Any:
        return await self._tracked([src, dst, *self._touched(kw)], self._b.link(src, dst, **kw))

    async def delete(self, keys: str | Iterable[str], **kw: Any) -> list[str]:
        keys = [keys] if isinstance(keys, str) else list(keys)
        touched = self._touched(kw)
        existed = await self._tracked([*keys, *touched], self._b.delete(keys, **kw))
        for k in set(keys) - set(existed):
            self._own.unexpect(k)
        if not existed:  # nothing deleted: the directories were not touched either
            for k in touched:
                self._own.unexpect(k)
        return existed
