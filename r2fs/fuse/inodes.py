"""The kernel's inodes: the engine's persistent inode numbers, their names, lookup counts.

Every object carries its inode number (`ObjectInfo.ino`, kept across rename
and remount and the same in every mount; see engine/inodes.py), so st_ino is
stable the way NFS clients and backup tools expect. Files the mount creates
get a number reserved from the engine before they exist in the bucket
(`InoPool`). A directory that exists only implicitly (keys under a prefix,
no marker) gets a number derived from its path (`implicit_ino`, top bit set,
never one the engine hands out); the marker the mount writes for it later
keeps that number.

A hard-linked file has several names under one number; the table keeps the
names the kernel knows (`paths`). An inode is dropped when the kernel forgets
it and no file is open on it. An inode that lost all its names while still
open is an orphan: it keeps its number but has no path, so nothing reaches
the bucket.
"""

from __future__ import annotations

import collections
import errno
import hashlib

import trio

from .errmap import fail
from .kernel import api as fuse
from .names import is_under

ROOT = fuse.ROOT_INODE
IMPLICIT = 1 << 63
RESERVE = 256  # inode numbers reserved from the engine at a time


def implicit_ino(path: str) -> int:
    """The number of a directory that has no marker object: from its path."""
    h = int.from_bytes(hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest(), "big")
    return IMPLICIT | (h & (IMPLICIT - 1))


class InoPool:
    """Inode numbers for files this mount creates, reserved RESERVE at a time."""

    def __init__(self, reserve) -> None:  # reserve: async (n) -> list of numbers
        self._reserve = reserve
        self._free: collections.deque[int] = collections.deque()
        self._lock = trio.Lock()

    def take_now(self) -> int | None:
        """A reserved number without waiting (the request thread's fast paths), or
        None when the pool is empty (the caller falls back to `take`)."""
        return self._free.popleft() if self._free else None

    async def refill(self) -> None:
        """Reserve more numbers if none are left."""
        async with self._lock:
            if not self._free:
                self._free.extend(await self._reserve(RESERVE))

    async def take(self) -> int:
        while not self._free:
            await self.refill()
        return self._free.popleft()


class InodeTable:
    def __init__(self) -> None:
        self._ino_of: dict[str, int] = {"": ROOT}
        self._paths: dict[int, list[str]] = {ROOT: [""]}  # known names per inode
        self._lookups: dict[int, int] = {ROOT: 1}
        self._pinned: dict[int, int] = {}  # open files / dirs per inode

    def __len__(self) -> int:
        return len(self._paths)

    def bind(self, path: str, ino: int) -> int:
        """`path` names inode `ino` (what the bucket says); no lookup counted."""
        old = self._ino_of.get(path)
        if old == ino:
            return ino
        if old is not None:
            self.detach(path)
        self._ino_of[path] = ino
        # the newest name first: the one `path()` hands out. After a rename elsewhere the
        # kernel keeps the old name's dentry (expired, not unhashed: invalidate.py) and so
        # the inode: its operations must go to the name the bucket has now.
        self._paths.setdefault(ino, []).insert(0, path)
        self._lookups.setdefault(ino, 0)
        return ino

    def known(self, path: str) -> int | None:
        return self._ino_of.get(path)

    def path(self, ino: int) -> str:
        """A path of a live inode; ENOENT for orphans and unknown numbers."""
        names = self._paths.get(ino)
        if not names:
            raise fail(errno.ENOENT)
        return names[0]

    def path_or_none(self, ino: int) -> str | None:
        names = self._paths.get(ino)
        return names[0] if names else None

    def paths(self, ino: int) -> list[str]:
        """Every name of `ino` the kernel knows (hard links)."""
        return list(self._paths.get(ino) or ())

    def exists(self, ino: int) -> bool:
        return ino in self._paths

    def looked_up(self, ino: int, n: int = 1) -> None:
        self._lookups[ino] = self._lookups.get(ino, 0) + n

    def forget(self, ino: int, n: int) -> None:
        if ino == ROOT or ino not in self._lookups:
            return
        self._lookups[ino] -= n
        self._maybe_drop(ino)

    def pin(self, ino: int) -> None:
        self._pinned[ino] = self._pinned.get(ino, 0) + 1

    def unpin(self, ino: int) -> None:
        left = self._pinned.get(ino, 0) - 1
        if left > 0:
            self._pinned[ino] = left
        else:
            self._pinned.pop(ino, None)
            self._maybe_drop(ino)

    def _maybe_drop(self, ino: int) -> None:
        if self._lookups.get(ino, 0) > 0 or self._pinned.get(ino):
            return
        for path in self._paths.pop(ino, None) or ():
            if self._ino_of.get(path) == ino:
                del self._ino_of[path]
        self._lookups.pop(ino, None)

    def detach(self, path: str) -> int | None:
        """`path` no longer names its inode (unlinked or replaced); with no name
        left, the inode is an orphan."""
        ino = self._ino_of.pop(path, None)
        if ino is not None:
            names = self._paths.get(ino)
            if names is not None and path in names:
                names.remove(path)
            self._maybe_drop(ino)
        return ino

    def move(self, old: str, new: str, *, tree: bool = True) -> None:
        """A rename: `old` (and, if `tree`, everything below it) is now at `new`.

        Whatever inode was at `new` (and below) must have been detached first.
        A file's rename (`tree=False`) touches one entry, not the whole table.
        """
        if tree:
            moved = [(p, i) for p, i in self._ino_of.items() if p and is_under(p, old)]
        else:
            moved = [(old, self._ino_of[old])] if old in self._ino_of else []
        for p, i in moved:
            del self._ino_of[p]
            names = self._paths.get(i)
            if names is not None and p in names:
                names.remove(p)
        for p, i in moved:
            q = new + p[len(old):]
            stale = self._ino_of.get(q)
            if stale is not None and stale != i:
                self.detach(q)
            self._ino_of[q] = i
            self._paths.setdefault(i, []).append(q)

    def items(self) -> list[tuple[str, int]]:
        return list(self._ino_of.items())
