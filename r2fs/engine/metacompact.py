"""`r2fs meta compact`: shrink the LMDB file with a compacting copy.

LMDB never returns space to the filesystem: pages freed by deletes are
reused, but the file keeps its largest size. A compacting copy
(`mdb_env_copy2(MDB_CP_COMPACT)`) writes only the live pages.

Safety: the copy replaces `data.mdb`, so no other process may have the
environment open -- one that had would keep writing into the old, unlinked
file. So compaction is refused while any process holds it (every process
with the environment open holds a shared fcntl lock on byte 0 of
`lock.mdb`), and it holds that byte exclusively itself while it works: a
process starting meanwhile waits inside LMDB's open until the new file is
in place. The copy is read without LMDB's locking (nobody can write), made
durable, and renamed over `data.mdb`; then the environment is opened once
normally, which -- being the only opener -- re-initialises `lock.mdb` for
the new file (its transaction ids start over) before anyone else reads it.
A kill before the rename leaves the old file untouched (and a temp file,
removed by the next run); after it, the new file is complete.
"""

from __future__ import annotations

import errno
import fcntl
import os

import lmdb

from .fileio import fsync_dir
from .errors import ClusterError, ClusterNotFound
from . import config as cfgmod
from .meta import TABLES, lmdb_dir
from .meta.lmdb import MAP_SIZE

TEMP_NAME = "data.mdb.compact-tmp"


class MetaInUse(ClusterError):
    """The metadata is open in another process (a mount, a gateway, a command)."""


def compact(root: str) -> tuple[int, int]:
    """Compact `<root>/meta/data.mdb` in place; (bytes before, bytes after)."""
    root = os.path.abspath(root)
    meta_url = (cfgmod.load(root).raw.get("meta") or {}).get("url")
    if meta_url:
        raise ClusterError(f"this cluster's metadata is not in LMDB ({meta_url.split(':')[0]}): "
                           "compact it with that database's own tools (e.g. VACUUM)")
    meta_dir = lmdb_dir(root)
    data = os.path.join(meta_dir, "data.mdb")
    if not os.path.exists(data):
        raise ClusterNotFound(f"no metadata at {meta_dir}")
    lock_path = os.path.join(meta_dir, "lock.mdb")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise MetaInUse(
                    f"the metadata at {meta_dir} is in use by another process (a mount, a "
                    "gateway or a running command); stop them, then run `r2fs meta compact` "
                    "again -- nothing was changed") from None
            raise
        before = os.path.getsize(data)
        tmp = os.path.join(meta_dir, TEMP_NAME)
        env = lmdb.open(meta_dir, map_size=MAP_SIZE, max_dbs=len(TABLES) + 2, subdir=True,
                        lock=False, readonly=True)
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                env.copyfd(out, compact=True)
                os.fsync(out)
            finally:
                os.close(out)
        finally:
            env.close()
        os.rename(tmp, data)
        fsync_dir(meta_dir)
        # The one normal open: LMDB finds itself alone (our own exclusive lock is this
        # process's), re-initialises lock.mdb from the new file, and on close drops
        # every lock this process holds on lock.mdb -- waiting openers then proceed.
        env = lmdb.open(meta_dir, map_size=MAP_SIZE, max_dbs=len(TABLES) + 2, subdir=True)
        with env.begin() as txn:
            txn.id()
        env.close()
        return before, os.path.getsize(data)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
