"""The FUSE kernel protocol on the wire (linux/fuse.h, protocol 7.x).

Only what r2fs speaks: opcodes, INIT flags, and the fixed-size structs as
`struct.Struct`s (little-endian, the kernel's own layout, 64-bit padded).
Variable parts (names, data) follow the fixed part of a request and are
sliced off by the session.
"""

from __future__ import annotations

import struct

KERNEL_MAJOR = 7
#: The newest minor this module speaks; INIT settles on min(this, the kernel's).
KERNEL_MINOR = 38
ROOT_ID = 1

# --- opcodes -------------------------------------------------------------------------
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE = range(8, 19)
FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT = range(20, 27)
OPENDIR, READDIR, RELEASEDIR, FSYNCDIR, GETLK, SETLK, SETLKW, ACCESS, CREATE = range(27, 36)
INTERRUPT, BMAP, DESTROY, IOCTL, POLL, NOTIFY_REPLY, BATCH_FORGET = range(36, 43)
FALLOCATE, READDIRPLUS, RENAME2, LSEEK, COPY_FILE_RANGE = range(43, 48)
SYNCFS, TMPFILE = 50, 51

# --- INIT flags ---------------------------------------------------------------------------
ASYNC_READ = 1 << 0
POSIX_LOCKS = 1 << 1
ATOMIC_O_TRUNC = 1 << 3
EXPORT_SUPPORT = 1 << 4
BIG_WRITES = 1 << 5
DONT_MASK = 1 << 6
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
ASYNC_DIO = 1 << 15
WRITEBACK_CACHE = 1 << 16
PARALLEL_DIROPS = 1 << 18
HANDLE_KILLPRIV = 1 << 19
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
HANDLE_KILLPRIV_V2 = 1 << 28
SETXATTR_EXT = 1 << 29
INIT_EXT = 1 << 30

# --- request flags ---------------------------------------------------------------------
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FATTR_ATIME, FATTR_MTIME, FATTR_FH = 1 << 4, 1 << 5, 1 << 6
FATTR_ATIME_NOW, FATTR_MTIME_NOW, FATTR_LOCKOWNER, FATTR_CTIME = 1 << 7, 1 << 8, 1 << 9, 1 << 10
FATTR_KILL_SUIDGID = 1 << 11
FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR = 1 << 0, 1 << 1, 1 << 3
WRITE_CACHE, WRITE_KILL_SUIDGID = 1 << 0, 1 << 2
OPEN_KILL_SUIDGID = 1 << 0
FSYNC_FDATASYNC = 1 << 0
GETATTR_FH = 1 << 0

# --- notifications (out-header `error` field) ---------------------------------------------
NOTIFY_INVAL_INODE, NOTIFY_INVAL_ENTRY, NOTIFY_STORE, NOTIFY_DELETE = 2, 3, 4, 6
NOTIFY_EXPIRE_ONLY = 1 << 0  # inval_entry flag (7.38): expire the dentry, keep it hashed

# --- structs -------------------------------------------------------------------------
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr (88)
ENTRY_OUT_HEAD = struct.Struct("<QQQQII")  # nodeid generation entry_valid attr_valid nsec nsec
ATTR_OUT_HEAD = struct.Struct("<QII")  # attr_valid attr_valid_nsec dummy
INIT_IN = struct.Struct("<IIIII")  # major minor max_readahead flags flags2 (7.36+)
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")  # ... max_pages map_alignment flags2 unused[7]
FORGET_IN = struct.Struct("<Q")
FORGET_ONE = struct.Struct("<QQ")
BATCH_FORGET_IN = struct.Struct("<II")
GETATTR_IN = struct.Struct("<IIQ")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")  # valid pad fh size lock_owner a m c ns.. mode u4 uid gid
MKNOD_IN = struct.Struct("<IIII")  # mode rdev umask padding
MKDIR_IN = struct.Struct("<II")  # mode umask
RENAME_IN = struct.Struct("<Q")
RENAME2_IN = struct.Struct("<QII")
LINK_IN = struct.Struct("<Q")
OPEN_IN = struct.Struct("<II")  # flags open_flags
CREATE_IN = struct.Struct("<IIII")  # flags mode umask open_flags
OPEN_OUT = struct.Struct("<QII")  # fh open_flags padding
RELEASE_IN = struct.Struct("<QIIQ")
FLUSH_IN = struct.Struct("<QIIQ")
READ_IN = struct.Struct("<QQIIQII")  # fh offset size read_flags lock_owner flags padding
WRITE_IN = struct.Struct("<QQIIQII")  # fh offset size write_flags lock_owner flags padding
WRITE_OUT = struct.Struct("<II")
STATFS_OUT = struct.Struct("<QQQQQIIII24x")  # blocks bfree bavail files ffree bsize namelen frsize pad spare
FSYNC_IN = struct.Struct("<QII")
SETXATTR_IN = struct.Struct("<II")  # size flags (without SETXATTR_EXT)
GETXATTR_IN = struct.Struct("<II")  # size padding
GETXATTR_OUT = struct.Struct("<II")
INTERRUPT_IN = struct.Struct("<Q")
DIRENT = struct.Struct("<QQII")  # ino off namelen type
NOTIFY_INVAL_INODE_OUT = struct.Struct("<Qqq")
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("<QII")
NOTIFY_DELETE_OUT = struct.Struct("<QQII")
NOTIFY_STORE_OUT = struct.Struct("<QQII")

#: Bytes a WRITE request carries besides its data (in header + write_in).
WRITE_OVERHEAD = IN_HEADER.size + WRITE_IN.size
