"""The metadata engine interface: what the store needs from a transactional key-value store.

The store (and the modules it drives) only ever talks to metadata through
`MetaEngine`: run a function atomically with `write(fn)` / `write_many(fns)`,
read a consistent view with `read()`, and inside either get, put, delete and
scan values of the tables below. The engines differ in where the data lives
(`lmdb.py`: an embedded environment on this machine; `postgresql.py`: a
server every host of a cluster can reach), not in what they mean.

A transaction function may be run more than once (an engine retries it after
a serialization failure), so it must only touch the transaction it is given
and values it computes from it; side effects belong after `write` returns.

Tables (values are msgpack, see `pack`):

  info      engine bookkeeping (schema version, change sequence)
  buckets   name -> {created, location, settings}
  objects   (bucket, key) -> manifest          (through `MetaEngine.objects`)
  chunks    chunk id -> {r: refcount, n: plain len, l: sealed len, g: gen,
                         p: placement [node ids], s: state, t: touched, loc}
  gcq       chunk id -> time                   chunks whose refcount reached 0
  uploads   upload id -> {bucket, key, initiated, h, c}
  parts     upload id + part number (u32 BE) -> {etag, md5, size, uploaded, ch}
  changes   the change feed (`record_change`, `changes_since`, `feed_read`)
  records   namespace NUL name -> value       (access keys, settings of other layers)
  counters  bucket NUL name -> int            (operation metering)
  journal   chunk id -> {...}                 (replication journal, local uploads)
  inodes    u64 BE inode number -> {m: manifest, n: [names], b: bucket}
                                              (hard-linked files; see inodes.py)
"""

from __future__ import annotations

import struct
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import msgpack
import trio

T = TypeVar("T")

#: An engine's transaction handle: opaque to callers, passed back to the engine.
Txn = Any

TABLES = ("info", "buckets", "objects", "chunks", "gcq", "uploads", "parts",
          "changes", "records", "counters", "journal", "inodes")

#: Changes kept in the feed; a poller further behind is told to refresh everything.
CHANGE_HISTORY = 100_000

CHUNK_LIVE = 0
CHUNK_DELETING = 1


@dataclass
class FeedBatch:
    """What one `MetaEngine.feed_read` returns."""

    cursor: Any
    changes: list[tuple[int, str, str]]  # (seq, bucket, key)
    lost: bool = False  # changes were pruned unread: assume anything changed
    more: bool = False  # a limit cut the batch: read again


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(raw: bytes | memoryview) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


class ObjectIndex(ABC):
    """Object manifests by (bucket, key), listed in UTF-8 byte order of the key."""

    @abstractmethod
    def get(self, txn: Txn, bucket: str, key: str) -> dict | None: ...

    @abstractmethod
    def put(self, txn: Txn, bucket: str, key: str, manifest: dict) -> None: ...

    @abstractmethod
    def delete(self, txn: Txn, bucket: str, key: str) -> dict | None:
        """Remove the entry; the manifest it had, or None if there was none."""

    @abstractmethod
    def scan(self, txn: Txn, bucket: str, prefix: str = "",
             after: bytes | None = None) -> Iterator[tuple[str, dict]]:
        """(key, manifest) for keys starting with `prefix` and (as UTF-8) > `after`.

        `after` is raw bytes so that callers can skip a whole prefix P with
        after=P + b"\\xff" (no UTF-8 string contains the byte 0xff).
        """

    @abstractmethod
    def scan_all(self, txn: Txn) -> Iterator[tuple[str, str, dict]]:
        """(bucket, key, manifest) of every object of every bucket (status, migration)."""

    def any_with_prefix(self, txn: Txn, bucket: str, prefix: str) -> bool:
        for _ in self.scan(txn, bucket, prefix):
            return True
        return False

    def bucket_has_objects(self, txn: Txn, bucket: str) -> bool:
        return self.any_with_prefix(txn, bucket, "")


class MetaEngine(ABC):
    """An open metadata engine (see the module doc). Blocking: call from worker threads."""

    #: The scheme of URLs naming this engine (`[meta] url`): "lmdb", "postgresql".
    url_scheme: str
    objects: ObjectIndex

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the metadata lives, for messages (never includes a password)."""

    @abstractmethod
    def read(self) -> AbstractContextManager[Txn]:
        """A consistent read-only view for the `with` block."""

    @abstractmethod
    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run `fn(txn)` atomically and durably; its result, or the exception it raised."""

    @abstractmethod
    def write_many(self, fns: list[Callable[[Txn], Any]]) -> list[Any]:
        """Run each `fn` atomically (each alone rolled back if it raises), committed
        together where the engine can. Returns, in order, each result or the exception
        its `fn` raised; an exception of the commit itself is raised."""

    def view(self, fn: Callable[[Txn], T]) -> T:
        """Run the read-only `fn(txn)` on a consistent view; its result (or its exception).

        Unlike `read()`, the engine may run `fn` more than once, so like a write's
        function it must only read through `txn`: that lets PostgreSQL answer a read
        of one statement in autocommit (one statement is one snapshot: no BEGIN, no
        COMMIT), and run it again in a transaction only when it needs more."""
        with self.read() as txn:
            return fn(txn)

    def prefetch(self, txn: Txn, records: Iterable[tuple[str, bytes]] = (),
                 objects: Iterable[tuple[str, str]] = (),
                 scans: Iterable[tuple[str, str, bytes | None, int]] = ()) -> None:
        """A hint: the transaction is about to get these (table, key) records and
        (bucket, key) objects, and for each (bucket, prefix, after, n) of `scans` to read
        the first n entries of `objects.scan(bucket, prefix, after)` (it may read on).
        A networked engine fetches all that in one round trip -- and no more than n
        entries of a scan, whose values may be large inline objects -- and answers
        from memory; an embedded one has nothing to gain and ignores it."""

    @abstractmethod
    def get(self, txn: Txn, table: str, key: bytes) -> Any: ...

    @abstractmethod
    def put(self, txn: Txn, table: str, key: bytes, value: Any) -> None: ...

    @abstractmethod
    def delete(self, txn: Txn, table: str, key: bytes) -> bool: ...

    @abstractmethod
    def scan(self, txn: Txn, table: str, prefix: bytes = b"",
             start: bytes | None = None) -> Iterator[tuple[bytes, Any]]:
        """(key, value) in key byte order, keys starting with `prefix`, from `start` on."""

    @abstractmethod
    def count(self, txn: Txn, table: str) -> int: ...

    # --- change feed -------------------------------------------------------------

    @abstractmethod
    def record_change(self, txn: Txn, bucket: str, key: str) -> None:
        """Inside a write: note that (bucket, key) changed, for the change feed."""

    @abstractmethod
    def change_seq(self) -> int:
        """The sequence number of the newest visible change."""

    @abstractmethod
    def changes_since(self, seq: int, limit: int) -> tuple[int, list[tuple[int, str, str]]]:
        """(oldest kept seq, up to `limit` changes (seq, bucket, key) after `seq`)."""

    # following the feed (a mount's change poller) ...................................

    def feed_start(self) -> Any:
        """A cursor at the end of the feed (opaque; handed back to `feed_read`): every
        change committed before this call is behind it, every later one ahead."""
        return self.change_seq()

    def feed_read(self, cursor: Any, limit: int) -> "FeedBatch":
        """Changes ahead of `cursor` that can be read now (at most about `limit`), and
        the cursor past them. Never skips a change: one committed late with a lower
        sequence number than some already read still comes (engines with concurrent
        writers, PostgreSQL, deliver changes out of seq order). `lost` means changes
        ahead of the cursor were pruned first: the reader must assume anything changed.
        This default is for an engine whose seqs are final in commit order (LMDB)."""
        oldest, changes = self.changes_since(cursor, limit)
        if cursor + 1 < oldest:
            return FeedBatch(self.feed_start(), [], lost=True)
        return FeedBatch(changes[-1][0] if changes else cursor, changes,
                         more=len(changes) >= limit)

    async def wait_for_change(self, timeout: float, others_only: bool = False) -> None:
        """Return soon after a change is committed, or after `timeout` seconds (async).

        For change pollers: an engine that can push (PostgreSQL's NOTIFY) wakes
        them at once; this default just waits, and the poller looks anyway.
        `others_only`: not for commits of this engine (this process) -- a mount's,
        whose every commit is its own change, expected by its poller."""
        await trio.sleep(timeout)

    # --- shared helpers ------------------------------------------------------------

    def next_id(self, txn: Txn, key: bytes, first: int = 1) -> int:
        """A number never handed out before under `key` (increasing; gaps allowed).

        This default keeps the last one in `info` (fine where writers are serialised
        anyway, as in LMDB); an engine with concurrent writers overrides it so that
        allocations do not all update one row (PostgreSQL: a sequence)."""
        last = self.get(txn, "info", key)
        n = first if last is None else max(first, last + 1)
        self.put(txn, "info", key, n)
        return n

    def queue_for_gc(self, txn: Txn, cid: bytes) -> None:
        """The chunk's refcount is 0 as of now: gc's candidate once its grace passed and
        (with metadata snapshots) once a snapshot newer than this exists."""
        self.put(txn, "gcq", cid, time.time())
