"""Noticing changes made by other writers (S3 gateway, Python API, other mounts).

The kernel caches names and attributes (entry/attr timeouts) and file pages.
Every `poll_interval` (at once on PostgreSQL's NOTIFY) this task reads the
cluster's change feed (`Cluster.change_feed`); for each changed key of our
bucket that the mount did not change itself, it tells the kernel to forget
what it cached about that path and the directories on the way to it. Together with `open()` checking the object's version
(close-to-open, handled in ops.py) this bounds staleness to about one poll.
"""

from __future__ import annotations

import logging
from typing import Callable

import trio

from .context import MountContext
from .kernel.session import Session
from .inodes import ROOT
from .names import split
from .tracked import OwnChanges

log = logging.getLogger("r2fs.fuse")


class ChangePoller:
    def __init__(self, ctx: MountContext, own: OwnChanges, is_open: Callable[[int], bool],
                 forget: Callable[..., None] = lambda *paths: None,
                 forget_all: Callable[[], None] = lambda: None) -> None:
        self._ctx = ctx
        self._own = own
        self._is_open = is_open
        self._forget = forget  # the mount's own memory of paths (ops.R2Operations)
        self._forget_all = forget_all
        self.feed = ctx.cluster.change_feed()
        self.session: Session | None = None  # kernel notifications go here once mounted

    async def run(self) -> None:
        while True:
            # (not woken by this mount's own commits: a feed read that finds only
            # changes it expects; they are read with the next foreign ones)
            await self._ctx.cluster.wait_for_change(self._ctx.options.poll_interval,
                                                    others_only=True)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - never let the poller take the mount down
                log.exception("change poll failed")

    async def poll_once(self) -> None:
        paths: set[str] = set()
        everything = False
        while True:
            changes = self.feed.read()  # one statement on PostgreSQL
            for ch in changes:
                if ch.key == "" and ch.bucket == "":
                    everything = True
                elif ch.bucket == self._ctx.bucket_name and not self._own.is_own(ch.key):
                    paths.add(ch.key[:-1] if ch.key.endswith("/") else ch.key)
            if not self.feed.more:
                break
        self._own.expire()
        if everything:
            self._forget_all()
            paths = {p for p, _ in self._ctx.table.items() if p}
        for path in paths:
            self._forget(*_with_ancestors(path))
        for path in sorted(paths):
            await self._invalidate(path)

    async def _invalidate(self, path: str) -> None:
        table = self._ctx.table
        session = self.session
        if session is None:
            return
        ino = table.known(path)
        if ino is not None and not self._is_open(ino):
            await _quietly(session.invalidate_inode, ino, False)
        # The path and every directory leading to it may have appeared or vanished
        # (names the kernel holds as negative entries, unknown here, too: new keys).
        # Expired, not unhashed: the kernel asks again (LOOKUP) before it uses them,
        # and keeps a dentry that is still what it was -- unhashing a directory that
        # is some process's cwd made its getcwd() fail (git: "unable to get current
        # working directory") at every foreign change below it.
        while path:
            parent, name = split(path)
            pino = ROOT if parent == "" else table.known(parent)
            if pino is not None:
                await _quietly(session.invalidate_entry, pino, name.encode("utf-8"), True)
                if pino != ROOT:
                    await _quietly(session.invalidate_inode, pino, True)
            path = parent


def _with_ancestors(path: str) -> list[str]:
    out = []
    while path:
        out.append(path)
        path = split(path)[0]
    return out


async def _quietly(fn: Callable[..., object], *args: object) -> None:
    """Kernel notifications may block (writeback) and fail with ENOENT: keep them off the loop."""
    try:
        await trio.to_thread.run_sync(fn, *args)
    except OSError as exc:
        log.debug("%s%s: %s", fn.__name__, args, exc)
