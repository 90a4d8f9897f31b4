"""Directories over flat keys.

A directory `a/b` exists if its marker key `a/b/` exists or any key starts
with `a/b/`. Directories made through the mount always get a marker (so they
survive becoming empty); a directory that only exists implicitly gets one
when the mount removes its last entry. Resolution order for a path `p`: the
object `p` (file or symlink) first, then the prefix `p/` (see names.py for
why the file wins).
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass

from ..engine.errors import NoSuchKey, PreconditionFailed
from ..engine.types import Conditional, DirTouch, ObjectInfo
from . import attrs as A
from .context import MountContext
from .errmap import fail
from .inodes import ROOT, implicit_ino
from .names import dir_prefix, split, visible_name


@dataclass
class Node:
    """What a path currently is, as the bucket says."""

    path: str
    attrs: A.PosixAttrs
    size: int
    info: ObjectInfo | None  # the file object, or the directory marker (None: implicit/root)
    fixed_ino: int = 0  # a directory made here whose marker is not committed yet: its number

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attrs.mode)

    @property
    def ino(self) -> int:
        """The persistent inode number (an implicit directory's comes from its path)."""
        if self.path == "":
            return ROOT
        if self.fixed_ino:
            return self.fixed_ino
        if self.info is not None and self.info.ino:
            return self.info.ino
        return implicit_ino(self.path)

    @property
    def nlink(self) -> int:
        return self.info.nlink if self.info is not None and not self.is_dir else 1

    @property
    def rdev(self) -> int:
        return A.rdev_of(self.info.custom_metadata) if self.info is not None else 0


def file_node(ctx: MountContext, path: str, info: ObjectInfo) -> Node:
    kind = A.kind_of(info.key, info.custom_metadata)
    attrs = A.from_metadata(info.custom_metadata, kind, ctx.owner, int(info.uploaded * A.NS))
    return Node(path, attrs, info.size, info)


def dir_node(ctx: MountContext, path: str, marker: ObjectInfo | None) -> Node:
    if marker is None:
        attrs = A.from_metadata({}, stat.S_IFDIR, ctx.owner, ctx.mounted_ns)
    else:
        attrs = A.from_metadata(marker.custom_metadata, stat.S_IFDIR, ctx.owner,
                                int(marker.uploaded * A.NS))
    return Node(path, attrs, 0, marker)


async def resolve(ctx: MountContext, path: str) -> Node:
    """The node at `path`; ENOENT if neither a file nor a directory is there."""
    if path == "":
        return dir_node(ctx, "", None)
    prefix = dir_prefix(path)
    info, first = await ctx.bucket.head_and_first(path, prefix)  # (one PG round trip)
    if info is not None:
        return file_node(ctx, path, info)
    if first is None:
        raise fail(errno.ENOENT)
    return dir_node(ctx, path, first if first.key == prefix else None)


def parent_touch(path: str, ns: int, *, late: bool = False) -> tuple[DirTouch, ...]:
    """The engine change that sets the parent directory's mtime and ctime to `ns` in
    the same commit as a change of `path` (a parent without a marker, or the
    root, keeps its times in the mount only). `late`: a deferred publication, which
    must not undo times set explicitly after the change (rsync sets them last)."""
    parent = split(path)[0]
    if parent == "":
        return ()
    t = A.format_time(ns)
    return (DirTouch(dir_prefix(parent), {A.MTIME: t, A.CTIME: t},
                     newer=A.CTIME if late else None),)


async def has_entries(ctx: MountContext, path: str) -> bool:
    """Whether directory `path` holds any key besides its own marker."""
    prefix = dir_prefix(path)
    listing = await ctx.bucket.list(prefix=prefix, limit=2)
    return any(o.key != prefix for o in listing.objects)


async def keep_parent(ctx: MountContext, path: str) -> None:
    """After removing `path`: give its parent a marker if it would vanish."""
    parent, _ = split(path)
    if parent == "":
        return
    prefix = dir_prefix(parent)
    listing = await ctx.bucket.list(prefix=prefix, limit=1)
    if not listing.objects:  # (the marker keeps the number the implicit directory had)
        await _implicit_marker(ctx, parent)


async def keep_before(ctx: MountContext, parent: str, going: set[str]) -> None:
    """Before deleting the keys `going`: give directory `parent` a marker if they are all it
    holds, so it never vanishes for a moment (a lookup between the delete and a marker
    made after it found nothing). One point read for a directory with a marker."""
    prefix = dir_prefix(parent)
    try:
        await ctx.bucket.head(prefix)
        return
    except NoSuchKey:
        pass
    n = sum(k.startswith(prefix) for k in going)
    listing = await ctx.bucket.list(prefix=prefix, limit=n + 1)
    if listing.objects and all(o.key in going for o in listing.objects):
        await _implicit_marker(ctx, parent)


async def _implicit_marker(ctx: MountContext, parent: str) -> None:
    """A marker for a directory that exists only implicitly (it keeps the number it had).

    Only if it still has none: the callers saw no marker a moment ago, and a chmod or
    utimes committed since (a directory's attribute changes are group-committed) must
    not be overwritten by the defaults -- a lost chmod 0644 showed up as 0755."""
    try:
        await make_marker(ctx, parent, A.new_attrs(stat.S_IFDIR, A.DEFAULT_DIR_PERM,
                                                   ctx.owner.uid, ctx.owner.gid),
                          ino=implicit_ino(parent), create_only=True)
    except PreconditionFailed:
        pass  # a marker appeared meanwhile: the directory is kept, with its own attributes


async def make_marker(ctx: MountContext, path: str, attrs: A.PosixAttrs, *,
                      base: dict[str, str] | None = None, create_only: bool = False,
                      ino: int | None = None, touch: tuple = ()) -> ObjectInfo:
    only_if = Conditional(etag_does_not_match="*") if create_only else None
    return await ctx.bucket.put(dir_prefix(path), b"", custom_metadata=A.to_metadata(attrs, base),
                                only_if=only_if, ino=ino, touch=touch)


async def entries(ctx: MountContext, path: str, hidden: list[str] | None = None) -> list[Node]:
    """The visible entries of directory `path`, in key order (the snapshot for readdir).
    `hidden` collects names that are there but not shown (they make rmdir ENOTEMPTY)."""
    prefix = dir_prefix(path)
    out: dict[str, Node] = {}
    subdirs: list[str] = []
    cursor = None
    while True:
        listing = await ctx.bucket.list(prefix=prefix, delimiter="/", cursor=cursor, limit=1000)
        for info in listing.objects:
            name = info.key[len(prefix):]
            if info.key == prefix:
                continue
            if not visible_name(name):
                if hidden is not None:
                    hidden.append(name)
                continue
            out[name] = file_node(ctx, prefix + name, info)
        for sub in listing.delimited_prefixes:
            name = sub[len(prefix):-1]
            if visible_name(name):
                subdirs.append(name)
            elif hidden is not None:
                hidden.append(name)
        if not listing.truncated:
            break
        cursor = listing.cursor
    for name in subdirs:
        if name in out:  # a file `a` and keys under `a/`: the file wins
            continue
        try:
            marker = await ctx.bucket.head(prefix + name + "/")
        except NoSuchKey:
            marker = None
        out[name] = dir_node(ctx, prefix + name, marker)
    return [out[name] for name in sorted(out, key=lambda n: n.encode("utf-8"))]
