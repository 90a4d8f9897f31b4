"""The filesystem side of the FUSE protocol: what handlers take and return.

The names follow pyfuse3's (EntryAttributes, FileInfo, FUSEError, ...), so
a filesystem reads the same, but nothing here knows the wire: the session
(session.py) turns requests into calls with these types and these types
into replies. Handlers raise `FUSEError(errno)` to answer with an error.
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass

from . import proto as P

ROOT_INODE = P.ROOT_ID
ENOATTR = errno.ENODATA
RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1


class FUSEError(Exception):
    """Answer the request with this errno."""

    def __init__(self, errno_: int) -> None:
        super().__init__(errno_)
        self.errno = errno_

    def __str__(self) -> str:
        return errno.errorcode.get(self.errno, str(self.errno))


class EntryAttributes:
    """A node's attributes, and how long the kernel may cache them and its name."""

    __slots__ = ("st_ino", "generation", "entry_timeout", "attr_timeout", "st_mode", "st_nlink",
                 "st_uid", "st_gid", "st_rdev", "st_size", "st_blksize", "st_blocks",
                 "st_atime_ns", "st_mtime_ns", "st_ctime_ns")

    def __init__(self) -> None:
        self.st_ino = 0
        self.generation = 0
        self.entry_timeout = 0.0
        self.attr_timeout = 0.0
        self.st_mode = 0
        self.st_nlink = 1
        self.st_uid = 0
        self.st_gid = 0
        self.st_rdev = 0
        self.st_size = 0
        self.st_blksize = 4096
        self.st_blocks = 0
        self.st_atime_ns = 0
        self.st_mtime_ns = 0
        self.st_ctime_ns = 0


@dataclass
class FileInfo:
    fh: int = 0
    keep_cache: bool = False
    direct_io: bool = False


@dataclass
class SetattrFields:
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False
    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False
    kill_suidgid: bool = False  # (HANDLE_KILLPRIV_V2) the kernel asks the fs to drop suid/sgid


@dataclass
class StatvfsData:
    f_bsize: int = 4096
    f_frsize: int = 4096
    f_blocks: int = 0
    f_bfree: int = 0
    f_bavail: int = 0
    f_files: int = 0
    f_ffree: int = 0
    f_favail: int = 0
    f_namemax: int = 255


@dataclass
class RequestContext:
    uid: int = 0
    gid: int = 0
    pid: int = 0
    umask: int = 0
    kill_suidgid: bool = False  # (HANDLE_KILLPRIV_V2) open(O_TRUNC): drop suid/sgid


class ReaddirToken:
    """Collects the entries of one READDIR(PLUS) reply, up to the size the kernel asked for."""

    __slots__ = ("size", "plus", "parts", "used")

    def __init__(self, size: int, plus: bool) -> None:
        self.size = size
        self.plus = plus
        self.parts: list[bytes] = []
        self.used = 0


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def readdir_reply(token: ReaddirToken, name: bytes, entry: EntryAttributes, next_id: int) -> bool:
    """Add one entry; False if it does not fit (then ask again from its offset)."""
    kind = stat.S_IFMT(entry.st_mode) >> 12
    body = P.DIRENT.pack(entry.st_ino, next_id, len(name), kind) + name
    body += b"\0" * (_pad8(len(body)) - len(body))
    if token.plus:
        body = pack_entry(entry) + body
    if token.used + len(body) > token.size:
        return False
    token.parts.append(body)
    token.used += len(body)
    return True


def _split_timeout(t: float) -> tuple[int, int]:
    sec = int(t)
    return sec, int((t - sec) * 1e9)


def pack_attr(e: EntryAttributes) -> bytes:
    a, m, c = e.st_atime_ns, e.st_mtime_ns, e.st_ctime_ns
    return P.ATTR.pack(e.st_ino, e.st_size, e.st_blocks, a // 1_000_000_000, m // 1_000_000_000,
                       c // 1_000_000_000, a % 1_000_000_000, m % 1_000_000_000, c % 1_000_000_000,
                       e.st_mode, e.st_nlink, e.st_uid, e.st_gid, e.st_rdev, e.st_blksize, 0)


def pack_entry(e: EntryAttributes) -> bytes:
    """fuse_entry_out."""
    es, ens = _split_timeout(e.entry_timeout)
    as_, ans = _split_timeout(e.attr_timeout)
    return P.ENTRY_OUT_HEAD.pack(e.st_ino, e.generation, es, as_, ens, ans) + pack_attr(e)


def pack_attr_out(e: EntryAttributes) -> bytes:
    """fuse_attr_out."""
    as_, ans = _split_timeout(e.attr_timeout)
    return P.ATTR_OUT_HEAD.pack(as_, ans, 0) + pack_attr(e)


def pack_open(fi: FileInfo, extra_flags: int = 0) -> bytes:
    flags = extra_flags
    if fi.keep_cache:
        flags |= P.FOPEN_KEEP_CACHE
    if fi.direct_io:
        flags |= P.FOPEN_DIRECT_IO
    return P.OPEN_OUT.pack(fi.fh, flags, 0)


def pack_statfs(s: StatvfsData) -> bytes:
    return P.STATFS_OUT.pack(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize,
                             s.f_namemax, s.f_frsize, 0)
