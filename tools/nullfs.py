"""An in-memory filesystem on r2fs's own FUSE loop: the floor under any r2fs mount.

Why it exists: the mount benchmark's small-file, rsync and untar figures are
bounded by the cost of a FUSE round trip through r2fs's request loop
(r2fs/fuse/kernel/), which the mount cannot go below. This filesystem keeps
everything in dicts and answers every request synchronously in the request
thread (only `now_*` fast paths: no trio task, no I/O, no hashing), with the
same kernel-facing choices as the r2fs mount (default_permissions, 30 s
entry/attribute timeouts, 1 MiB st_blksize, user.* xattrs, the same INIT
flags). Whatever it reaches on a workload is the best the loop can reach on
this machine; `tools/bench mount --floor` prints it beside r2fs and native,
with its daemon CPU per request (the loop's own cost).

Not a product part and not a test double: nothing in r2fs imports it.

Usage: python tools/nullfs.py MOUNTPOINT [--writeback]   (runs in the
foreground until unmounted; prints "ready" on stdout once mounted;
--writeback turns on the kernel's FUSE writeback cache, as r2fs's
`-o writeback` does).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from dataclasses import dataclass, field

import trio

from r2fs.fuse.kernel import api as fuse
from r2fs.fuse.kernel import mounting
from r2fs.fuse.kernel.session import Session, StateLock

TIMEOUT = 30.0  # as the r2fs mount's default entry/attr timeouts
BLKSIZE = 1 << 20


@dataclass
class Inode:
    mode: int
    uid: int
    gid: int
    data: bytearray = field(default_factory=bytearray)
    target: bytes = b""  # symlinks
    children: dict[bytes, int] = field(default_factory=dict)  # directories
    parent: int = fuse.ROOT_INODE
    nlink: int = 1
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0


class NullFS:
    def __init__(self, writeback: bool = False) -> None:
        self.enable_writeback_cache = writeback
        now = time.time_ns()
        root = Inode(stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), nlink=2,
                     atime_ns=now, mtime_ns=now, ctime_ns=now)
        self.inodes: dict[int, Inode] = {fuse.ROOT_INODE: root}
        self.next_ino = fuse.ROOT_INODE + 1

    # --- helpers -------------------------------------------------------------------------

    def _attrs(self, ino: int) -> fuse.EntryAttributes:
        node = self.inodes[ino]
        e = fuse.EntryAttributes()
        e.st_ino = ino
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        e.st_mode = node.mode
        e.st_nlink = node.nlink
        e.st_uid = node.uid
        e.st_gid = node.gid
        size = len(node.target) if stat.S_ISLNK(node.mode) else len(node.data)
        e.st_size = size
        e.st_blksize = BLKSIZE
        e.st_blocks = (size + 511) // 512
        e.st_atime_ns = node.atime_ns
        e.st_mtime_ns = node.mtime_ns
        e.st_ctime_ns = node.ctime_ns
        return e

    def _dir(self, ino: int) -> Inode:
        node = self.inodes.get(ino)
        if node is None:
            raise fuse.FUSEError(errno.ENOENT)
        if not stat.S_ISDIR(node.mode):
            raise fuse.FUSEError(errno.ENOTDIR)
        return node

    def _new(self, parent: int, name: bytes, mode: int, ctx: fuse.RequestContext,
             **extra: object) -> int:
        d = self._dir(parent)
        if name in d.children:
            raise fuse.FUSEError(errno.EEXIST)
        now = time.time_ns()
        ino = self.next_ino
        self.next_ino += 1
        self.inodes[ino] = Inode(mode, ctx.uid, ctx.gid, parent=parent, atime_ns=now,
                                 mtime_ns=now, ctime_ns=now, **extra)  # type: ignore[arg-type]
        d.children[name] = ino
        d.mtime_ns = d.ctime_ns = now
        if stat.S_ISDIR(mode):
            d.nlink += 1
        return ino

    # --- requests ------------------------------------------------------------------------

    def now_lookup(self, parent_inode, name, ctx=None):
        ino = self._dir(parent_inode).children.get(name)
        if ino is None:
            raise fuse.FUSEError(errno.ENOENT)
        return self._attrs(ino)

    def now_getattr(self, inode, ctx=None):
        if inode not in self.inodes:
            raise fuse.FUSEError(errno.ENOENT)
        return self._attrs(inode)

    def now_setattr(self, inode, attr, fields, fh, ctx):
        node = self.inodes[inode]
        if fields.update_size:
            size = attr.st_size
            if size < len(node.data):
                del node.data[size:]
            else:
                node.data.extend(bytes(size - len(node.data)))
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = time.time_ns()
        return self._attrs(inode)

    def now_readlink(self, inode, ctx):
        return self.inodes[inode].target

    def now_symlink(self, parent_inode, name, target, ctx):
        ino = self._new(parent_inode, name, stat.S_IFLNK | 0o777, ctx, target=target)
        return self._attrs(ino)

    def now_mkdir(self, parent_inode, name, mode, ctx):
        ino = self._new(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode), ctx, nlink=2)
        return self._attrs(ino)

    def now_mknod(self, parent_inode, name, mode, rdev, ctx):
        if not stat.S_ISREG(mode):
            raise fuse.FUSEError(errno.EPERM)
        return self._attrs(self._new(parent_inode, name, mode, ctx))

    def now_create(self, parent_inode, name, mode, flags, ctx):
        ino = self._new(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode), ctx)
        return fuse.FileInfo(fh=ino), self._attrs(ino)

    def now_open(self, inode, flags, ctx):
        node = self.inodes[inode]
        if flags & os.O_TRUNC:
            node.data.clear()
        return fuse.FileInfo(fh=inode)

    def now_read(self, fh, off, size):
        return bytes(self.inodes[fh].data[off:off + size])

    def now_write(self, fh, off, buf, kill_suidgid=False):
        data = self.inodes[fh].data
        if off > len(data):
            data.extend(bytes(off - len(data)))
        data[off:off + len(buf)] = buf
        self.inodes[fh].mtime_ns = time.time_ns()
        return len(buf)

    def now_flush(self, fh):
        pass

    def now_release(self, fh):
        pass

    def now_fsync(self, fh, datasync):
        pass

    def _remove(self, parent_inode: int, name: bytes, want_dir: bool) -> None:
        d = self._dir(parent_inode)
        ino = d.children.get(name)
        if ino is None:
            raise fuse.FUSEError(errno.ENOENT)
        node = self.inodes[ino]
        if want_dir != stat.S_ISDIR(node.mode):
            raise fuse.FUSEError(errno.ENOTDIR if want_dir else errno.EISDIR)
        if want_dir and node.children:
            raise fuse.FUSEError(errno.ENOTEMPTY)
        del d.children[name]
        if want_dir:
            d.nlink -= 1
        node.nlink = 0

    def now_unlink(self, parent_inode, name, ctx):
        self._remove(parent_inode, name, want_dir=False)

    def now_rmdir(self, parent_inode, name, ctx):
        self._remove(parent_inode, name, want_dir=True)

    def now_rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        old, new = self._dir(parent_inode_old), self._dir(parent_inode_new)
        ino = old.children.get(name_old)
        if ino is None:
            raise fuse.FUSEError(errno.ENOENT)
        if flags:
            raise fuse.FUSEError(errno.EINVAL)
        victim = new.children.get(name_new)
        if victim is not None and self.inodes[victim].children:
            raise fuse.FUSEError(errno.ENOTEMPTY)
        del old.children[name_old]
        new.children[name_new] = ino
        self.inodes[ino].parent = parent_inode_new

    def now_link(self, inode, new_parent_inode, new_name, ctx):
        raise fuse.FUSEError(errno.EPERM)

    def now_opendir(self, inode, ctx):
        self._dir(inode)
        return inode

    def now_readdir(self, fh, start_id, token):
        # offsets: position in the (insertion-ordered) children list, + 1
        items = list(self.inodes[fh].children.items())
        for i in range(start_id, len(items)):
            name, ino = items[i]
            if not fuse.readdir_reply(token, name, self._attrs(ino), i + 1):
                break

    def now_releasedir(self, fh):
        pass

    def now_fsyncdir(self, fh, datasync):
        pass

    def now_statfs(self, ctx):
        s = fuse.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_files = s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s

    def now_getxattr(self, inode, name, ctx):
        try:
            return self.inodes[inode].xattrs[name]
        except KeyError:
            raise fuse.FUSEError(fuse.ENOATTR) from None

    def now_setxattr(self, inode, name, value, ctx):
        if not name.startswith(b"user."):
            raise fuse.FUSEError(errno.ENOTSUP)
        self.inodes[inode].xattrs[name] = value

    def now_listxattr(self, inode, ctx):
        return list(self.inodes[inode].xattrs)

    def now_removexattr(self, inode, name, ctx):
        if self.inodes[inode].xattrs.pop(name, None) is None:
            raise fuse.FUSEError(fuse.ENOATTR)

    def now_forget(self, inode_list):
        pass


def main() -> None:
    mountpoint = os.path.abspath(sys.argv[1])
    fs = NullFS(writeback="--writeback" in sys.argv[2:])
    opts = mounting.parse({"default_permissions", "fsname=nullfs", "subtype=nullfs"})
    mounted = mounting.mount(mountpoint, opts)
    session = Session(mounted.fd, fs, StateLock(), writeback=fs.enable_writeback_cache)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            session.start(nursery)
            print("ready", flush=True)
            await session.wait_ended()
            nursery.cancel_scope.cancel()

    try:
        trio.run(serve)
    finally:
        mounted.close()
        print(f"requests: {session.requests}", file=sys.stderr)


if __name__ == "__main__":
    main()
