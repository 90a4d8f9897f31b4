"""The FUSE request handlers of an r2fs mount (called by kernel/session.py).

Each handler turns a kernel request into store calls; the rules for the tree
are in dirs.py/names.py, open-file state in handles.py/writebuf.py, and
errors become errno only in errmap.py (every handler is wrapped by it).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Callable, Coroutine

from .kernel import api as fuse
from .kernel.session import Session, WouldBlock
import trio

from ..engine.extents import check_size
from ..engine.types import Conditional, DirTouch, ObjectInfo
from . import attrs as A
from .context import MountContext
from .deletes import DeferredDeletes
from .dirattrs import DeferredDirAttrs
from .dirs import (Node, dir_node, entries, file_node, has_entries, keep_parent, make_marker,
                   parent_touch, resolve)
from .errmap import fail, guard_operations
from .handles import OpenFile, OpenFiles
from .inodes import ROOT
from .names import component, dir_prefix, is_under, join, split

log = logging.getLogger("r2fs.fuse")

BLKSIZE = 1 << 20  # st_blksize: makes cp and stdio use big writes
NODE_CACHE_MAX = 20_000  # paths whose node (attributes) the mount remembers (~1 KiB each)
PREFILL_MAX = 128 * 1024  # files up to this size are handed to the page cache at open()
XATTR_NAMESPACE = "user."
AttrChange = Callable[[A.PosixAttrs, dict[str, str]], tuple[A.PosixAttrs, dict[str, str]]]


@dataclass
class DirHandle:
    ino: int
    path: str
    entries: list[tuple[str, int, A.PosixAttrs, int]] | None = None  # name, ino, attrs, size
    links: dict[int, tuple[int, int]] | None = None  # ino -> (st_nlink, st_rdev)


@guard_operations
class R2Operations:
    def __init__(self, ctx: MountContext) -> None:
        self.ctx = ctx
        self.session: Session | None = None  # the kernel connection, once INIT is answered
        # LMDB: a metadata read is a read of a local map, fine on the request thread
        # (PostgreSQL's would wait for the network: those go to trio)
        self._embedded_meta = ctx.cluster.meta.url_scheme == "lmdb"
        self.table = ctx.table
        self.files = OpenFiles(ctx)
        self.enable_writeback_cache = ctx.options.writeback
        self._dirs: dict[int, DirHandle] = {}
        self._next_dir = 1
        self._root = A.from_metadata({}, stat.S_IFDIR, ctx.owner, ctx.mounted_ns)
        self._root_meta: dict[str, str] = {}
        self._cache_version: dict[int, str] = {}  # ino -> version the page cache holds
        self._kernel_size: dict[int, int] = {}  # ino -> st_size the kernel was last given
        self._statfs: tuple[float, fuse.StatvfsData] | None = None
        # What paths are, as last read from the bucket: lookup/getattr answer from
        # here (the kernel asks again after every change in a directory). Every
        # change this mount makes updates it; the change poller drops what other
        # writers changed (the same staleness bound as the kernel's own caches).
        self._nodes: dict[str, Node] = {}
        self._nodes_gen = 0
        # Directories whose complete set of entry names the mount knows (made
        # here, or listed by readdir; kept by every change made here, dropped by
        # the change poller): a name not in it is absent without asking the
        # bucket -- the negative lookups of tar, rsync and cp -a into new trees.
        self._listed: dict[str, set[str]] = {}
        self.deletes: DeferredDeletes | None = None  # set by the mount (unlinks in group commits)
        self.dir_attrs: DeferredDirAttrs | None = None  # set by the mount (directory attributes too)
        self._dir_times: dict[str, int] = {}  # directory -> when this mount changed its entries
        # Directories' (mode, gid) as last seen, for what new entries inherit from a
        # set-group-id directory; kept apart from _nodes, which a change inside drops.
        self._dir_modes: dict[str, tuple[int, int]] = {}
        # Listed directories holding keys the mount does not show (`a//b`): rmdir
        # must ask the bucket (ENOTEMPTY), not the listing.
        self._opaque: set[str] = set()
        self.files.on_commit = self._committed
        self.files.on_abandon = self._abandoned

    def init(self, session: Session) -> None:
        """INIT is answered: what the kernel agreed to (request thread, before any request)."""
        self.session = session
        self.enable_writeback_cache = session.writeback

    # --- attributes ------------------------------------------------------------------

    def _entry(self, ino: int, attrs: A.PosixAttrs, size: int, nlink: int = 1,
               rdev: int = 0) -> fuse.EntryAttributes:
        e = fuse.EntryAttributes()
        e.st_ino = ino
        e.generation = 0
        e.entry_timeout = self.ctx.options.entry_timeout
        e.attr_timeout = self.ctx.options.attr_timeout
        e.st_mode = attrs.mode
        e.st_nlink = nlink
        e.st_uid = attrs.uid
        e.st_gid = attrs.gid
        e.st_rdev = rdev
        e.st_size = size
        self._kernel_size[ino] = size
        e.st_blksize = BLKSIZE
        e.st_blocks = (size + 511) // 512
        e.st_atime_ns = attrs.atime_ns
        e.st_mtime_ns = attrs.mtime_ns
        e.st_ctime_ns = attrs.ctime_ns
        return e

    def _open_entry(self, of: OpenFile) -> fuse.EntryAttributes:
        names = len(self.table.paths(of.ino))
        base = of.buf.base.nlink if of.buf.base is not None else 1
        nlink = max(names, base, 1) if names else 0
        return self._entry(of.ino, of.attrs, of.buf.size, nlink,
                           A.rdev_of(of.meta) if A.kind_of("", {A.MODE: str(of.attrs.mode)})
                           in A.SPECIAL_KINDS else 0)

    def _node_attrs(self, node: Node) -> A.PosixAttrs:
        """A node's attributes, with a directory's times as this mount last changed them
        (a directory without a marker keeps them only here)."""
        t = self._dir_times.get(node.path) if node.is_dir else None
        if t is None or (t <= node.attrs.mtime_ns and t <= node.attrs.ctime_ns):
            return node.attrs
        return replace(node.attrs, mtime_ns=max(t, node.attrs.mtime_ns),
                       ctime_ns=max(t, node.attrs.ctime_ns))

    def _node_entry_now(self, ino: int, node: Node) -> fuse.EntryAttributes:
        return self._entry(ino, self._node_attrs(node), node.size, node.nlink, node.rdev)

    def _node_entry(self, ino: int, node: Node) -> fuse.EntryAttributes:
        of = self.files.get(ino)
        if of is not None and not node.is_dir:
            return self._open_entry(of)
        return self._node_entry_now(ino, node)

    def _dir_changed(self, *paths: str, now: int | None = None,
                     late: bool = False) -> tuple[DirTouch, ...]:
        """Entries of the parents of `paths` changed now: their mtime and ctime move, in
        the same commit as the change (the DirTouch returned) and here at once.
        `late`: the change is committed later (a group commit; dirs.parent_touch)."""
        now = now or A.now_ns()
        touches: list[DirTouch] = []
        for parent in {split(p)[0] for p in paths}:
            if len(self._dir_times) >= NODE_CACHE_MAX:
                self._dir_times.clear()
                self.forget_all_nodes()  # (their times may be older than what was cleared)
            self._dir_times[parent] = now
            if self.dir_attrs is not None:
                self.dir_attrs.touch(parent, now)  # (its pending chmod must not undo them)
            # the parent's cached node stays: only its times changed, and _dir_times has
            # them (forgetting it made the getattr that follows every create/unlink a
            # bucket read in trio: ~100 µs of CPU per file in rm -rf)
            self._nodes_gen += 1
            if parent == "":
                self._root = replace(self._root, mtime_ns=now, ctime_ns=now)
            touches.extend(parent_touch(parent + "/x", now, late=late))
        return tuple(touches)

    async def _resolve(self, path: str) -> Node:
        try:
            return self._known_node(path)
        except WouldBlock:
            pass
        gen = self._nodes_gen
        node = self._pending_attrs(await resolve(self.ctx, path))
        if gen == self._nodes_gen:  # nothing was invalidated while we read
            self._remember(path, node)
        return node

    def _remember(self, path: str, node: Node) -> None:
        """Keep what lookup/getattr need -- not the content of inline objects (memory)."""
        if len(self._nodes) >= NODE_CACHE_MAX:
            self._nodes.clear()
        if node.info is not None and node.info.inline_data is not None:
            node = replace(node, info=replace(node.info, inline_data=None, chunks=()))
        self._nodes[path] = node
        if node.is_dir:
            self._seen_dir(path, node.attrs)

    def _seen_dir(self, path: str, a: A.PosixAttrs) -> None:
        if len(self._dir_modes) >= NODE_CACHE_MAX:
            self._dir_modes.clear()
        self._dir_modes[path] = (a.mode, a.gid)

    def _new_attrs_now(self, path: str, kind: int, perm: int,
                       ctx: fuse.RequestContext) -> A.PosixAttrs:
        """A new entry's attributes; in a set-group-id directory it takes the directory's
        group (a new directory the bit too), as on Linux. WouldBlock: parent unseen."""
        parent = split(path)[0]
        pmode, pgid = (self._root.mode, self._root.gid) if parent == "" else (
            self._dir_modes.get(parent) or self._unseen())
        gid = ctx.gid
        if pmode & stat.S_ISGID:
            gid = pgid
            perm |= stat.S_ISGID if kind == stat.S_IFDIR else 0
        return A.new_attrs(kind, perm, ctx.uid, gid)

    @staticmethod
    def _unseen() -> tuple[int, int]:
        raise WouldBlock

    async def _new_attrs(self, path: str, kind: int, perm: int,
                         ctx: fuse.RequestContext) -> A.PosixAttrs:
        try:
            return self._new_attrs_now(path, kind, perm, ctx)
        except WouldBlock:
            self._seen_dir(split(path)[0], (await self._resolve(split(path)[0])).attrs)
            return self._new_attrs_now(path, kind, perm, ctx)

    def _pending_attrs(self, node: Node) -> Node:
        """A directory whose attribute change is not committed yet shows the new attributes."""
        if self.dir_attrs is None or not node.is_dir:
            return node
        pending = self.dir_attrs.get(node.path)
        new = self.dir_attrs.creating(node.path)
        if new is not None:  # made here (the bucket may show it implicitly): its number
            node = replace(node, fixed_ino=new.ino or 0)
        return node if pending is None else replace(node, attrs=pending[0])

    def _listed_absent(self, path: str) -> bool:
        """`path`'s directory is listed and does not hold it."""
        parent, name = split(path)
        names = self._listed.get(parent)
        return names is not None and name not in names

    def _check_listed(self, path: str) -> None:
        if self._listed_absent(path):
            raise fail(errno.ENOENT)

    def _listing_add(self, path: str) -> None:
        names = self._listed.get(split(path)[0])
        if names is not None:
            names.add(split(path)[1])
        self._nodes_gen += 1

    def _listing_discard(self, path: str) -> None:
        names = self._listed.get(split(path)[0])
        if names is not None:
            names.discard(split(path)[1])
        self._nodes_gen += 1

    def _listing_drop_tree(self, path: str) -> None:
        for p in [p for p in self._listed if is_under(p, path)]:
            del self._listed[p]
        self._nodes_gen += 1

    def _local_file(self, node: Node) -> int | None:
        """The inode of a file open (or held) here at `node`'s path that is not the object the
        bucket lists there (renamed over it, not yet published): the name is that file's."""
        known = self.table.known(node.path)
        if known is None or known == node.ino or node.is_dir or self.files.get(known) is None:
            return None
        return known

    def deletes_hidden(self, path: str) -> bool:
        return self.deletes is not None and self.deletes.hidden(path)

    def changed_elsewhere(self, *paths: str) -> None:
        """The change poller saw other writers change these paths (and their directories)."""
        self.forget_paths(*paths)
        for p in paths:
            self._listed.pop(p, None)
            self._dir_modes.pop(p, None)
        self._listed.pop("", None)  # (the root is no path of its own there)

    def forget_paths(self, *paths: str) -> None:
        """These paths changed (here or elsewhere): read them from the bucket again."""
        for p in paths:
            self._nodes.pop(p, None)
        self._nodes_gen += 1

    def forget_all_nodes(self) -> None:
        self._nodes.clear()
        self._nodes_gen += 1

    def forget_all_paths(self) -> None:
        self._nodes.clear()
        self._dir_modes.clear()
        self._listed.clear()
        self._nodes_gen += 1

    async def _keep_parent(self, path: str) -> None:
        parent = split(path)[0]
        self.forget_paths(parent)
        if self.dir_attrs is not None and self.dir_attrs.creating(parent) is not None:
            return  # its marker is made soon (dirattrs.py)
        if self.deletes is not None and self.deletes.hidden(parent):
            return  # removed here, its marker's delete not committed yet
        await keep_parent(self.ctx, path)

    async def _exists(self, path: str) -> Node | None:
        try:
            return await self._resolve(path)
        except fuse.FUSEError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def _child(self, parent: int, name: bytes) -> str:
        return join(self.table.path(parent), component(name))

    async def lookup(self, parent_inode: int, name: bytes, ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        try:
            return self.now_lookup(parent_inode, name, ctx)
        except WouldBlock:  # (not open, not cached)
            pass
        path = self._child(parent_inode, name)
        try:
            node = await self._resolve(path)
        except fuse.FUSEError as exc:
            if exc.errno == errno.ENOENT:
                return self._negative()
            raise
        return self._looked_up(path, node)

    def _looked_up(self, path: str, node: Node) -> fuse.EntryAttributes:
        entry = self._node_entry(self.table.bind(path, node.ino), node)
        self.table.looked_up(entry.st_ino)
        return entry

    def _negative(self) -> fuse.EntryAttributes:
        """"No such name", cached by the kernel for entry_timeout (the poller invalidates it)."""
        e = fuse.EntryAttributes()
        e.entry_timeout = self.ctx.options.entry_timeout
        return e

    # --- answered from memory in the request thread (kernel/session.py) ---------
    # Each `now_<op>` runs under the state lock, between trio task steps; it
    # answers without waiting or raises WouldBlock, and then the async `<op>`
    # runs in trio instead. No trio primitive is used here but Lock.locked().

    def _known_node(self, path: str) -> Node:
        """The cached node of `path`; ENOENT if a listing says it is absent; else WouldBlock."""
        if path == "":
            return Node("", self._root, 0, None)
        if self.deletes is not None and self.deletes.hidden(path):
            raise fail(errno.ENOENT)  # unlinked here, its delete not committed yet
        node = self._nodes.get(path)
        if node is not None:
            return node
        new = self.dir_attrs.creating(path) if self.dir_attrs is not None else None
        if new is not None:  # made here, its marker not committed yet
            return Node(path, new.attrs, 0, None, fixed_ino=new.ino or 0)
        self._check_listed(path)
        raise WouldBlock

    def now_lookup(self, parent_inode: int, name: bytes, ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        path = self._child(parent_inode, name)
        known = self.table.known(path)
        of = self.files.get(known) if known is not None else None
        if of is not None:
            entry = self._open_entry(of)
            self.table.looked_up(entry.st_ino)
            return entry
        if self._listed_absent(path):
            return self._negative()
        return self._looked_up(path, self._known_node(path))

    def now_forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            self.table.forget(ino, n)
            if not self.table.exists(ino):
                self._cache_version.pop(ino, None)
                self._kernel_size.pop(ino, None)

    def now_getattr(self, inode: int, ctx: fuse.RequestContext | None = None) -> fuse.EntryAttributes:
        of = self.files.get(inode)
        if of is not None:
            return self._open_entry(of)
        if inode == ROOT:
            return self._entry(ROOT, self._root, 0)
        return self._node_entry_now(inode, self._known_node(self.table.path(inode)))

    def now_setattr(self, inode: int, attr: fuse.EntryAttributes, fields: fuse.SetattrFields,
                    fh: int | None, ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        """Attribute-only changes of an open (or closed, unpublished) file: its commit carries
        them; on embedded metadata also a directory's (dirattrs' group commit)."""
        of = self.files.get(inode)
        if of is None and not fields.update_size and self._known_dir(inode):
            self._set_dir_attrs_now(inode, self._attr_change(attr, fields))
            return self.now_getattr(inode)
        if of is None or fields.update_size or of.lock.locked() or self.table.path_or_none(inode) is None:
            raise WouldBlock
        of.attrs, of.meta = self._attr_change(attr, fields)(of.attrs, of.meta)
        of.meta_dirty = True
        self.files.attrs_changed(of)
        return self._open_entry(of)

    def _known_dir(self, inode: int) -> bool:
        """A directory (not the root) whose attribute change never waits here: embedded
        metadata, deferred directory changes, and a cached node or a pending change
        (rsync -a sets every directory's times and mode last: ~600 trio tasks per tree)."""
        if not self._embedded_meta or self.dir_attrs is None or inode == ROOT:
            return False
        path = self.table.path_or_none(inode)
        if path is None:
            return False
        node = self._nodes.get(path)
        return (node is not None and node.is_dir) or self.dir_attrs.get(path) is not None

    def _set_dir_attrs_now(self, inode: int, change: AttrChange) -> None:
        """`_change` of a directory, here (`_known_dir`): its marker read from the map."""
        assert self.dir_attrs is not None
        path = self.table.path(inode)
        pending = self.dir_attrs.get(path)
        node = (Node(path, pending[0], 0, None) if pending is not None
                else _run_now(resolve(self.ctx, path)))  # fresh: its metadata is rewritten
        if not node.is_dir:
            raise WouldBlock  # (a file now, changed elsewhere: the async path)
        self._dir_change(inode, path, node, pending, change)

    def now_open(self, inode: int, flags: int, ctx: fuse.RequestContext) -> fuse.FileInfo:
        """Another open of a file that is open (or held) with local changes: no bucket read."""
        of = self.files.get(inode)
        if of is None and self._embedded_meta and not flags & os.O_TRUNC:
            return self._open_closed_now(inode, flags)
        if (of is None or not (of.users > 0 or of.buf.changed) or of.lock.locked()
                or stat.S_ISLNK(of.attrs.mode) or self.table.path_or_none(inode) is None):
            raise WouldBlock
        if flags & os.O_TRUNC:
            raise WouldBlock
        of.refs += 1
        self.table.pin(inode)
        return self._file_info(of, flags)

    def _open_closed_now(self, inode: int, flags: int) -> fuse.FileInfo:
        """An open of a file nobody has open, on embedded metadata (LMDB): the object is
        read from the map here, a small one handed to the page cache, without a trio
        task (that hand-off was a third of a small-file read's CPU). Anything that has
        to wait (the kernel's cached size must go first) goes to the async `open`."""
        path = self.table.path_or_none(inode)
        if path is None:
            raise WouldBlock
        info = self.ctx.bucket.head_now(path)
        told = self._kernel_size.get(inode)
        if told is not None and told != info.size:
            raise WouldBlock  # (_opened_newer: a notification, from a worker thread)
        node = self._nodes.get(path)
        if node is not None and node.info is not None and node.info.version != info.version:
            self.forget_paths(path)
        of = self.files.adopt(inode, info)
        try:
            if stat.S_ISLNK(of.attrs.mode):
                raise fail(errno.ELOOP)
            return self._file_info(of, flags, self._prefill_now(of, flags))
        except BaseException:
            self.files.drop_now(of)
            raise

    def now_write(self, fh: int, off: int, buf: memoryview, kill_suidgid: bool = False) -> int:
        h = self.files.handle(fh)
        of = h.file
        if of.lock.locked():
            raise WouldBlock
        if h.append and not self.enable_writeback_cache:
            off = of.buf.size
        n = of.buf.write_now(off, buf)
        if n is None:
            raise WouldBlock  # a partly overwritten chunk must first be read
        self._written(of, kill_suidgid)
        return n

    def now_flush(self, fh: int) -> None:
        of = self.files.handle(fh).file
        if of.lock.locked() or not self.files.flush_now(of):
            raise WouldBlock

    def now_release(self, fh: int) -> None:
        h = self.files.handle(fh)
        if h.file.lock.locked() or not self.files.release_now(h.file):
            raise WouldBlock
        self.files.close_handle(fh)

    def now_opendir(self, inode: int, ctx: fuse.RequestContext) -> int:
        path = self.table.path(inode)
        if not self._known_node(path).is_dir:
            raise fail(errno.ENOTDIR)
        return self._open_dir(inode, path)

    def now_readdir(self, fh: int, start_id: int, token: fuse.ReaddirToken) -> None:
        d = self._dirs[fh]
        if d.entries is None or start_id == 0:
            if not self._embedded_meta:
                raise WouldBlock
            d.entries = _run_now(self._snapshot(d))
        self._readdir_from(d, start_id, token)

    def now_releasedir(self, fh: int) -> None:
        d = self._dirs.pop(fh)
        self.table.unpin(d.ino)

    def now_getxattr(self, inode: int, name: bytes, ctx: fuse.RequestContext) -> bytes:
        return self._xattr(self._known_meta(inode), name)

    def now_listxattr(self, inode: int, ctx: fuse.RequestContext) -> list[bytes]:
        return [k.encode("utf-8") for k in A.get_xattrs(self._known_meta(inode))]

    def now_statfs(self, ctx: fuse.RequestContext) -> fuse.StatvfsData:
        cached = self._statfs
        if cached is not None and time.monotonic() - cached[0] < 2.0:
            return cached[1]
        raise WouldBlock

    def _known_meta(self, inode: int) -> dict[str, str]:
        of = self.files.get(inode)
        if of is not None:
            return of.meta
        if inode == ROOT:
            return self._root_meta
        path = self.table.path(inode)
        pending = self.dir_attrs.get(path) if self.dir_attrs is not None else None
        if pending is not None:
            return pending[1]
        node = self._known_node(path)
        return node.info.custom_metadata if node.info is not None else {}

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        self.now_forget(inode_list)

    async def getattr(self, inode: int, ctx: fuse.RequestContext | None = None) -> fuse.EntryAttributes:
        try:
            return self.now_getattr(inode, ctx)
        except WouldBlock:
            pass
        node = await self._resolve(self.table.path(inode))
        return self._node_entry_now(inode, node)

    async def setattr(self, inode: int, attr: fuse.EntryAttributes, fields: fuse.SetattrFields,
                      fh: int | None, ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        change = self._attr_change(attr, fields)
        size = attr.st_size if fields.update_size else None
        if size is not None:
            check_size(size, self.ctx.context(self.table.path_or_none(inode) or ""))  # EFBIG
        await self._change(inode, change, truncate=size)
        return await self.getattr(inode)

    @staticmethod
    def _attr_change(attr: fuse.EntryAttributes, fields: fuse.SetattrFields) -> AttrChange:
        now = A.now_ns()

        def change(a: A.PosixAttrs, meta: dict[str, str]) -> tuple[A.PosixAttrs, dict[str, str]]:
            if fields.update_mode:
                a = a.with_perm(attr.st_mode)
            if fields.update_uid:
                a = replace(a, uid=attr.st_uid)
            if fields.update_gid:
                a = replace(a, gid=attr.st_gid)
            if fields.update_mtime:
                a = replace(a, mtime_ns=attr.st_mtime_ns)
            if fields.update_atime:
                a = replace(a, atime_ns=attr.st_atime_ns)
            if fields.update_size:
                a = replace(a, mtime_ns=now)
            chown = fields.update_uid or fields.update_gid or not (
                fields.update_mode or fields.update_size or fields.update_atime
                or fields.update_mtime)  # (nothing but ctime: chown(f, -1, -1))
            if chown and not fields.update_mode:
                a = _killed_suidgid(a)  # chown drops set-id bits (KILLPRIV_V2: ours to do)
            elif fields.kill_suidgid:
                a = _killed_suidgid(a)
            return replace(a, ctime_ns=now), meta

        return change

    def _dir_change(self, inode: int, path: str, node: Node,
                    pending: tuple[A.PosixAttrs, dict[str, str]] | None,
                    change: AttrChange) -> tuple[A.PosixAttrs, dict[str, str]]:
        """A directory's attribute change (its node fresh from the bucket, or its pending
        change); with deferred directory changes it joins their next group commit."""
        meta = pending[1] if pending is not None else (
            dict(node.info.custom_metadata) if node.info else {})
        new_attrs, new_meta = change(node.attrs if pending is not None
                                     else self._node_attrs(node), meta)
        self._dir_times.pop(path, None)  # explicit times win over entry changes
        self._seen_dir(path, new_attrs)
        if self.dir_attrs is not None:
            self.dir_attrs.set(path, new_attrs, new_meta, ino=inode)  # committed with others soon
            cached = self._nodes.get(path)
            self._remember(path, Node(path, new_attrs, 0, cached.info if cached else node.info,
                                      fixed_ino=inode))
        return new_attrs, new_meta

    async def _change(self, inode: int, change: AttrChange, truncate: int | None = None) -> None:
        """Apply an attribute/metadata change to a file, symlink or directory."""
        if inode == ROOT:
            if truncate is not None:
                raise fail(errno.EISDIR)
            self._dir_times.pop("", None)
            self._root, self._root_meta = change(self._root, self._root_meta)
            return
        of = self.files.get(inode)
        if of is None:
            path = self.table.path(inode)
            pending = self.dir_attrs.get(path) if self.dir_attrs is not None else None
            node = (Node(path, pending[0], 0, None) if pending is not None
                    else await resolve(self.ctx, path))  # fresh: its metadata is rewritten
            if node.is_dir:
                if truncate is not None:
                    raise fail(errno.EISDIR)
                if self.dir_attrs is None:
                    new_attrs, new_meta = self._dir_change(inode, path, node, pending, change)
                    self.forget_paths(path)
                    await make_marker(self.ctx, path, new_attrs, base=new_meta, ino=inode)
                    self.forget_paths(path)
                    return
                self._dir_change(inode, path, node, pending, change)
                return
            of = await self.files.acquire(inode, path, node.info)
        else:
            of = await self.files.acquire(inode, "")
        try:
            async with of.lock:
                if truncate is not None:
                    if stat.S_ISLNK(of.attrs.mode):
                        raise fail(errno.EINVAL)
                    await of.buf.truncate(truncate)
                of.attrs, of.meta = change(of.attrs, of.meta)
                of.meta_dirty = True
                self.files.attrs_changed(of)
        except BaseException:
            await self.files.release(of)
            raise
        if of.users > 1:
            await self.files.release(of)  # open elsewhere: its flush/close commits
        elif truncate is None:
            await self.files.linger(of)  # more attribute changes usually follow
        else:
            await self.files.release(of)  # the last reference commits now

    # --- names -------------------------------------------------------------------------

    def now_readlink(self, inode: int, ctx: fuse.RequestContext) -> bytes:
        """A symlink made here and not yet published: its target is in memory."""
        of = self.files.get(inode)
        if of is None or not stat.S_ISLNK(of.attrs.mode):
            raise WouldBlock
        data = of.buf.read_now(0, of.buf.size)
        if data is None:
            raise WouldBlock
        return bytes(data)

    async def readlink(self, inode: int, ctx: fuse.RequestContext) -> bytes:
        of = self.files.get(inode)
        if of is not None and stat.S_ISLNK(of.attrs.mode):
            async with of.lock:
                return bytes(await of.buf.read(0, of.buf.size))
        node = await resolve(self.ctx, self.table.path(inode))  # (cached nodes carry no content)
        if not stat.S_ISLNK(node.attrs.mode) or node.info is None:
            raise fail(errno.EINVAL)
        return await self.ctx.bucket.read_range(node.info, 0, node.size)

    async def _create_object(self, parent: int, name: bytes, kind: int, perm: int,
                             ctx: fuse.RequestContext, content: bytes = b"",
                             rdev: int = 0, checked: bool = False) -> fuse.EntryAttributes:
        """A new object committed at once (symlinks, mknod): create-only, so never a clobber.
        `checked`: the caller settled pending deletes and found the name free."""
        path = self._child(parent, name)
        if not checked:
            await self._settle_deletes(path)
            if await self._exists(path) is not None:
                raise fail(errno.EEXIST)
        attrs = await self._new_attrs(path, kind, perm, ctx)
        meta = A.to_metadata(attrs)
        if rdev:
            meta[A.RDEV] = str(rdev)
        info = await self.ctx.bucket.put(path, content, custom_metadata=meta,
                                         only_if=Conditional(etag_does_not_match="*"),
                                         touch=self._dir_changed(path, now=attrs.ctime_ns))
        self.forget_paths(path)
        self._listing_add(path)
        ino = self.table.bind(path, info.ino)
        node = file_node(self.ctx, path, info)
        self.table.looked_up(ino)
        return self._node_entry_now(ino, node)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        """Regular files, FIFOs, sockets, character and block devices: objects whose
        mode (and rdev) say what they are, as s3fs stores them; the kernel runs
        pipes, sockets and devices itself."""
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in (stat.S_IFREG, *A.SPECIAL_KINDS):
            raise fail(errno.EINVAL)
        keep = rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
        return await self._create_object(parent_inode, name, kind, mode, ctx, rdev=keep)

    def _free_now(self, path: str) -> None:
        """The name is known to be free without asking the bucket, else WouldBlock."""
        if (self.deletes is None or self.deletes.hidden(path) or not self._listed_absent(path)
                or self.table.known(path) is not None and self.files.get(self.table.known(path))):
            raise WouldBlock

    def now_symlink(self, parent_inode: int, name: bytes, target: bytes,
                    ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        """In bulk (tar, rsync, cp -a): published like a small file closed in bulk."""
        path = self._child(parent_inode, name)
        self._free_now(path)
        return self._symlink_deferred(path, bytes(target), ctx)

    def _symlink_deferred(self, path: str, target: bytes,
                          ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        """A new symlink held in memory, journaled, published by the next publisher round
        (handles.py); WouldBlock when it must be committed now (a lone symlink)."""
        if not self.files.bulk_now(len(target)):
            raise WouldBlock
        assert self.ctx.inos is not None
        attrs = self._new_attrs_now(path, stat.S_IFLNK, A.SYMLINK_PERM, ctx)
        ino = self.ctx.inos.take_now()
        if ino is None:
            raise WouldBlock
        self.table.bind(path, ino)
        self._dir_changed(path, now=attrs.ctime_ns)  # (committed with the publication)
        of = self.files.symlink_now(ino, attrs, path, target)
        self.table.looked_up(ino)
        self._listing_add(path)
        return self._open_entry(of)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        path = self._child(parent_inode, name)
        await self._settle_deletes(path)
        if await self._exists(path) is not None:
            raise fail(errno.EEXIST)
        try:
            return self._symlink_deferred(path, bytes(target), ctx)
        except WouldBlock:  # a lone symlink (or no number reserved): committed now
            pass
        return await self._create_object(parent_inode, name, stat.S_IFLNK, A.SYMLINK_PERM, ctx,
                                         bytes(target), checked=True)

    def now_mkdir(self, parent_inode: int, name: bytes, mode: int,
                  ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        """A new directory shown at once; its marker is committed with others (dirattrs.py)."""
        path = self._child(parent_inode, name)
        self._free_now(path)
        return self._mkdir_deferred(path, mode, ctx)

    def _mkdir_deferred(self, path: str, mode: int, ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        if self.dir_attrs is None or self.ctx.inos is None:
            raise WouldBlock
        attrs = self._new_attrs_now(path, stat.S_IFDIR, mode, ctx)  # (before taking a number)
        ino = self.ctx.inos.take_now()
        if ino is None:
            raise WouldBlock
        self._seen_dir(path, attrs)  # (what its new entries inherit)
        self.dir_attrs.create(path, attrs, ino, self._dir_changed(path, now=attrs.ctime_ns,
                                                                  late=True))
        self.forget_paths(path)
        self._listing_add(path)
        self._listed[path] = set()
        self.table.bind(path, ino)
        self.table.looked_up(ino)
        return self._entry(ino, attrs, 0)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        path = self._child(parent_inode, name)
        await self._settle_deletes(path)
        if await self._exists(path) is not None:
            raise fail(errno.EEXIST)
        if self.dir_attrs is not None and self.ctx.inos is not None:
            while True:
                try:
                    return self._mkdir_deferred(path, mode, ctx)
                except WouldBlock:  # no inode number reserved, or the directory unseen
                    await self._unblock_new(path)
        attrs = await self._new_attrs(path, stat.S_IFDIR, mode, ctx)
        marker = await make_marker(self.ctx, path, attrs, create_only=True,
                                   touch=self._dir_changed(path, now=attrs.ctime_ns))
        self.forget_paths(path)
        self._listing_add(path)
        self._listed[path] = set()
        self._seen_dir(path, attrs)
        ino = self.table.bind(path, marker.ino)
        self.table.looked_up(ino)
        return self._entry(ino, dir_node(self.ctx, path, marker).attrs, 0)

    def now_unlink(self, parent_inode: int, name: bytes, ctx: fuse.RequestContext) -> None:
        path = self._child(parent_inode, name)
        known = self.table.known(path)
        if known is not None and self.files.get(known) is not None:
            raise WouldBlock  # open or unpublished: the async path
        self._unlink_closed(path, self._known_node(path))

    def _unlink_closed(self, path: str, node: Node) -> None:
        """A file nobody has open leaves the mount now; its delete joins the next group commit."""
        if node.is_dir:
            raise fail(errno.EISDIR)
        if not self._deferrable(node):
            raise WouldBlock
        assert self.deletes is not None and node.info is not None
        self.forget_paths(path)
        self.table.detach(path)
        self._listing_discard(path)
        # the parent's times move now (here) and in the group commit (late: an
        # explicit utimes of the directory meanwhile wins)
        self.deletes.add(path, node.info.etag, self._dir_changed(path, late=True),
                         version=node.info.version)  # (a replay deletes by version)

    def _deferrable(self, node: Node) -> bool:
        """Whether an unlink of closed `node` can join a group commit: not a name of a
        hard-linked file (the other names' st_nlink must change with it)."""
        return self.deletes is not None and node.info is not None and node.nlink <= 1

    async def _drop_replaced(self, of: OpenFile, path: str, touch: tuple[DirTouch, ...] = ()) -> None:
        """An unpublished file leaves `path`: if it was to replace an object there, that goes too.

        (git renames `master.lock` over `master`, then `pack-refs` unlinks
        `master` before the publication: the old `master` must not stay.)
        """
        if not of.cond:  # None: never published anything; "": nothing there to replace
            return
        if self.deletes is not None:
            self.deletes.add(path, of.cond, touch)
        else:
            await self.ctx.bucket.delete(path, touch=touch)
        of.cond = ""

    async def _settle_deletes(self, path: str | None = None) -> None:
        """Commit pending unlinks first (all, or if `path` is one): what follows reads the bucket."""
        if self.deletes is not None and len(self.deletes) and (path is None or self.deletes.hidden(path)):
            await self.deletes.settle()

    async def unlink(self, parent_inode: int, name: bytes, ctx: fuse.RequestContext) -> None:
        path = self._child(parent_inode, name)
        known = self.table.known(path)
        of = self.files.get(known) if known is not None else None
        if of is None:
            node = await self._resolve(path)
            if node.is_dir:
                raise fail(errno.EISDIR)
            if self._deferrable(node):
                self._unlink_closed(path, node)
                return
        async with _locked(of):  # no commit of an open file may land after the delete
            others = [p for p in self.table.paths(known) if p != path] if known else []
            if of is not None and of.users > 0 and not others:
                await of.buf.materialize()  # the open handles keep the content, locally
            self.forget_paths(path, *others)  # (the other names' st_nlink changed)
            if of is not None and of.pending:  # (its parent's times move all the same)
                await self._drop_replaced(of, path, self._dir_changed(path, late=True))
            elif not await self.ctx.bucket.delete(path, touch=self._dir_changed(path)):
                raise fail(errno.ENOENT)
            self.table.detach(path)
            self._listing_discard(path)
            self._name_gone(of, known)
        if others:  # its st_nlink changed: so does its ctime (names known here)
            await self._touch_ctime(others[0])
        if of is None or not of.pending:  # (an unpublished file's parent is as it was)
            await self._keep_parent(path)

    def now_rmdir(self, parent_inode: int, name: bytes, ctx: fuse.RequestContext) -> None:
        """An empty directory whose complete listing the mount knows (rm -rf read it just
        before): removed here now, its marker deleted in the unlinks' group commit."""
        path = self._child(parent_inode, name)
        if self.deletes is None or self.dir_attrs is None:
            raise WouldBlock
        if self.deletes.hidden(path):
            raise fail(errno.ENOENT)
        names = self._listed.get(path)  # (only directories have one)
        if names is None or path in self._opaque or self.dir_attrs.running:
            raise WouldBlock
        if names:  # (it holds files and directories made here and not yet committed, too)
            raise fail(errno.ENOTEMPTY)
        known = self.table.known(path)
        if known is not None and self.files.get(known) is not None:
            raise WouldBlock
        self._rmdir_deferred(path)

    def _rmdir_deferred(self, path: str) -> None:
        assert self.deletes is not None and self.dir_attrs is not None
        if self.dir_attrs.cancel_new(path):
            self._dir_changed(path)  # (never in the bucket: nothing to delete)
        else:
            self.deletes.add(dir_prefix(path), None, self._dir_changed(path, late=True))
        self.dir_attrs.drop_tree(path)
        self.forget_paths(path)
        self.table.detach(path)
        self._listing_discard(path)
        self._listing_drop_tree(path)
        self._opaque.discard(path)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: fuse.RequestContext) -> None:
        path = self._child(parent_inode, name)
        node = await self._resolve(path)
        if not node.is_dir:
            raise fail(errno.ENOTDIR)
        await self.files.settle(path)  # closed files not yet published count as entries
        await self._settle_deletes()  # and unlinked ones do not
        if self.dir_attrs is not None and self.dir_attrs.creating_under(path):
            await self.dir_attrs.settle()  # and directories made here do
        if await has_entries(self.ctx, path):
            raise fail(errno.ENOTEMPTY)
        if self.deletes is not None and self.dir_attrs is not None:
            await self.dir_attrs.settle()  # (no marker put may land after its delete)
            self._rmdir_deferred(path)
            return
        self.forget_paths(path)
        if self.dir_attrs is not None:
            self.dir_attrs.drop_tree(path)
        await self.ctx.bucket.delete(dir_prefix(path), touch=self._dir_changed(path))
        self.table.detach(path)
        self._listing_discard(path)
        self._listing_drop_tree(path)
        await self._keep_parent(path)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: fuse.RequestContext) -> None:
        if flags & fuse.RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        try:
            await self._rename(old, new, flags)
        finally:  # (whatever happened, the listings must not claim more than we know)
            if old != new:
                self._listing_drop_tree(old)
                self._listing_drop_tree(new)
                self._listing_discard(old)
                self._listing_discard(new)
        if old != new:
            self._listing_add(new)

    def now_rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                   name_new: bytes, flags: int, ctx: fuse.RequestContext) -> None:
        """An unpublished file renamed to a name known to be free (rsync's temp -> final): local."""
        if flags & fuse.RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        known = self.table.known(old)
        sof = self.files.get(known) if known is not None else None
        if (sof is None or old == new or not sof.pending or sof.cond or sof.lock.locked()
                or self.files.in_flight(sof.ino) or self.table.known(new) is not None
                or (self.deletes is not None and len(self.deletes))
                or not self._listed_absent(new)):
            raise WouldBlock
        self.forget_paths(old, new)
        self.table.move(old, new, tree=False)
        self.files.moved(sof, new, "")
        sof.entry_ns = A.now_ns()
        self._dir_changed(old, new, now=sof.entry_ns)  # (here; the publication commits the new parent's)
        self._listing_discard(old)
        self._listing_add(new)

    async def _rename(self, old: str, new: str, flags: int) -> None:
        await self._settle_deletes()
        if self.dir_attrs is not None and len(self.dir_attrs):
            await self.dir_attrs.settle()  # (markers move with their directories)
        known = self.table.known(old)
        await self.files.wait_inflight(known, self.table.known(new))
        sof = self.files.get(known) if known is not None else None
        if sof is not None and sof.pending:
            if old == new or await self._rename_unpublished(sof, old, new, flags):
                return
        elif sof is not None and sof.jid is not None:
            await self.files.settle(old)  # an fsync()'d update journaled under `old`: commit it
        src = await self._resolve(old)
        if old == new:
            return
        dst = await self._exists(new)
        if dst is not None and flags & fuse.RENAME_NOREPLACE:
            raise fail(errno.EEXIST)
        if dst is not None and not src.is_dir and dst.ino == src.ino:
            return  # two names of one file: POSIX says rename does nothing
        if src.is_dir:
            await self.files.settle(old)  # its closed, unpublished files must move too
            await self.files.settle(new)  # and count as entries of the target
            if is_under(new, old):
                raise fail(errno.EINVAL)
            replace_keys: list[str] = []
            if dst is not None:
                if not dst.is_dir:
                    raise fail(errno.ENOTDIR)
                if await has_entries(self.ctx, new):
                    raise fail(errno.ENOTEMPTY)
                replace_keys = [dir_prefix(new)]
            touch = self._dir_changed(old, new)  # (only now: a refused rename changes nothing)
            self.forget_all_paths()
            try:
                await self.ctx.bucket.rename_prefix(dir_prefix(old), dir_prefix(new),
                                                    replace_keys=replace_keys, touch=touch)
            finally:
                self.forget_all_paths()
        else:
            if dst is not None and dst.is_dir:
                raise fail(errno.EISDIR)
            touch = self._dir_changed(old, new)
            victim = self.table.known(new)
            vof = self.files.get(victim) if victim is not None else None
            self.forget_paths(*(self.table.paths(victim) if victim is not None else ()))
            async with _locked(sof, vof):  # commits of either file wait for the new names
                if vof is not None and vof.users > 0:
                    await vof.buf.materialize()
                self.forget_paths(old, new)
                await self.ctx.bucket.rename(old, new, replace=True, touch=touch)
                self.forget_paths(old, new)
                self.table.detach(new)
                self._name_gone(vof, victim)
                self.table.move(old, new, tree=False)
            await self._touch_ctime(new)
            left = self.table.paths(victim) if victim is not None else ()
            if left:  # the replaced file lives on under other names: its st_nlink changed
                await self._touch_ctime(left[0])
            await self._keep_parent(old)
            return
        self.table.detach(new)
        self.table.move(old, new)
        await self._touch_ctime(new)  # a renamed directory's ctime changes too
        await self._keep_parent(old)

    async def _rename_unpublished(self, sof: OpenFile, old: str, new: str, flags: int) -> bool:
        """A file that is not in the bucket yet: renaming it is local; it is published at `new`.

        (`rsync` writes every file under a temporary name and renames it
        right after close(): no metadata commit for the rename at all.) The
        publication replaces whatever `new` holds in the bucket, and only the
        version seen here (a write elsewhere meanwhile wins). False: it got
        published meanwhile; rename it in the bucket.
        """
        victim = self.table.known(new)
        vof = self.files.get(victim) if victim is not None else None
        replaces = ""  # the version at `new` our publication replaces ("": none)
        if vof is not None and vof.pending:
            dst_info = None  # the file there is not in the bucket either...
            replaces = vof.cond or ""  # ...but it may have been going to replace an object
        else:
            dst = await self._exists(new)
            if dst is not None and dst.is_dir:
                raise fail(errno.EISDIR)
            dst_info = dst.info if dst is not None else None
            if dst is not None and flags & fuse.RENAME_NOREPLACE:
                raise fail(errno.EEXIST)
            if dst is not None and dst.nlink > 1:
                # one name of a hard-linked file: a publication there would write the
                # content all its names share; publish first, the bucket's rename
                # replaces just that name (and moves the other names' ctime)
                await self._commit(sof)
                return False
        if vof is not None and flags & fuse.RENAME_NOREPLACE:
            raise fail(errno.EEXIST)
        async with _locked(sof, vof):
            if not sof.pending or self.table.known(new) != victim:
                return False
            if vof is not None and dst_info is None and not vof.pending:
                # The target got published while we waited for its lock: our
                # publication must replace that version, not expect nothing there.
                self.forget_paths(new)
                dst = await self._exists(new)
                dst_info = dst.info if dst is not None else None
            if vof is not None and vof.users > 0:
                await vof.buf.materialize()
            self.forget_paths(old, new)
            self.table.detach(new)
            self._name_gone(vof, victim)
            await self._drop_replaced(sof, old)
            self.table.move(old, new, tree=False)
            self.files.moved(sof, new, dst_info.etag if dst_info is not None else replaces)
            sof.entry_ns = A.now_ns()
            self._dir_changed(old, new, now=sof.entry_ns)  # (here; the publication commits the new parent's)
        return True

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: fuse.RequestContext) -> fuse.EntryAttributes:
        """A hard link: the engine moves the file into an inode record both names share."""
        src = self.table.path(inode)
        new = self._child(new_parent_inode, new_name)
        of = self.files.get(inode)
        if of is not None:
            async with of.lock:
                await self.files.commit(of)  # its content and attributes, in the bucket
        node = await resolve(self.ctx, src)
        if node.is_dir:
            raise fail(errno.EPERM)
        await self._settle_deletes(new)
        if await self._exists(new) is not None:
            raise fail(errno.EEXIST)
        now = A.now_ns()
        attrs = replace(of.attrs if of is not None else node.attrs, ctime_ns=now)
        base = of.meta if of is not None else (node.info.custom_metadata if node.info else {})
        info = await self.ctx.bucket.link(src, new, custom_metadata=A.to_metadata(attrs, base),
                                          touch=self._dir_changed(new, now=now))
        self.forget_paths(src, new, *self.table.paths(inode))
        if of is not None:
            of.attrs, of.meta = attrs, dict(info.custom_metadata)
            of.buf.base = replace(of.buf.base, nlink=info.nlink) if of.buf.base else None
        ino = self.table.bind(new, info.ino)
        self.table.looked_up(ino)
        self._listing_add(new)
        if of is not None:
            return self._open_entry(of)
        return self._node_entry_now(ino, file_node(self.ctx, new, info))

    def _name_gone(self, of: OpenFile | None, ino: int | None) -> None:
        """A name of `ino` was unlinked or replaced: an open file with no name left is an
        orphan; one with other names (hard links) goes on under them."""
        if of is None:
            return
        if ino is None or not self.table.paths(ino):
            self.files.orphaned(of)
        elif of.buf.base is not None:
            of.buf.base = replace(of.buf.base, nlink=max(1, of.buf.base.nlink - 1))

    async def _touch_ctime(self, path: str) -> None:
        """`path`'s ctime changes: renamed, or another of its names went (Linux file
        systems do; a name not known here keeps its old ctime)."""
        ino = self.table.known(path)
        of = self.files.get(ino) if ino is not None else None
        now = A.now_ns()

        def change(a: A.PosixAttrs, meta: dict[str, str]) -> tuple[A.PosixAttrs, dict[str, str]]:
            return replace(a, ctime_ns=now), meta

        if of is not None or ino is None:
            if of is not None:
                async with of.lock:
                    of.attrs = replace(of.attrs, ctime_ns=now)
                    of.meta_dirty = True
                    self.files.attrs_changed(of)
            return
        await self._change(ino, change)

    # --- files -------------------------------------------------------------------------

    def _file_info(self, of: OpenFile, flags: int, prefilled: bool = False) -> fuse.FileInfo:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        h = self.files.open_handle(of, append=bool(flags & os.O_APPEND), writable=writable)
        version = of.buf.base.version if of.buf.base is not None else None
        keep = (version is not None and not (flags & os.O_TRUNC)
                and (prefilled or self._cache_version.get(of.ino) == version))
        if version is not None:
            self._cache_version[of.ino] = version
        return fuse.FileInfo(fh=h.fh, keep_cache=keep)

    async def _prefill(self, of: OpenFile, flags: int) -> bool:
        """Hand a small, unchanged file's content to the kernel's page cache with the open reply.

        Reads are then served by the kernel without a READ request each, and
        -- what matters more -- a READ makes the kernel drop the file's cached
        attributes (its atime changed), so every later stat() would be a
        round trip here. Only for a version the kernel cannot hold stale pages
        of: one it never saw (`_cache_version` does not name another).
        """
        base = of.buf.base
        if (base is None or of.buf.changed or (flags & os.O_ACCMODE) == os.O_WRONLY
                or flags & os.O_TRUNC or not 0 < base.size <= PREFILL_MAX or not base.inline):
            return False
        known = self._cache_version.get(of.ino)
        if known is not None and known != base.version:
            return False  # the kernel may hold the old version's pages: let it drop them
        data = await of.buf.read(0, base.size)
        if of.buf.changed or of.buf.base is not base:
            return False
        return self._store(of.ino, data)

    def _prefill_now(self, of: OpenFile, flags: int) -> bool:
        """`_prefill` of a file just adopted (no trio: its inline content decrypted here).

        (The notification is safe here: nobody has the file open, so no READ of it
        holds a page the kernel would wait for.)"""
        base = of.buf.base
        if (base is None or of.buf.changed or (flags & os.O_ACCMODE) == os.O_WRONLY
                or not 0 < base.size <= PREFILL_MAX or not base.inline):
            return False
        known = self._cache_version.get(of.ino)
        if known is not None and known != base.version:
            return False
        return self._store(of.ino, self.ctx.cluster.open_inline_now(base)[:base.size])

    def _store(self, ino: int, data: bytes | memoryview) -> bool:
        try:
            assert self.session is not None
            self.session.notify_store(ino, 0, data)
        except OSError as exc:
            log.debug("notify_store of inode %d: %s", ino, exc)
            return False
        return True

    async def open(self, inode: int, flags: int, ctx: fuse.RequestContext) -> fuse.FileInfo:
        path = self.table.path(inode)
        of = await self.files.acquire(inode, path)
        try:
            if stat.S_ISLNK(of.attrs.mode):
                raise fail(errno.ELOOP)
            await self._opened_newer(of, path)
            if flags & os.O_TRUNC:  # (any access mode: the kernel checked write permission)
                async with of.lock:
                    if of.buf.size:
                        await of.buf.truncate(0)
                    now = A.now_ns()  # (an empty file's times move too, as on Linux)
                    of.attrs = replace(of.attrs, mtime_ns=now, ctime_ns=now)
                    if ctx.kill_suidgid:
                        of.attrs = _killed_suidgid(of.attrs)
                    of.meta_dirty = True
            return self._file_info(of, flags, await self._prefill(of, flags))
        except BaseException:
            await self.files.release(of)
            raise

    async def _opened_newer(self, of: OpenFile, path: str) -> None:
        """Open read a newer version than this mount knew (rewritten elsewhere; the poller
        is not there yet): lookup/getattr must not answer from the old one, and if the
        kernel was given another size, its cached attributes go before the open reply --
        else its reads stop at the old i_size until the poller drops them."""
        node = self._nodes.get(path)
        base = of.buf.base
        if node is not None and node.info is not None and base is not None \
                and node.info.version != base.version:
            self.forget_paths(path)
        told = self._kernel_size.get(of.ino)
        if told is None or told == of.buf.size or self.session is None:
            return
        del self._kernel_size[of.ino]
        try:  # (attributes only: a notification must not come from a trio task step)
            await trio.to_thread.run_sync(self.session.invalidate_inode, of.ino, True)
        except OSError as exc:
            log.debug("invalidate_inode %d: %s", of.ino, exc)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: fuse.RequestContext) -> tuple[fuse.FileInfo, fuse.EntryAttributes]:
        while True:
            try:
                return self.now_create(parent_inode, name, mode, flags, ctx)
            except WouldBlock:  # no inode number reserved, or the directory unseen
                await self._unblock_new(self._child(parent_inode, name))

    async def _unblock_new(self, path: str) -> None:
        """What a fast path that makes `path` lacked: its directory's mode, or inode numbers."""
        parent = split(path)[0]
        if parent and parent not in self._dir_modes:
            self._seen_dir(parent, (await self._resolve(parent)).attrs)
            return
        assert self.ctx.inos is not None
        await self.ctx.inos.refill()

    def now_create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                   ctx: fuse.RequestContext) -> tuple[fuse.FileInfo, fuse.EntryAttributes]:
        """A new file lives in memory until its close publishes it: never waits."""
        path = self._child(parent_inode, name)
        known = self.table.known(path)
        if known is not None and self.files.get(known) is not None:
            raise fail(errno.EEXIST)
        assert self.ctx.inos is not None
        attrs = self._new_attrs_now(path, stat.S_IFREG, mode, ctx)  # (before taking a number)
        ino = self.ctx.inos.take_now()  # the persistent number it will be published with
        if ino is None:
            raise WouldBlock  # none reserved: `create` reserves more first
        self.table.bind(path, ino)
        self._dir_changed(path, now=attrs.ctime_ns)  # (committed with the file's publication)
        of = self.files.create(ino, attrs)
        fi = self._file_info(of, flags)
        self.table.looked_up(ino)
        self._listing_add(path)
        return fi, self._open_entry(of)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        of = self.files.handle(fh).file
        if of.buf.dirty:
            async with of.lock:
                return await of.buf.read(off, size)
        return await of.buf.read(off, size, view=True)  # (written into the reply at once)

    async def write(self, fh: int, off: int, buf: bytes, kill_suidgid: bool = False) -> int:
        h = self.files.handle(fh)
        of = h.file
        async with of.lock:
            if h.append and not self.enable_writeback_cache:  # (with it, the kernel appends)
                off = of.buf.size
            check_size(off + len(buf), self.ctx.context(self.table.path_or_none(of.ino) or ""))
            n = await of.buf.write(off, buf)
            self._written(of, kill_suidgid)
            return n

    def _written(self, of: OpenFile, kill_suidgid: bool) -> None:
        now = A.now_ns()
        a = _killed_suidgid(of.attrs) if kill_suidgid else of.attrs
        self._kernel_size[of.ino] = of.buf.size  # (the kernel grew its i_size with the write)
        if a is not of.attrs:
            of.meta_dirty = True
        of.attrs = replace(a, mtime_ns=now, ctime_ns=now)

    def _committed(self, ino: int, info: ObjectInfo) -> None:
        """Our own commit: the kernel's page cache (written through) matches it."""
        self._cache_version[ino] = info.version
        path = self.table.path_or_none(ino)
        if path is not None:
            self.forget_paths(path)
            self._remember(path, file_node(self.ctx, path, info))

    def _abandoned(self, ino: int) -> None:
        """Our deferred commit lost to a newer write elsewhere."""
        self._cache_version.pop(ino, None)
        path = self.table.path_or_none(ino)
        if path is not None:
            self.forget_paths(path)

    async def _commit(self, of: OpenFile) -> None:
        async with of.lock:
            await self.files.commit(of)

    async def flush(self, fh: int) -> None:
        of = self.files.handle(fh).file
        async with of.lock:
            await self.files.flush(of)  # small files: journaled now, published a moment later

    async def fsync(self, fh: int, datasync: bool) -> None:
        of = self.files.handle(fh).file
        async with of.lock:
            await self.files.fsync(of)

    async def release(self, fh: int) -> None:
        h = self.files.close_handle(fh)
        await self.files.release(h.file)

    # --- directories ----------------------------------------------------------------

    async def opendir(self, inode: int, ctx: fuse.RequestContext) -> int:
        path = self.table.path(inode)
        node = await self._resolve(path)
        if not node.is_dir:
            raise fail(errno.ENOTDIR)
        return self._open_dir(inode, path)

    def _open_dir(self, inode: int, path: str) -> int:
        fh = self._next_dir
        self._next_dir += 1
        self._dirs[fh] = DirHandle(inode, path)
        self.table.pin(inode)
        return fh

    async def readdir(self, fh: int, start_id: int, token: fuse.ReaddirToken) -> None:
        d = self._dirs[fh]
        if d.entries is None or start_id == 0:
            d.entries = await self._snapshot(d)
        self._readdir_from(d, start_id, token)

    def _readdir_from(self, d: DirHandle, start_id: int, token: fuse.ReaddirToken) -> None:
        assert d.entries is not None
        for i in range(start_id, len(d.entries)):
            name, ino, attrs, size = d.entries[i]
            of = self.files.get(ino) if name not in (".", "..") else None
            nlink, rdev = (d.links or {}).get(ino, (1, 0)) if name not in (".", "..") else (1, 0)
            entry = self._open_entry(of) if of is not None else \
                self._entry(ino, attrs, size, nlink, rdev)
            if not fuse.readdir_reply(token, name.encode("utf-8"), entry, i + 1):
                return
            if token.plus and name not in (".", ".."):
                self.table.looked_up(ino)  # (the kernel counts a lookup per READDIRPLUS entry)

    async def _snapshot(self, d: DirHandle) -> list[tuple[str, int, A.PosixAttrs, int]]:
        """The listing readdir offsets index into: stable while entries come and go."""
        me = await self._resolve(d.path)
        parent = self.table.known(split(d.path)[0]) if d.path else ROOT
        parent_node = me if d.path == "" else await self._exists(split(d.path)[0])
        out = [(".", d.ino, me.attrs, 0),
               ("..", parent or d.ino, (parent_node or me).attrs, 0)]
        gen = self._nodes_gen
        hidden: list[str] = []
        listed = [self._pending_attrs(n) for n in await entries(self.ctx, d.path, hidden)
                  if self.deletes is None or not self.deletes.hidden(n.path)]
        names = {split(node.path)[1] for node in listed}
        if gen == self._nodes_gen:  # nothing changed meanwhile: the listing is complete
            for node in listed:
                if self._local_file(node) is None:
                    self._remember(node.path, node)
            self._listed[d.path] = set(names)
            if hidden:
                self._opaque.add(d.path)
            else:
                self._opaque.discard(d.path)
        for path, p in self.dir_attrs.creating_in(d.path) if self.dir_attrs is not None else ():
            if split(path)[1] not in names and not self.deletes_hidden(path):
                listed.append(Node(path, p.attrs, 0, None, fixed_ino=p.ino or 0))
                names.add(split(path)[1])
                if d.path in self._listed:
                    self._listed[d.path].add(split(path)[1])
        for path, of in self.files.pending_in(d.path):
            if split(path)[1] not in names:
                listed.append(Node(path, of.attrs, of.buf.size, None))
                if d.path in self._listed:
                    self._listed[d.path].add(split(path)[1])
        listed.sort(key=lambda node: node.path.encode("utf-8"))
        d.links = {}
        for node in listed:
            ino = node.ino
            known = self.table.known(node.path)
            if node.info is None and not node.is_dir and known is not None:
                ino = known  # a file not published yet: the number the mount gave it
            elif self._local_file(node) is not None:
                ino = known  # (replaced here by a file not published yet: that one, not the bucket's)
            self.table.bind(node.path, ino)
            d.links[ino] = (node.nlink, node.rdev)
            out.append((split(node.path)[1], ino, self._node_attrs(node), node.size))
        return out

    async def releasedir(self, fh: int) -> None:
        self.now_releasedir(fh)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        """Make this mount's deferred entry changes durable on this host.

        Why: mkdir, unlink, rmdir and bulk-closed files are answered before their
        metadata commit and kept in the journal; like a file's fsync(), a directory's
        makes them survive power loss by fdatasync'ing the journal (the next mount
        replays it). Programs that fsync a directory after creating or removing a
        name in it (sqlite's -journal, mail and package tools) rely on that."""
        journal = self.files.journal
        if journal is not None:
            await trio.to_thread.run_sync(journal.sync)

    # --- extended attributes ------------------------------------------------------

    @staticmethod
    def _xname(name: bytes) -> str:
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(errno.EINVAL) from None
        if not text.startswith(XATTR_NAMESPACE):
            raise fail(errno.ENOTSUP)
        return text

    async def _meta(self, inode: int) -> dict[str, str]:
        try:
            return self._known_meta(inode)
        except WouldBlock:
            pass
        node = await self._resolve(self.table.path(inode))
        return node.info.custom_metadata if node.info is not None else {}

    async def getxattr(self, inode: int, name: bytes, ctx: fuse.RequestContext) -> bytes:
        return self._xattr(await self._meta(inode), name)

    def _xattr(self, meta: dict[str, str], name: bytes) -> bytes:
        try:
            key = self._xname(name)
        except fuse.FUSEError:
            raise fail(fuse.ENOATTR) from None
        value = A.get_xattrs(meta).get(key)
        if value is None:
            raise fail(fuse.ENOATTR)
        return value

    async def listxattr(self, inode: int, ctx: fuse.RequestContext) -> list[bytes]:
        return [k.encode("utf-8") for k in A.get_xattrs(await self._meta(inode))]

    def _set_xattr(self, name: bytes, value: bytes) -> AttrChange:
        """The change a setxattr makes; refused names and sizes raise here (either thread)."""
        key = self._xname(name)
        if len(key.encode()) > 255:
            raise fail(errno.ERANGE)
        if len(value) > 4096:
            raise fail(errno.E2BIG)  # metadata travels in every manifest and HTTP header
        value = bytes(value)

        def change(a: A.PosixAttrs, meta: dict[str, str]) -> tuple[A.PosixAttrs, dict[str, str]]:
            x = A.get_xattrs(meta)
            x[key] = value
            return replace(a, ctime_ns=A.now_ns()), A.with_xattrs(meta, x)

        return change

    def now_setxattr(self, inode: int, name: bytes, value: bytes, ctx: fuse.RequestContext) -> None:
        """A refused name (cp -a copies system.posix_acl_*: ENOTSUP) or an open (or held,
        unpublished) file's xattr: answered here; its commit carries the change."""
        change = self._set_xattr(name, value)
        of = self.files.get(inode)
        if of is None or of.lock.locked() or self.table.path_or_none(inode) is None:
            raise WouldBlock
        of.attrs, of.meta = change(of.attrs, of.meta)
        of.meta_dirty = True
        self.files.attrs_changed(of)

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: fuse.RequestContext) -> None:
        await self._change(inode, self._set_xattr(name, value))

    async def removexattr(self, inode: int, name: bytes, ctx: fuse.RequestContext) -> None:
        key = self._xname(name)
        if key not in A.get_xattrs(await self._meta(inode)):
            raise fail(fuse.ENOATTR)

        def change(a: A.PosixAttrs, meta: dict[str, str]) -> tuple[A.PosixAttrs, dict[str, str]]:
            x = A.get_xattrs(meta)
            x.pop(key, None)
            return replace(a, ctime_ns=A.now_ns()), A.with_xattrs(meta, x)

        await self._change(inode, change)

    # --- file system ------------------------------------------------------------------

    async def statfs(self, ctx: fuse.RequestContext) -> fuse.StatvfsData:
        cached = self._statfs
        if cached is not None and time.monotonic() - cached[0] < 2.0:
            return cached[1]
        k, m, paths = self.ctx.layout
        total, free = await trio.to_thread.run_sync(_node_space, paths)
        share = k / (k + m) if k + m else 1.0
        files = len(self.table) + (1 << 20)
        bs = 4096
        data = fuse.StatvfsData()
        data.f_bsize = BLKSIZE
        data.f_frsize = bs
        data.f_blocks = int(total * share) // bs
        data.f_bfree = data.f_bavail = int(free * share) // bs
        data.f_files = files  # objects have no inode limit: report plenty free
        data.f_ffree = data.f_favail = files - len(self.table)
        data.f_namemax = 255
        self._statfs = (time.monotonic(), data)
        return data


def _run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that does not wait (on embedded metadata a readdir
    snapshot only reads LMDB's map: a trio task for it cost ~100 µs of CPU per
    directory in rm -rf); WouldBlock, and nothing kept but caches, if it would."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise WouldBlock


def _killed_suidgid(a: A.PosixAttrs) -> A.PosixAttrs:
    """What the kernel does to a file's mode on write/truncate/chown by someone without CAP_FSETID.

    (S_ISGID without group-execute is mandatory locking, not set-group-id: kept.)
    """
    if stat.S_ISDIR(a.mode):
        return a
    drop = stat.S_ISUID | (stat.S_ISGID if a.mode & stat.S_IXGRP else 0)
    return a if not a.mode & drop else replace(a, mode=a.mode & ~drop)


@contextlib.asynccontextmanager
async def _locked(*files: OpenFile | None) -> AsyncIterator[None]:
    """Hold the locks of the given open files (in inode order: no deadlock)."""
    async with contextlib.AsyncExitStack() as stack:
        for of in sorted({f.ino: f for f in files if f is not None}.values(), key=lambda f: f.ino):
            await stack.enter_async_context(of.lock)
        yield


def _node_space(paths: list[str]) -> tuple[int, int]:
    """Total and free bytes of the file systems holding the nodes, each counted once."""
    seen: set[int] = set()
    total = free = 0
    for p in paths:
        try:
            dev = os.stat(p).st_dev
            if dev in seen:  # several nodes on one disk: its space counts once
                continue
            seen.add(dev)
            sv = os.statvfs(p)
        except OSError:
            continue
        total += sv.f_blocks * sv.f_frsize
        free += sv.f_bavail * sv.f_frsize
    return total, free
