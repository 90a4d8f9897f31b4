"""The LMDB metadata engine: one environment per cluster, shared by every process on one machine.

LMDB gives what R2's per-key Durable Objects give: every change is one
serialised, durable write transaction, and a commit is visible to every reader
on the machine at once (read-after-write and list-after-write across
processes). This module knows the LMDB layout of the schema in
`interface.py`; nothing outside `r2fs.engine` may import it.

LMDB layout (version `SCHEMA_VERSION`; one named sub-database per table,
values are msgpack; the tables' meaning is in `interface.py`):

  info      b"schema" -> int; b"seq" -> last change sequence number
  objects   bucket NUL key[:KEY_PREFIX] -> [[key[KEY_PREFIX:], manifest], ...]
            (LMDB keys are at most 511 bytes but object keys may be 1024, so
            long keys are grouped under their first KEY_PREFIX bytes; see
            ObjectTable -- UTF-8 byte order is preserved)
  changes   seq (u64 BE) -> [bucket, key]      (last CHANGE_HISTORY entries)
  others    the table's key -> value
"""

from __future__ import annotations

import os
import struct
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import lmdb

from ..errors import ClusterError, UnsupportedFormat
from .interface import CHANGE_HISTORY, TABLES, MetaEngine, ObjectIndex, pack, u64, unpack

SCHEMA_VERSION = 2  # 2: inode numbers, hard links (inodes), slices and holes (see inodes.py)
#: Older schemas this build opens and migrates (`inodes.upgrade`, run by Cluster.open).
MIGRATABLE = (1,)
KEY_PREFIX = 400  # bytes of an object key used in the LMDB key (+ bucket + NUL <= 511)
MAP_SIZE = 64 << 30

T = TypeVar("T")


# LMDB must not be opened twice in one process (closing one handle would drop
# the other's locks), so environments are shared per real path.
_ENVS: dict[str, tuple[lmdb.Environment, int]] = {}
_ENVS_LOCK = threading.Lock()


def _acquire_env(path: str) -> lmdb.Environment:
    real = os.path.realpath(path)
    with _ENVS_LOCK:
        if real in _ENVS:
            env, n = _ENVS[real]
            _ENVS[real] = (env, n + 1)
            return env
        try:
            env = lmdb.open(real, map_size=MAP_SIZE, max_dbs=len(TABLES) + 2, subdir=True,
                            lock=True, readahead=False, meminit=False, max_readers=1024,
                            create=True)
        except lmdb.Error as exc:
            raise ClusterError(f"cannot open metadata at {real}: {exc}") from None
        _ENVS[real] = (env, 1)
        return env


def _release_env(path: str) -> None:
    real = os.path.realpath(path)
    with _ENVS_LOCK:
        env, n = _ENVS[real]
        if n > 1:
            _ENVS[real] = (env, n - 1)
        else:
            del _ENVS[real]
            env.close()


class LmdbMeta(MetaEngine):
    """An open metadata environment and its sub-databases (a `MetaEngine`)."""

    url_scheme = "lmdb"

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.env = _acquire_env(path)
        self._closed = False
        try:
            self.db = {name: self.env.open_db(name.encode()) for name in TABLES}
            self._check_schema()
        except BaseException:
            self.close()
            raise
        self.objects = ObjectTable(self.db["objects"])
        self._group = GroupCommit(self.env)

    def _check_schema(self) -> None:
        with self.env.begin(write=True) as txn:
            raw = txn.get(b"schema", db=self.db["info"])
            if raw is None:
                txn.put(b"schema", pack(SCHEMA_VERSION), db=self.db["info"])
                txn.put(b"seq", pack(0), db=self.db["info"])
                return
            version = unpack(raw)
            if version != SCHEMA_VERSION and version not in MIGRATABLE:
                raise UnsupportedFormat(
                    f"metadata schema version {version} at {self.path} is not supported "
                    f"by this r2fs (it reads version {SCHEMA_VERSION}); refusing to open")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_env(self.path)

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        with self.env.begin(write=False, buffers=False) as txn:
            yield txn

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run `fn` atomically in a write transaction (blocking: call it from a worker thread).

        Group commit: each commit costs an fsync (milliseconds), so writers
        that arrive while one commit is in flight are batched into the next
        one. Every `fn` runs in its own nested transaction, so one that raises
        is rolled back alone; the others still commit. Each call returns only
        once its batch is durable and visible to every process.
        """
        return self._group.run(fn)

    def write_many(self, fns: list[Callable[[lmdb.Transaction], Any]]) -> list[Any]:
        """Run each `fn` atomically, all queued at once: one commit for many (blocking).

        Why: a caller with many independent changes (the FUSE mount publishing
        a burst of small files) would otherwise pay one thread hop and one
        queue round per change. Each `fn` still runs in its own nested
        transaction, so each is atomic and one that raises is rolled back
        alone. Returns, in order, each result or the exception its `fn`
        raised; an exception of the commit itself (disk full) is raised.
        """
        return self._group.run_many(fns)

    # --- small typed helpers used inside transactions ----------------------------

    def get(self, txn: lmdb.Transaction, db: str, key: bytes) -> Any:
        raw = txn.get(key, db=self.db[db])
        return None if raw is None else unpack(raw)

    def put(self, txn: lmdb.Transaction, db: str, key: bytes, value: Any) -> None:
        txn.put(key, pack(value), db=self.db[db])

    def delete(self, txn: lmdb.Transaction, db: str, key: bytes) -> bool:
        return txn.delete(key, db=self.db[db])

    def scan(self, txn: lmdb.Transaction, db: str, prefix: bytes = b"",
             start: bytes | None = None) -> Iterator[tuple[bytes, Any]]:
        with txn.cursor(db=self.db[db]) as cur:
            if not cur.set_range(start if start is not None else prefix):
                return
            for k, v in cur:
                if not k.startswith(prefix):
                    return
                yield k, unpack(v)

    def count(self, txn: lmdb.Transaction, db: str) -> int:
        return txn.stat(self.db[db])["entries"]

    def describe(self) -> str:
        return f"LMDB at {self.path}"

    # --- change feed -------------------------------------------------------------

    def record_change(self, txn: lmdb.Transaction, bucket: str, key: str) -> int:
        seq = self.get(txn, "info", b"seq") + 1
        self.put(txn, "info", b"seq", seq)
        self.put(txn, "changes", u64(seq), [bucket, key])
        if seq > CHANGE_HISTORY:
            txn.delete(u64(seq - CHANGE_HISTORY), db=self.db["changes"])
        return seq

    def change_seq(self) -> int:
        with self.read() as txn:
            return self.get(txn, "info", b"seq")

    def changes_since(self, seq: int, limit: int) -> tuple[int, list[tuple[int, str, str]]]:
        """(oldest kept seq, changes after `seq`)."""
        with self.read() as txn:
            out: list[tuple[int, str, str]] = []
            oldest = None
            with txn.cursor(db=self.db["changes"]) as cur:
                if cur.first():
                    oldest = struct.unpack(">Q", cur.key())[0]
                if cur.set_range(u64(seq + 1)):
                    for k, v in cur:
                        bucket, key = unpack(v)
                        out.append((struct.unpack(">Q", k)[0], bucket, key))
                        if len(out) >= limit:
                            break
            return (oldest if oldest is not None else seq + 1), out


class _Pending:
    __slots__ = ("fn", "done", "result", "error", "failed_commit")

    def __init__(self, fn: Callable[[lmdb.Transaction], Any]) -> None:
        self.fn = fn
        self.done = False
        self.failed_commit = False  # the error is the whole commit's, not fn's
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Leader-based group commit over one LMDB environment.

    A writer queues its function, then takes the leader lock; whoever holds it
    commits everything queued so far in one transaction (one fsync), each
    function in a nested transaction of its own. A writer whose work a
    previous leader already committed finds itself done when it gets the lock.
    """

    MAX_BATCH = 256

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self._leader = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []

    def run(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        item = _Pending(fn)
        self._wait([item])
        if item.error is not None:
            raise item.error
        return item.result

    def run_many(self, fns: list[Callable[[lmdb.Transaction], Any]]) -> list[Any]:
        items = [_Pending(fn) for fn in fns]
        self._wait(items)
        failed = [i.error for i in items if i.error is not None and i.failed_commit]
        if failed:
            raise failed[0]
        return [i.error if i.error is not None else i.result for i in items]

    def _wait(self, items: list[_Pending]) -> None:
        """Queue `items` and lead commits until every one of them is done."""
        with self._queue_lock:
            self._queue.extend(items)
        for item in items:
            while not item.done:
                with self._leader:
                    if item.done:
                        break
                    with self._queue_lock:
                        batch = self._queue[:self.MAX_BATCH]
                        del self._queue[:self.MAX_BATCH]
                    self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with self.env.begin(write=True) as txn:
                for item in batch:
                    child = self.env.begin(write=True, parent=txn)
                    try:
                        item.result = item.fn(child)
                    except BaseException as exc:  # noqa: BLE001 - handed to its own caller
                        child.abort()
                        item.error = exc
                    else:
                        child.commit()
        except BaseException as exc:  # the batch commit itself failed (disk full, map full)
            for item in batch:
                if item.error is None:
                    item.error = exc
                    item.result = None
                    item.failed_commit = True
        finally:
            for item in batch:
                item.done = True


def _split(bucket: str, key: str) -> tuple[bytes, bytes]:
    kb = key.encode("utf-8")
    return bucket.encode() + b"\0" + kb[:KEY_PREFIX], kb[KEY_PREFIX:]


class ObjectTable(ObjectIndex):
    """Object manifests by (bucket, key), in UTF-8 byte order, keys up to 1024 bytes.

    Every LMDB value is a sorted list of [rest-of-key, manifest] pairs: a key of
    at most KEY_PREFIX bytes is alone under its own LMDB key (rest b""); longer
    keys share the LMDB key of their first KEY_PREFIX bytes. All keys in a group
    start with the group's LMDB key and sort after every smaller group, so
    iterating groups in order and entries within a group in order is the
    global order.
    """

    def __init__(self, db: Any) -> None:
        self.db = db

    def _group(self, txn: lmdb.Transaction, lkey: bytes) -> list[list[Any]]:
        raw = txn.get(lkey, db=self.db)
        return [] if raw is None else unpack(raw)

    def get(self, txn: lmdb.Transaction, bucket: str, key: str) -> dict | None:
        lkey, rest = _split(bucket, key)
        for r, manifest in self._group(txn, lkey):
            if r == rest:
                return manifest
        return None

    def put(self, txn: lmdb.Transaction, bucket: str, key: str, manifest: dict) -> None:
        lkey, rest = _split(bucket, key)
        group = [e for e in self._group(txn, lkey) if e[0] != rest]
        group.append([rest, manifest])
        group.sort(key=lambda e: e[0])
        txn.put(lkey, pack(group), db=self.db)

    def delete(self, txn: lmdb.Transaction, bucket: str, key: str) -> dict | None:
        lkey, rest = _split(bucket, key)
        group = self._group(txn, lkey)
        kept = [e for e in group if e[0] != rest]
        if len(kept) == len(group):
            return None
        old = next(e[1] for e in group if e[0] == rest)
        if kept:
            txn.put(lkey, pack(kept), db=self.db)
        else:
            txn.delete(lkey, db=self.db)
        return old

    def scan(self, txn: lmdb.Transaction, bucket: str, prefix: str = "",
             after: bytes | None = None) -> Iterator[tuple[str, dict]]:
        bprefix = bucket.encode() + b"\0"
        pbytes = prefix.encode("utf-8")
        start = pbytes if after is None or after < pbytes else after
        with txn.cursor(db=self.db) as cur:
            if not cur.set_range(bprefix + start[:KEY_PREFIX]):
                return
            for lkey, raw in cur:
                if not lkey.startswith(bprefix):
                    return
                head = lkey[len(bprefix):]
                for rest, manifest in unpack(raw):
                    full = head + rest
                    if not full.startswith(pbytes):
                        if full > pbytes:
                            return
                        continue
                    if after is not None and full <= after:
                        continue
                    yield full.decode("utf-8"), manifest

    def scan_all(self, txn: lmdb.Transaction) -> Iterator[tuple[str, str, dict]]:
        with txn.cursor(db=self.db) as cur:
            for lkey, raw in cur:
                bucket, _, head = lkey.partition(b"\0")
                name = bucket.decode()
                for rest, manifest in unpack(raw):
                    yield name, (head + rest).decode("utf-8"), manifest
