"""Inode numbers for paths, with the kernel's lookup counts.

Object stores have no inode numbers, so the mount hands out its own: one per
path the kernel currently knows, never reused within a mount (generation 0
is then always correct). An inode is dropped when the kernel forgets it and no
file is open on it. An unlinked (or replaced) inode that is still open becomes
an orphan: it keeps its number but has no path, so nothing reaches the bucket.
"""

from __future__ import annotations

import errno

from .kernel import api as fuse

from .errmap import fail
from .names import is_under

ROOT = fuse.ROOT_INODE


class InodeTable:
    def __init__(self) -> None:
        self._ino_of: dict[str, int] = {"": ROOT}
        self._path_of: dict[int, str | None] = {ROOT: ""}
        self._lookups: dict[int, int] = {ROOT: 1}
        self._pinned: dict[int, int] = {}  # open files / dirs per inode
        self._next = ROOT + 1

    def __len__(self) -> int:
        return len(self._path_of)

    def ino(self, path: str) -> int:
        """The inode for `path`, allocated if needed (no lookup counted)."""
        ino = self._ino_of.get(path)
        if ino is None:
            ino = self._next
            self._next += 1
            self._ino_of[path] = ino
            self._path_of[ino] = path
            self._lookups[ino] = 0
        return ino

    def known(self, path: str) -> int | None:
        return self._ino_of.get(path)

    def path(self, ino: int) -> str:
        """Path of a live inode; ENOENT for orphans and unknown numbers."""
        path = self._path_of.get(ino)
        if path is None:
            raise fail(errno.ENOENT)
        return path

    def path_or_none(self, ino: int) -> str | None:
        return self._path_of.get(ino)

    def exists(self, ino: int) -> bool:
        return ino in self._path_of

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
        path = self._path_of.pop(ino, None)
        self._lookups.pop(ino, None)
        if path is not None and self._ino_of.get(path) == ino:
            del self._ino_of[path]

    def detach(self, path: str) -> int | None:
        """`path` no longer names its inode (unlinked or replaced): orphan it."""
        ino = self._ino_of.pop(path, None)
        if ino is not None:
            self._path_of[ino] = None
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
        for p, _ in moved:
            del self._ino_of[p]
        for p, i in moved:
            q = new + p[len(old):]
            stale = self._ino_of.pop(q, None)
            if stale is not None and stale != i:
                self._path_of[stale] = None
                self._maybe_drop(stale)
            self._ino_of[q] = i
            self._path_of[i] = q

    def items(self) -> list[tuple[str, int]]:
        return list(self._ino_of.items())
