"""The PostgreSQL metadata engine: one database shared by every host of a cluster.

Why PostgreSQL: it is strongly consistent, replicated and backed up by tools
people already run, and every r2fs process on every host can reach it; that
is what lets mounts and gateways on many machines share one cluster.

Transactions: every `write` runs SERIALIZABLE, so what R2 gets from one
Durable Object per key (each operation sees and changes a key as if alone)
holds across hosts. A transaction that loses a race fails with SQLSTATE 40001
(serialization failure) or 40P01 (deadlock) and is run again from the start,
with backoff and jitter; that is why transaction functions must be safe to
rerun (see `interface.py`). Reads (`read`) are REPEATABLE READ READ ONLY: one
snapshot for the whole `with` block, on the primary.

Round trips are what a networked engine costs, so a write transaction buffers
its puts and deletes (reads see them) and sends them at commit as batched
statements (executemany, which psycopg pipelines), followed by COMMIT; a
group of functions (`write_many`, the mount publishing a burst of small files)
shares one transaction, each function with its own buffer layer so that one
that raises is dropped alone.

Keys are `bytea`: the primary-key index order is byte order, which is S3's
listing order for UTF-8 keys, so a listing is an index range scan.

Change feed without a hot row: each change row carries the id of the
transaction that wrote it (`pg_current_xact_id()`) and its ordinal within
it; a reader takes only rows whose transaction id is below its snapshot's
xmin (every transaction below xmin has finished, so no row can still appear
there). The position of a change is xid * 2**24 + ordinal, increasing in
the order rows become final; nothing every commit updates in common. Commits
that record changes `NOTIFY r2fs_changes`; `wait_for_change` LISTENs on its
own connection (the socket watched with trio.lowlevel.wait_readable) to wake a
mount's change poller at once; the table stays the source of truth.

Schema (version `SCHEMA_VERSION`, in r2fs_schema; older versions are migrated
at open by `MIGRATIONS`, newer ones refused):

  r2fs_schema   (version, cluster_id)             one row
  r2fs_kv       (tbl smallint, k bytea, v bytea)  every table of interface.TABLES but
                                                  objects and changes; tbl = index in TABLES
  r2fs_objects  (bucket bytea, k bytea, v bytea)  manifests, key = UTF-8 object key
  r2fs_changes  (xid xid8, ord int, bucket, key)  the change feed
  r2fs_feed     (pruned bigint)                   feed position up to which rows were pruned
"""

from __future__ import annotations

import binascii
import functools
import logging
import random
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

import psycopg
import trio
from psycopg import errors as pgerrors
from psycopg.generators import execute as pg_execute

from ..errors import ClusterError, MetadataUnavailable, UnsupportedFormat
from .interface import (CHANGE_HISTORY, TABLES, FeedBatch, MetaEngine, ObjectIndex, pack,
                        unpack)

T = TypeVar("T")
log = logging.getLogger("r2fs.meta.postgresql")

SCHEMA_VERSION = 1
ORD_BITS = 24
CHANNEL = "r2fs_changes"
#: Attempts at a transaction that keeps losing serialization races before giving up.
MAX_ATTEMPTS = 30
#: Connections kept per process (at least the worker threads that run transactions at once).
POOL_SIZE = 16
CONNECT_TIMEOUT = 5
#: Prune the change feed after about this many recorded changes by this process.
PRUNE_EVERY = 2000
#: Numbers `next_id` takes from its sequence at once.
ID_BLOCK = 64
#: Keys one prefetch statement reads at most.
PREFETCH_MAX = 256
#: Rows of a scan's first page, unless a prefetch said how many the caller needs.
FIRST_PAGE = 64

_TBL = {name: i for i, name in enumerate(TABLES)}

_CREATE = [
    "CREATE TABLE r2fs_schema (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
    "version integer NOT NULL, cluster_id text NOT NULL)",
    "CREATE TABLE r2fs_kv (tbl smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL, "
    "PRIMARY KEY (tbl, k))",
    "CREATE TABLE r2fs_objects (bucket bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, "
    "PRIMARY KEY (bucket, k))",
    "CREATE TABLE r2fs_changes (xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
    "ord integer NOT NULL, bucket text NOT NULL, key text NOT NULL, PRIMARY KEY (xid, ord))",
    "CREATE TABLE r2fs_feed (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
    "pruned bigint NOT NULL)",
    "CREATE TABLE r2fs_ids (k bytea PRIMARY KEY, seq text NOT NULL)",
]

#: version -> statements that bring a database from that version to the next.
MIGRATIONS: dict[int, list[str]] = {}

_FATAL = psycopg.pq.ExecStatus.FATAL_ERROR
_COMMAND_OK = psycopg.pq.ExecStatus.COMMAND_OK
_RETRY = (pgerrors.SerializationFailure, pgerrors.DeadlockDetected)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix` (None: none)."""
    p = prefix.rstrip(b"\xff")
    if not p:
        return None
    return p[:-1] + bytes([p[-1] + 1])


def _scan_bounds(prefix: str, after: bytes | None) -> tuple[bytes, bytes | None]:
    """[lo, hi) of the object keys `ObjectIndex.scan(prefix, after)` lists."""
    pbytes = prefix.encode("utf-8")
    lo = pbytes if after is None or after < pbytes else after + b"\0"
    return lo, _successor(pbytes)


# --- connections ---------------------------------------------------------------------------


class Pool:
    """A small pool of autocommit connections, made on demand, at most `size` at once.

    Why not psycopg_pool: a stat costs a few hundred microseconds and a
    pool round of its checks costs a noticeable share of that; this one hands
    back the last idle connection under one lock. A connection that failed
    (server restarted) is dropped, and the next caller connects anew.
    """

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self._idle: list[psycopg.Connection] = []
        self._count = 0
        #: server process ids of this pool's connections (whose NOTIFYs are our own)
        self.pids: set[int] = set()
        self._cond = threading.Condition()
        self._closed = False

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   keepalives=1, keepalives_idle=10, keepalives_interval=5,
                                   keepalives_count=3, application_name="r2fs",
                                   client_encoding="utf8")
        except psycopg.OperationalError as e:
            raise MetadataUnavailable(f"cannot reach the metadata database (PostgreSQL at {redact(self.url)}): "
                                      f"{_first_line(e)}") from None
        conn.prepare_threshold = None  # psycopg's prepares did not survive a failed pipeline;
        _PREPARED[id(conn)] = set()  # ours (PgTxn.query) are tracked per connection instead
        self.pids.add(conn.info.backend_pid)
        return conn

    def get(self) -> psycopg.Connection:
        with self._cond:
            while True:
                if self._closed:
                    raise ClusterError("the metadata engine is closed")
                if self._idle:
                    return self._idle.pop()
                if self._count < self.size:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def put(self, conn: psycopg.Connection, *, broken: bool = False) -> None:
        if not broken and (conn.closed or conn.info.transaction_status
                           != psycopg.pq.TransactionStatus.IDLE):
            broken = True
        with self._cond:
            if broken or self._closed:
                self._count -= 1
            else:
                self._idle.append(conn)
                conn = None  # type: ignore[assignment]
            self._cond.notify()
        if conn is not None:
            _PREPARED.pop(id(conn), None)
            self._forget_pid(conn)
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is being dropped anyway
                pass

    def drop_idle(self) -> None:
        """Forget every idle connection (after one failed: the others are likely dead too)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for c in idle:
            self._forget_pid(c)
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def _forget_pid(self, conn: psycopg.Connection) -> None:
        try:
            self.pids.discard(conn.info.backend_pid)
        except psycopg.Error:  # (a connection that failed: its server process is gone)
            pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
        self.drop_idle()


#: id(connection) -> names of the statements PREPAREd on it (set when it is made).
_PREPARED: dict[int, set[str]] = {}
#: Point reads of at most this many keys go out as a prepared statement of their shape.
PREPARE_MAX = 4


def _shape(want: list[tuple[Any, bytes]]) -> tuple[str, str, str]:
    """(name, PREPARE statement, EXECUTE statement) of a point read of these keys: one
    prepared statement per shape (which arms read r2fs_kv, which r2fs_objects), so
    that the server parses and plans it once per connection, not once per read."""
    code = "".join("o" if isinstance(sp, tuple) else "k" for sp, _ in want)
    name = "r2fs_pf_" + code
    arms, types, args = [], [], []
    for i, (sp, key) in enumerate(want):
        n = 2 * i
        if isinstance(sp, tuple):
            arms.append(f"SELECT {i}, NULL::bytea, v FROM r2fs_objects "
                        f"WHERE bucket = ${n + 1} AND k = ${n + 2}")
            types += ["bytea", "bytea"]
            args += [_lit(sp[1]), _lit(key)]
        else:
            arms.append(f"SELECT {i}, NULL::bytea, v FROM r2fs_kv WHERE tbl = ${n + 1} AND k = ${n + 2}")
            types += ["smallint", "bytea"]
            args += [str(int(sp)), _lit(key)]
    prepare = f"PREPARE {name} ({', '.join(types)}) AS {' UNION ALL '.join(arms)}"
    return name, prepare, f"EXECUTE {name} ({', '.join(args)})"


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


# --- transactions ----------------------------------------------------------------------------

_DELETED = object()


class _Layer:
    """Buffered writes of one transaction function: (space, key) -> value bytes or _DELETED.

    space is a kv table index, or ("o", bucket) for objects."""

    __slots__ = ("writes", "changes", "parent")

    def __init__(self, parent: "_Layer | None") -> None:
        self.writes: dict[tuple[Any, bytes], Any] = {}
        self.changes: list[tuple[str, str]] = []
        self.parent = parent

    def lookup(self, space: Any, key: bytes) -> Any:
        layer: _Layer | None = self
        while layer is not None:
            v = layer.writes.get((space, key), None)
            if v is not None:
                return v
            layer = layer.parent
        return None

    def merge_into_parent(self) -> None:
        assert self.parent is not None
        self.parent.writes.update(self.writes)
        self.parent.changes.extend(self.changes)

    def pending(self, space: Any, lo: bytes, hi: bytes | None) -> dict[bytes, Any]:
        """Buffered entries of `space` with lo <= key < hi, innermost layer winning."""
        layers = []
        layer: _Layer | None = self
        while layer is not None:
            layers.append(layer)
            layer = layer.parent
        out: dict[bytes, Any] = {}
        for layer in reversed(layers):
            for (sp, k), v in layer.writes.items():
                if sp == space and k >= lo and (hi is None or k < hi):
                    out[k] = v
        return out


class _NeedSnapshot(BaseException):
    """A single-statement read (`PgMeta.view`) needs a second statement: run it again in a
    REPEATABLE READ transaction. BaseException: no `except Exception` in a read may swallow it."""


def _lit(b: bytes) -> str:
    """A bytea literal (hex; an E'' string, right whatever standard_conforming_strings is)."""
    return "E'\\\\x" + b.hex() + "'"


def _text(s: str) -> str:
    """A text literal that needs no escaping rules: the UTF-8 bytes, converted by the server."""
    return f"convert_from({_lit(s.encode('utf-8'))}, 'UTF8')"


def _where(space: Any, key: bytes) -> str:
    if isinstance(space, tuple):
        return f"r2fs_objects WHERE bucket = {_lit(space[1])} AND k = {_lit(key)}"
    return f"r2fs_kv WHERE tbl = {int(space)} AND k = {_lit(key)}"


def _bytea(raw: bytes | None) -> bytes | None:
    """A bytea column of a text-format (simple query) result."""
    return None if raw is None else binascii.unhexlify(raw[2:])


class PgTxn:
    """One transaction on one connection: reads go to the server (cached), writes are buffered.

    The hot statements (point reads, prefetches, the commit) go out as one simple-query
    message each, literals inlined (hex, so no quoting rules), BEGIN in front of the first
    and COMMIT at the end of the commit's: one round trip each, and a small fraction of
    the client CPU psycopg's cursor and pipeline machinery costs per statement.
    `single`: a read run by `PgMeta.view` -- its first statement runs alone in autocommit
    (one statement is one snapshot), a second one raises _NeedSnapshot."""

    def __init__(self, conn: psycopg.Connection, write: bool,
                 reconnect: Callable[[psycopg.Connection], psycopg.Connection] | None = None,
                 single: bool = False) -> None:
        self.conn = conn
        self._reconnect = reconnect
        self._cur: psycopg.Cursor | None = None  # (made when a statement needs psycopg's)
        self.write = write
        self.single = single
        self.layer = _Layer(None)
        self._seen: dict[tuple[Any, bytes], bytes | None] = {}
        #: (space, lo, hi) -> (first page's rows, rows asked): prefetched scans
        self._pages: dict[tuple[Any, bytes, bytes | None], tuple[list, int]] = {}
        self.begun = False  # BEGIN goes out with the first statement (one round trip, not two)

    @property
    def cur(self) -> psycopg.Cursor:
        if self._cur is None or self._cur.connection is not self.conn:
            self._cur = self.conn.cursor()
        return self._cur

    _BEGIN = {True: "BEGIN ISOLATION LEVEL SERIALIZABLE",
              False: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"}

    def _starting(self) -> bool:
        """About to send a statement: True if it is the transaction's first (BEGIN goes too)."""
        if self.begun:
            if self.single:
                raise _NeedSnapshot()
            return False
        return True

    def _retry_first(self, send: Callable[[], T]) -> T:
        try:
            return send()
        except psycopg.OperationalError:
            if self._reconnect is None:
                raise
            # nothing happened in this transaction yet: a pooled connection that died with
            # its server (restarted meanwhile) is replaced once, transparently
            self.conn = self._reconnect(self.conn)
            self._cur = None
            return send()

    def execute(self, sql: str, args: Any = None) -> psycopg.Cursor:
        """Run a statement in this transaction (starting it, pipelined, if not yet)."""
        if not self._starting():
            return self.cur.execute(sql, args)
        if self.single:
            self._retry_first(lambda: self.cur.execute(sql, args))
        else:
            self._retry_first(lambda: self._first(sql, args))
        self.begun = True
        return self.cur

    def _first(self, sql: str, args: Any) -> None:
        with self.conn.pipeline():
            self.cur.execute(self._BEGIN[self.write])
            self.cur.execute(sql, args)

    def query(self, sql: str, prepare: tuple[str, str] | None = None) -> Any:
        """Run `sql` (statements with inlined literals) as one message; the last result.
        Starts the transaction with it if not yet. `prepare`: (name, PREPARE statement)
        `sql` EXECUTEs, sent first in the same message if this connection lacks it."""
        if self._starting():
            begin = "" if self.single else self._BEGIN[self.write]
            result = self._retry_first(lambda: self._simple(sql, prepare, begin))
            self.begun = True
            return result
        return self._simple(sql, prepare)

    def _simple(self, sql: str, prepare: tuple[str, str] | None, begin: str = "") -> Any:
        conn = self.conn
        pg = conn.pgconn
        have = _PREPARED.setdefault(id(conn), set())
        sent = prepare is not None and prepare[0] not in have
        if sent:
            # (a PREPARE is not undone by a rollback: one that succeeded stays, whatever
            # the statements after it do; after BEGIN, which must come first)
            sql = prepare[1] + "; " + sql
        if begin:
            sql = begin + "; " + sql
        pg.send_query(sql.encode())
        results = conn.wait(pg_execute(pg))
        if sent and any(r.status == _COMMAND_OK and r.command_status == b"PREPARE"
                        for r in results):
            have.add(prepare[0])
        for r in results:
            if r.status == _FATAL:
                raise pgerrors.error_from_result(r, encoding="utf-8")
        return results[-1]

    # reads --------------------------------------------------------------------------------

    def _cached(self, space: Any, key: bytes) -> tuple[bool, bytes | None]:
        v = self.layer.lookup(space, key)
        if v is not None:
            return True, (None if v is _DELETED else v)
        ck = (space, key)
        if ck in self._seen:
            return True, self._seen[ck]
        return False, None

    def fetch(self, space: Any, key: bytes) -> bytes | None:
        known, v = self._cached(space, key)
        if known:
            return v
        name, prepare, run = _shape([(space, key)])
        res = self.query(run, (name, prepare))
        value = _bytea(res.get_value(0, 2)) if res.ntuples else None
        self._seen[(space, key)] = value
        return value

    def prefetch(self, items: list[tuple[Any, bytes]],
                 scans: list[tuple[Any, bytes, bytes | None, int]] = ()) -> None:
        """Read every (space, key) not known yet, and the first n rows of each scan
        (space, lo, hi, n), in one statement (one snapshot, one round trip); later fetches
        and `range`s starting there are answered from memory."""
        want = []
        for space, key in items:
            if not self._cached(space, key)[0] and (space, key) not in want:
                want.append((space, key))
        scans = [sc for sc in scans if sc[:3] not in self._pages]
        if len(want) == 1 and not scans:
            self.fetch(*want[0])
            return
        for at in range(0, max(len(want), 1), PREFETCH_MAX):
            self._prefetch(want[at:at + PREFETCH_MAX], scans if at == 0 else [])

    def _prefetch(self, want: list[tuple[Any, bytes]],
                  scans: list[tuple[Any, bytes, bytes | None, int]]) -> None:
        if not want and not scans:
            return
        if not scans and len(want) <= PREPARE_MAX:
            name, prepare, run = _shape(want)
            res = self.query(run, (name, prepare))
        else:
            arms = [f"SELECT {i}, NULL::bytea, v FROM {_where(sp, k)}"
                    for i, (sp, k) in enumerate(want)]
            arms += [f"({self._page_sql(sp, lo, True, hi, n, str(len(want) + j) + ', ')})"
                     for j, (sp, lo, hi, n) in enumerate(scans)]
            if not arms:
                return
            res = self.query(" UNION ALL ".join(arms))
        got: dict[int, Any] = {}
        pages: list[list[tuple[bytes, bytes]]] = [[] for _ in scans]
        for r in range(res.ntuples):
            i = int(res.get_value(r, 0))
            if i < len(want):
                got[i] = _bytea(res.get_value(r, 2))
            else:
                pages[i - len(want)].append((_bytea(res.get_value(r, 1)),
                                             _bytea(res.get_value(r, 2))))
        for i, ck in enumerate(want):
            self._seen[ck] = got.get(i)
        for sc, rows in zip(scans, pages):
            rows.sort()
            self._pages[sc[:3]] = (rows, sc[3])

    def range(self, space: Any, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) with lo <= key < hi in key order: the server's rows merged with
        this transaction's buffered writes. Pages through the server in key order."""
        pending = self.layer.pending(space, lo, hi) if self.write else {}
        extra = sorted(pending.items())
        i = 0
        page = FIRST_PAGE
        start, inclusive = lo, True
        first = self._pages.pop((space, lo, hi), None)  # (prefetched, as many as asked)
        while True:
            if first is not None:
                (rows, page), first = first, None
            else:
                rows = self._page(space, start, inclusive, hi, page)
            for k, v in rows:
                k = bytes(k)
                while i < len(extra) and extra[i][0] < k:
                    if extra[i][1] is not _DELETED:
                        yield extra[i]
                    i += 1
                if i < len(extra) and extra[i][0] == k:
                    if extra[i][1] is not _DELETED:
                        yield extra[i]
                    i += 1
                    continue
                yield k, v
            if len(rows) < page:
                break
            start, inclusive = bytes(rows[-1][0]), False
            page = min(max(page * 4, FIRST_PAGE), 2048)
        while i < len(extra):
            if extra[i][1] is not _DELETED:
                yield extra[i]
            i += 1

    def _page(self, space: Any, start: bytes, inclusive: bool, hi: bytes | None,
              limit: int) -> list[tuple[bytes, bytes]]:
        res = self.query(self._page_sql(space, start, inclusive, hi, limit))
        return [(_bytea(res.get_value(r, 0)), _bytea(res.get_value(r, 1)))
                for r in range(res.ntuples)]

    @staticmethod
    def _page_sql(space: Any, start: bytes, inclusive: bool, hi: bytes | None, limit: int,
                  tag: str = "") -> str:
        if isinstance(space, tuple):
            sql = f"SELECT {tag}k, v FROM r2fs_objects WHERE bucket = {_lit(space[1])}"
        else:
            sql = f"SELECT {tag}k, v FROM r2fs_kv WHERE tbl = {int(space)}"
        sql += f" AND k {'>=' if inclusive else '>'} {_lit(start)}"
        if hi is not None:
            sql += f" AND k < {_lit(hi)}"
        return sql + f" ORDER BY k LIMIT {int(limit)}"

    # writes -------------------------------------------------------------------------------

    def store(self, space: Any, key: bytes, value: bytes | None) -> None:
        if not self.write:
            raise ClusterError("a metadata change inside a read-only transaction")
        self.layer.writes[(space, key)] = _DELETED if value is None else value

    def flush(self) -> None:
        """Send the buffered writes and changes and COMMIT, in one message (one round trip).
        A commit of a few puts and changes and no deletes (a create, a rename's target, a
        mount's publication) is one prepared statement of its shape: the server parses and
        plans it once per connection (measured: ~1/3 of a plain commit's server CPU)."""
        layer = self.layer
        dels: dict[Any, list[bytes]] = {}
        kv: list[tuple[int, bytes, bytes]] = []
        objs: list[tuple[bytes, bytes, bytes]] = []
        for (space, key), v in layer.writes.items():
            if v is _DELETED:
                dels.setdefault(space, []).append(key)
            elif isinstance(space, tuple):
                objs.append((space[1], key, v))
            else:
                kv.append((int(space), key, v))
        if (not dels and 0 < len(layer.changes) <= PREPARE_MAX and len(kv) <= PREPARE_MAX
                and len(objs) <= PREPARE_MAX):
            name, prepare = _commit_shape(len(kv), len(objs), len(layer.changes))
            args = ([f"{t}, {_lit(k)}, {_lit(v)}" for t, k, v in kv]
                    + [f"{_lit(b)}, {_lit(k)}, {_lit(v)}" for b, k, v in objs]
                    + [f"{_lit(b.encode('utf-8'))}, {_lit(k.encode('utf-8'))}"
                       for b, k in layer.changes])
            self.query(f"EXECUTE {name} ({', '.join(args)}); NOTIFY {CHANNEL}; COMMIT",
                       (name, prepare))
            return
        stmts = []
        for space, keys in dels.items():
            keyset = ", ".join(_lit(k) for k in keys)
            if isinstance(space, tuple):
                stmts.append(f"DELETE FROM r2fs_objects WHERE bucket = {_lit(space[1])} "
                             f"AND k IN ({keyset})")
            else:
                stmts.append(f"DELETE FROM r2fs_kv WHERE tbl = {int(space)} AND k IN ({keyset})")
        if kv:
            stmts.append("INSERT INTO r2fs_kv (tbl, k, v) VALUES "
                         + ", ".join(f"({t}, {_lit(k)}, {_lit(v)})" for t, k, v in kv)
                         + " ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v")
        if objs:
            stmts.append("INSERT INTO r2fs_objects (bucket, k, v) VALUES "
                         + ", ".join(f"({_lit(b)}, {_lit(k)}, {_lit(v)})" for b, k, v in objs)
                         + " ON CONFLICT (bucket, k) DO UPDATE SET v = EXCLUDED.v")
        if layer.changes:
            rows = ", ".join(f"({i}, {_text(b)}, {_text(k)})"
                             for i, (b, k) in enumerate(layer.changes))
            stmts.append(f"INSERT INTO r2fs_changes (ord, bucket, key) VALUES {rows}")
            stmts.append(f"NOTIFY {CHANNEL}")
        stmts.append("COMMIT")
        self.query("; ".join(stmts))


@functools.lru_cache(maxsize=None)
def _commit_shape(nkv: int, nobj: int, nchanges: int) -> tuple[str, str]:
    """(name, PREPARE statement) of a commit's writes: nkv r2fs_kv upserts, nobj
    r2fs_objects upserts (data-modifying CTEs) and nchanges change rows, one statement."""
    types: list[str] = []

    def row(*kinds: str) -> list[str]:
        out = []
        for t in kinds:
            types.append(t)
            out.append(f"${len(types)}")
        return out

    ctes = []
    if nkv:
        rows = ", ".join("(" + ", ".join(row("smallint", "bytea", "bytea")) + ")"
                         for _ in range(nkv))
        ctes.append(f"kv AS (INSERT INTO r2fs_kv (tbl, k, v) VALUES {rows} "
                    "ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v)")
    if nobj:
        rows = ", ".join("(" + ", ".join(row("bytea", "bytea", "bytea")) + ")"
                         for _ in range(nobj))
        ctes.append(f"ob AS (INSERT INTO r2fs_objects (bucket, k, v) VALUES {rows} "
                    "ON CONFLICT (bucket, k) DO UPDATE SET v = EXCLUDED.v)")
    changes = []
    for i in range(nchanges):
        b, k = row("bytea", "bytea")
        changes.append(f"({i}, convert_from({b}, 'UTF8'), convert_from({k}, 'UTF8'))")
    sql = ("WITH " + ", ".join(ctes) + " " if ctes else "") + \
        "INSERT INTO r2fs_changes (ord, bucket, key) VALUES " + ", ".join(changes)
    name = f"r2fs_cm_{nkv}_{nobj}_{nchanges}"
    return name, f"PREPARE {name} ({', '.join(types)}) AS {sql}"


# --- the engine ------------------------------------------------------------------------------------


class PgObjects(ObjectIndex):
    """Object manifests in r2fs_objects: (bucket, UTF-8 key) -> manifest."""

    def get(self, txn: PgTxn, bucket: str, key: str) -> dict | None:
        raw = txn.fetch(("o", bucket.encode()), key.encode("utf-8"))
        return None if raw is None else unpack(raw)

    def put(self, txn: PgTxn, bucket: str, key: str, manifest: dict) -> None:
        txn.store(("o", bucket.encode()), key.encode("utf-8"), pack(manifest))

    def delete(self, txn: PgTxn, bucket: str, key: str) -> dict | None:
        old = self.get(txn, bucket, key)
        if old is not None:
            txn.store(("o", bucket.encode()), key.encode("utf-8"), None)
        return old

    def scan(self, txn: PgTxn, bucket: str, prefix: str = "",
             after: bytes | None = None) -> Iterator[tuple[str, dict]]:
        for k, v in txn.range(("o", bucket.encode()), *_scan_bounds(prefix, after)):
            yield k.decode("utf-8"), unpack(v)

    def scan_all(self, txn: PgTxn) -> Iterator[tuple[str, str, dict]]:
        buckets = [bytes(r[0]) for r in txn.execute(
            "SELECT DISTINCT bucket FROM r2fs_objects ORDER BY bucket").fetchall()]
        for b in buckets:
            name = b.decode()
            for k, v in txn.range(("o", b), b"", None):
                yield name, k.decode("utf-8"), unpack(v)


class PgMeta(MetaEngine):
    """Cluster metadata in a PostgreSQL database (see the module doc)."""

    url_scheme = "postgresql"

    def __init__(self, url: str, *, cluster_id: str, create: bool = False,
                 pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.cluster_id = cluster_id
        self.pool = Pool(url, pool_size)
        self.objects = PgObjects()
        self._recorded = 0
        self._sequences: dict[bytes, str] = {}
        self._ids: dict[bytes, list[int]] = {}
        self._ids_lock = threading.Lock()
        self._listen: psycopg.Connection | None = None
        self._listen_lock = threading.Lock()
        self._turns = _Turns()
        try:
            self._prepare(create)
        except BaseException:
            self.pool.close()
            raise

    def describe(self) -> str:
        return f"PostgreSQL at {redact(self.url)}"

    def close(self) -> None:
        self.pool.close()
        with self._listen_lock:
            if self._listen is not None:
                self._listen.close()
                self._listen = None

    # --- schema -------------------------------------------------------------------------------

    def _prepare(self, create: bool) -> None:
        """Create the schema (create=True, on an empty database) or check and migrate it."""
        conn = self.pool.get()
        ok = False
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(724551)")  # one preparer at a time
                exists = conn.execute("SELECT to_regclass('r2fs_schema') IS NOT NULL").fetchone()[0]
                if not exists:
                    if not create:
                        raise ClusterError(f"{self.describe()} holds no r2fs metadata (the database "
                                           "is empty); refusing to start an empty cluster over "
                                           "existing data")
                    for stmt in _CREATE:
                        conn.execute(stmt)
                    conn.execute("INSERT INTO r2fs_schema (version, cluster_id) VALUES (%s, %s)",
                                 (SCHEMA_VERSION, self.cluster_id))
                    conn.execute("INSERT INTO r2fs_feed (pruned) VALUES (0)")
                else:
                    version, cid = conn.execute("SELECT version, cluster_id FROM r2fs_schema").fetchone()
                    if cid != self.cluster_id:
                        raise ClusterError(f"{self.describe()} holds the metadata of another "
                                           f"r2fs cluster ({cid}, this one is {self.cluster_id})"
                                           + ("; use an empty database" if create else ""))
                    if create:
                        raise ClusterError(f"{self.describe()} already holds this cluster's "
                                           "metadata")
                    if version > SCHEMA_VERSION:
                        raise UnsupportedFormat(
                            f"metadata schema version {version} in {self.describe()} is not "
                            f"supported by this r2fs (it reads version {SCHEMA_VERSION}); "
                            "refusing to open")
                    while version < SCHEMA_VERSION:
                        for stmt in MIGRATIONS[version]:
                            conn.execute(stmt)
                        version += 1
                        conn.execute("UPDATE r2fs_schema SET version = %s", (version,))
            ok = True
        except psycopg.OperationalError as e:
            raise MetadataUnavailable(f"{self.describe()}: {_first_line(e)}") from None
        finally:
            self.pool.put(conn, broken=not ok and conn.closed)

    # --- transactions --------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[PgTxn]:
        txn = PgTxn(self._conn(), write=False, reconnect=self._replace)
        ok = False
        try:
            try:
                yield txn
            except psycopg.OperationalError as e:
                raise MetadataUnavailable(f"{self.describe()}: {_first_line(e)}") from None
            if txn.begun:
                txn.conn.execute("COMMIT")
            ok = True
        except psycopg.OperationalError as e:
            raise MetadataUnavailable(f"{self.describe()}: {_first_line(e)}") from None
        finally:
            self._release(txn.conn, ok)

    def view(self, fn: Callable[[PgTxn], T]) -> T:
        """`fn` with its first statement alone in autocommit: a read of one statement (a
        head with its bucket record prefetched) costs one round trip. If `fn` needs a
        second one, it runs again in a REPEATABLE READ transaction (`read`)."""
        txn = PgTxn(self._conn(), write=False, reconnect=self._replace, single=True)
        ok = False
        try:
            try:
                result = fn(txn)
                ok = True
                return result
            except _NeedSnapshot:
                ok = True
            except psycopg.OperationalError as e:
                raise MetadataUnavailable(f"{self.describe()}: {_first_line(e)}") from None
            except Exception:
                ok = True  # the function's own error (NoSuchKey...): the connection is fine
                raise
        finally:
            self._release(txn.conn, ok)
        with self.read() as txn:
            return fn(txn)

    def prefetch(self, txn: PgTxn, records: Iterable[tuple[str, bytes]] = (),
                 objects: Iterable[tuple[str, str]] = (),
                 scans: Iterable[tuple[str, str, bytes | None, int]] = ()) -> None:
        txn.prefetch([(_TBL[t], k) for t, k in records]
                     + [(("o", b.encode()), k.encode("utf-8")) for b, k in objects],
                     [(("o", b.encode()), *_scan_bounds(p, after), max(1, int(n)))
                      for b, p, after, n in scans])

    def _replace(self, dead: psycopg.Connection) -> psycopg.Connection:
        """A fresh connection for one that failed (the idle ones likely died with it)."""
        self.pool.put(dead, broken=True)
        self.pool.drop_idle()
        return self.pool.get()

    def _conn(self) -> psycopg.Connection:
        return self.pool.get()

    def _release(self, conn: psycopg.Connection, ok: bool) -> None:
        if not ok and not conn.closed:
            try:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
            except psycopg.Error:
                pass
        broken = conn.closed or conn.broken
        self.pool.put(conn, broken=broken)
        if broken:
            self.pool.drop_idle()

    def write(self, fn: Callable[[PgTxn], T]) -> T:
        (item,) = self._run([fn])
        if isinstance(item, _Failed):
            raise item.error
        return item

    def write_many(self, fns: list[Callable[[PgTxn], Any]]) -> list[Any]:
        return [i.error if isinstance(i, _Failed) else i for i in self._run(fns)]

    def _run(self, fns: list[Callable[[PgTxn], Any]]) -> list[Any]:
        """Run `fns` in one SERIALIZABLE transaction, rerunning all of them on 40001/40P01."""
        attempt = 0
        reconnected = False
        lost = False
        while True:
            attempt += 1
            turn = self._turns.retry() if lost else self._turns.first()
            with turn:
                conn = self._conn()
                ok = committing = False
                try:
                    txn = PgTxn(conn, write=True)
                    results = [self._apply(txn, fn) for fn in fns]
                    if all(isinstance(r, _Failed) for r in results):
                        if txn.begun:
                            conn.execute("ROLLBACK")
                    else:
                        committing = True
                        txn.flush()
                    ok = True
                except _RETRY as e:
                    if attempt >= MAX_ATTEMPTS:
                        raise ClusterError(f"a metadata transaction lost {attempt} serialization "
                                           f"races in a row ({_first_line(e)}); try again") from None
                    lost = True
                except psycopg.OperationalError as e:
                    if not committing and not reconnected:
                        reconnected = True  # a stale pooled connection (server restarted): again
                        continue
                    what = ("the commit's outcome is unknown (it may or may not have been applied)"
                            if committing else "nothing was changed")
                    raise MetadataUnavailable(f"{self.describe()}: {_first_line(e)}; {what}") from None
                except psycopg.Error as e:
                    raise ClusterError(f"{self.describe()}: {_first_line(e)}") from None
                finally:
                    self._release(conn, ok)
            if not ok:  # lost a race: again, after a backoff, in this process's retry turn
                time.sleep(random.uniform(0, min(0.2, 0.001 * 2 ** min(attempt, 8))))
                continue
            if committing and txn.layer.changes:
                self._note_recorded(len(txn.layer.changes))
            return results

    @staticmethod
    def _apply(txn: PgTxn, fn: Callable[[PgTxn], Any]) -> Any:
        """Run one function in a buffer layer of its own; its result, or _Failed(its error)."""
        parent = txn.layer
        child = _Layer(parent)
        txn.layer = child
        try:
            result = fn(txn)
        except (psycopg.Error, MetadataUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - handed to its own caller
            return _Failed(exc)
        finally:
            txn.layer = parent
        child.merge_into_parent()
        return result

    # --- table access inside transactions --------------------------------------------------------

    def get(self, txn: PgTxn, table: str, key: bytes) -> Any:
        raw = txn.fetch(_TBL[table], key)
        return None if raw is None else unpack(raw)

    def put(self, txn: PgTxn, table: str, key: bytes, value: Any) -> None:
        txn.store(_TBL[table], key, pack(value))

    def delete(self, txn: PgTxn, table: str, key: bytes) -> bool:
        if txn.fetch(_TBL[table], key) is None:
            return False
        txn.store(_TBL[table], key, None)
        return True

    def scan(self, txn: PgTxn, table: str, prefix: bytes = b"",
             start: bytes | None = None) -> Iterator[tuple[bytes, Any]]:
        lo = start if start is not None and start > prefix else prefix
        for k, v in txn.range(_TBL[table], lo, _successor(prefix)):
            if k.startswith(prefix):
                yield k, unpack(v)

    def count(self, txn: PgTxn, table: str) -> int:
        if txn.write:
            return sum(1 for _ in self.scan(txn, table))
        return txn.execute("SELECT count(*) FROM r2fs_kv WHERE tbl = %s",
                               (_TBL[table],)).fetchone()[0]

    # --- change feed -------------------------------------------------------------------------------

    def next_id(self, txn: PgTxn, key: bytes, first: int = 1) -> int:
        """From a sequence per key (made on first use): no row every allocation updates, so
        concurrent creates do not conflict (a rolled-back allocation leaves a gap). Taken
        ID_BLOCK at a time and handed out from memory (sequences are not transactional, so
        a block outlives the transaction that fetched it): one round trip per block, not
        per create; numbers are unique, increasing per process, with gaps."""
        with self._ids_lock:
            block = self._ids.get(key)
            if block:
                return block.pop()
        seq = self._sequences.get(key)
        if seq is None:
            seq = self._sequence(key, first)
        res = txn.query(f"SELECT nextval('{seq}'::regclass) "  # r2fs_id_<hex>: no quoting
                        f"FROM generate_series(1, {ID_BLOCK})")
        ids = sorted((int(res.get_value(r, 0)) for r in range(res.ntuples)), reverse=True)
        n = ids.pop()
        with self._ids_lock:
            self._ids.setdefault(key, []).extend(ids)
            self._ids[key].sort(reverse=True)
        return n

    def _sequence(self, key: bytes, first: int) -> str:
        name = "r2fs_id_" + key.hex()
        conn = self._conn()
        ok = False
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(724552)")
                if conn.execute("SELECT 1 FROM r2fs_ids WHERE k = %s", (key,)).fetchone() is None:
                    row = conn.execute("SELECT v FROM r2fs_kv WHERE tbl = %s AND k = %s",
                                       (_TBL["info"], key)).fetchone()
                    start = max(first, unpack(row[0]) + 1 if row else first)
                    conn.execute(f"CREATE SEQUENCE {name} START {int(start)}")
                    conn.execute("INSERT INTO r2fs_ids (k, seq) VALUES (%s, %s)", (key, name))
            ok = True
        finally:
            self._release(conn, ok)
        self._sequences[key] = name
        return name

    def record_change(self, txn: PgTxn, bucket: str, key: str) -> None:
        txn.layer.changes.append((bucket, key))

    def _note_recorded(self, n: int) -> None:
        self._recorded += n
        if self._recorded >= PRUNE_EVERY:
            self._recorded = 0
            try:
                self.prune_changes()
            except (psycopg.Error, MetadataUnavailable) as e:
                log.warning("pruning the change feed failed (retried later): %s", e)

    def prune_changes(self, keep: int = CHANGE_HISTORY) -> int:
        """Delete all but the newest `keep` changes; remember how far (for the feed's readers).

        Only rows above the mark of earlier prunes go: a transaction that commits after
        a prune passed its xid leaves rows below the mark, and they stay (a reader that
        saw it in progress reads them later, see `feed_read`; they are rare -- the
        transaction was open while `keep` newer changes were made). One statement, so
        the mark it starts from and the rows it deletes are of one snapshot."""
        conn = self._conn()
        ok = False
        try:
            row = conn.execute(
                "WITH r AS (SELECT xid, ord FROM r2fs_changes ORDER BY xid DESC, ord DESC "
                "OFFSET %s LIMIT 1), "
                "f AS (SELECT pruned FROM r2fs_feed), "
                "d AS (DELETE FROM r2fs_changes c USING r, f "
                "WHERE (c.xid, c.ord) <= (r.xid, r.ord) AND (c.xid, c.ord) > "
                "(((f.pruned >> 24)::text)::xid8, (f.pruned & 16777215)::int) RETURNING 1) "
                "UPDATE r2fs_feed SET pruned = greatest(pruned, "
                "(SELECT (xid::text::bigint << 24) + ord FROM r)) WHERE EXISTS (SELECT 1 FROM r) "
                "RETURNING (SELECT count(*) FROM d)", (keep,)).fetchone()
            ok = True
            return 0 if row is None else int(row[0])
        finally:
            self._release(conn, ok)

    def change_seq(self) -> int:
        """One statement (a mount's poller asks after every change it is woken for)."""
        res = self.view(lambda txn: txn.query(
            "SELECT coalesce((SELECT (xid::text::bigint << 24) + ord FROM r2fs_changes "
            "WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) "
            "ORDER BY xid DESC, ord DESC LIMIT 1), (SELECT pruned FROM r2fs_feed))"))
        return int(res.get_value(0, 0))

    def changes_since(self, seq: int, limit: int) -> tuple[int, list[tuple[int, str, str]]]:
        """One statement: the pruned mark (first row) and the changes after `seq`."""
        xid, ord_ = seq >> ORD_BITS, seq & ((1 << ORD_BITS) - 1)
        res = self.view(lambda txn: txn.query(
            "SELECT -1::bigint, pruned, NULL, NULL FROM r2fs_feed UNION ALL "
            "(SELECT xid::text::bigint, ord, bucket, key FROM r2fs_changes "
            f"WHERE (xid, ord) > ('{int(xid)}'::xid8, {int(ord_)}) "
            "AND xid < pg_snapshot_xmin(pg_current_snapshot()) "
            f"ORDER BY xid, ord LIMIT {int(limit)})"))
        pruned, out = 0, []
        for r in range(res.ntuples):
            x, o = int(res.get_value(r, 0)), int(res.get_value(r, 1))
            if x < 0:
                pruned = o
            else:
                out.append(((x << ORD_BITS) + o, res.get_value(r, 2).decode("utf-8"),
                            res.get_value(r, 3).decode("utf-8")))
        return pruned + 1, out

    # following the feed without waiting for older transactions ------------------------------

    def feed_start(self) -> "FeedCursor":
        """Past everything committed now: every xid below the snapshot's xmax, but those
        still in progress (their rows are read when they end)."""
        res = self.view(lambda txn: txn.query(
            "SELECT pruned, " + _SNAPSHOT + " FROM r2fs_feed"))
        mark, xmax, xip = _snapshot_row(res, 0)
        return FeedCursor((xmax << ORD_BITS) - 1, {x: (-1, mark) for x in xip})

    def feed_read(self, cursor: "FeedCursor", limit: int) -> FeedBatch:
        """One statement, one snapshot: the prune mark, the snapshot's in-progress xids,
        the visible rows after the cursor's position, and the rows of the transactions
        it holds as pending that have since ended.

        Why not `changes_since`: its rows stop at the server-wide xmin, so any open
        transaction anywhere on the server (another database, a psql session, a long
        rename_prefix) would hold back every mount's feed until it ends. Here every
        visible row after the position is read at once; a transaction still in
        progress below the new position (its xid is lower than a row read, so its rows,
        when it commits, land behind the position) is remembered with how far its rows
        were read, and its rows are read by xid once it has ended. So a change that
        commits late with a lower seq is delivered late, never skipped.

        Pruning (rows up to the mark deleted) is detected: a position below the mark
        may have lost rows ahead of it; a pending transaction's unread rows may be gone
        if they lie below the mark and a prune ran since it was last seen in progress
        (a prune deletes only above the mark it read, and it could see the rows only
        if it ran after the transaction ended)."""
        pos = cursor.pos
        px, po = pos >> ORD_BITS, pos & _ORD_MASK
        sql = ("SELECT -1::bigint, NULL::int, NULL::text, NULL::text, pruned, " + _SNAPSHOT
               + " FROM r2fs_feed UNION ALL (SELECT xid::text::bigint, ord, bucket, key, "
               "NULL, NULL, NULL FROM r2fs_changes "
               f"WHERE (xid, ord) > ('{int(px)}'::xid8, {int(po)}) ORDER BY xid, ord "
               f"LIMIT {int(limit)})")
        if cursor.pending:
            vals = ", ".join(f"('{int(x)}'::xid8, {int(o)})"
                             for x, (o, _) in sorted(cursor.pending.items()))
            sql += (" UNION ALL (SELECT -2 - c.xid::text::bigint, c.ord, c.bucket, c.key, "
                    "NULL, NULL, NULL FROM r2fs_changes c JOIN (VALUES " + vals + ") "
                    "p(x, o) ON c.xid = p.x AND c.ord > p.o ORDER BY c.xid, c.ord "
                    f"LIMIT {int(limit)})")
        res = self.view(lambda txn: txn.query(sql))
        main: list[tuple[int, str, str]] = []
        late: list[tuple[int, str, str]] = []
        mark = xmax = 0
        xip: list[int] = []
        for r in range(res.ntuples):
            x = int(res.get_value(r, 0))
            if x == -1:
                mark, xmax, xip = _snapshot_row(res, r, col=4)
                continue
            row = ((x << ORD_BITS) if x >= 0 else ((-2 - x) << ORD_BITS)) + int(res.get_value(r, 1))
            (main if x >= 0 else late).append(
                (row, res.get_value(r, 2).decode("utf-8"), res.get_value(r, 3).decode("utf-8")))
        in_progress = set(xip)
        if pos < mark or any(_unread_pruned(x, o, m, mark)
                             for x, (o, m) in cursor.pending.items() if x not in in_progress):
            return FeedBatch(FeedCursor((xmax << ORD_BITS) - 1, {x: (-1, mark) for x in xip}),
                             [], lost=True)
        pending: dict[int, tuple[int, int]] = {}
        late_cut = len(late) >= limit
        last_late = late[-1][0] >> ORD_BITS if late_cut else None
        for x, (o, m) in cursor.pending.items():
            if x in in_progress:
                pending[x] = (o, mark)  # seen in progress now: no prune so far took its rows
            elif last_late is not None and x >= last_late:
                if x == last_late:
                    pending[x] = (late[-1][0] & _ORD_MASK, mark)  # read this far
                else:
                    pending[x] = (o, m)  # ended, not read yet (the batch was cut)
        new_pos = main[-1][0] if main else pos
        for x in xip:
            if x < new_pos >> ORD_BITS and x not in pending:
                pending[x] = (-1, mark)  # behind the new position, still to commit
        return FeedBatch(FeedCursor(new_pos, pending), late + main,
                         more=late_cut or len(main) >= limit)

    async def wait_for_change(self, timeout: float, others_only: bool = False) -> None:
        """Return when a change was committed (NOTIFY), or after `timeout` seconds.
        `others_only`: not for a NOTIFY sent by one of this engine's connections."""
        conn = await trio.to_thread.run_sync(self._listener)
        if conn is None:
            await trio.sleep(timeout)
            return
        with trio.move_on_after(timeout):
            while True:
                if await trio.to_thread.run_sync(self._drain, conn, others_only):
                    return
                await trio.lowlevel.wait_readable(conn.pgconn.socket)

    def _listener(self) -> psycopg.Connection | None:
        with self._listen_lock:
            if self._listen is not None and not self._listen.closed:
                return self._listen
            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                       application_name="r2fs-listen")
                conn.execute(f"LISTEN {CHANNEL}")
            except psycopg.Error as e:
                log.warning("cannot LISTEN for metadata changes (polling instead): %s", e)
                return None
            self._listen = conn
            return conn

    def _drain(self, conn: psycopg.Connection, others_only: bool = False) -> bool:
        """Read what arrived on the listening connection; True if it held a notification
        (`others_only`: one from a server process not of this engine's pool)."""
        pg = conn.pgconn
        try:
            pg.consume_input()
        except psycopg.Error:
            with self._listen_lock:
                if self._listen is conn:
                    self._listen = None
            conn.close()
            return True  # cannot tell what was missed: let the poller look
        got = False
        own = self.pool.pids if others_only else ()
        while (n := pg.notifies()) is not None:
            if n.be_pid not in own:
                got = True
        return got


#: The prune mark's columns: the statement's snapshot's xmax, and its in-progress xids.
_SNAPSHOT = ("pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
             "(SELECT string_agg(x::text, ',') FROM pg_snapshot_xip(pg_current_snapshot()) x)")
_ORD_MASK = (1 << ORD_BITS) - 1


def _snapshot_row(res: Any, r: int, col: int = 0) -> tuple[int, int, list[int]]:
    """(prune mark, xmax, in-progress xids) from `_SNAPSHOT`'s columns after the mark."""
    xip = res.get_value(r, col + 2)
    return (int(res.get_value(r, col)), int(res.get_value(r, col + 1)),
            [int(x) for x in xip.split(b",")] if xip else [])


def _unread_pruned(xid: int, read_to: int, seen_mark: int, mark: int) -> bool:
    """Whether rows of transaction `xid` after ordinal `read_to` may have been pruned:
    prunes since it was last seen (at prune mark `seen_mark`) deleted rows in
    (seen_mark, mark] only."""
    return (xid << ORD_BITS) + read_to < mark and seen_mark < ((xid + 1) << ORD_BITS) - 1


class FeedCursor:
    """Where a reader of the PostgreSQL change feed is: every row at or below position
    `pos` is read, except rows of the transactions in `pending` (xid -> (ordinal read
    up to, -1: none; the prune mark when it was last seen in progress or read)),
    which were in progress or not fully read."""

    __slots__ = ("pos", "pending")

    def __init__(self, pos: int, pending: dict[int, tuple[int, int]]) -> None:
        self.pos = pos
        self.pending = pending

    def __repr__(self) -> str:
        return f"FeedCursor({self.pos}, {self.pending})"


class _Turns:
    """Transactions of one process that lost a serialization race run again one at a
    time, and this process's new transactions wait while one does.

    Why: a mount publishes bursts of files as concurrent group commits that all touch
    one directory (its marker, neighbouring index pages); under SERIALIZABLE they
    abort each other, and with plain retries the same ones kept colliding -- 30 lost
    races in a row, 63 closed files never published (tools/bench meta, 2,000 files in
    one directory). A retry now meets only the transactions already in flight.
    Re-entrant per thread (a transaction function never waits on its own turn)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder: int | None = None  # thread id of the transaction retrying now

    @contextmanager
    def first(self) -> Iterator[None]:
        with self._cond:
            while self._holder not in (None, threading.get_ident()):
                self._cond.wait()
        yield

    @contextmanager
    def retry(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._holder == me:  # (nested: already this thread's turn)
                nested = True
            else:
                nested = False
                while self._holder is not None:
                    self._cond.wait()
                self._holder = me
        try:
            yield
        finally:
            if not nested:
                with self._cond:
                    self._holder = None
                    self._cond.notify_all()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
