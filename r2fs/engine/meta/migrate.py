"""Moving a cluster's metadata from the embedded LMDB engine to PostgreSQL.

So a user can start embedded and grow onto many hosts: `r2fs meta migrate
--to postgresql://...` copies every table (the change feed starts afresh),
then verifies the copy (count and BLAKE2b digest of every table, read back
from the server), and only then points cluster.toml at the database and
moves meta/ aside (meta.migrated-TIME, never deleted). Refused while any
process has the LMDB environment open, and into a database that already
holds r2fs metadata. Interrupted before the switch, it changed nothing the
cluster uses (run it again with an empty database).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .. import config as cfgmod
from ..errors import ClusterError
from .interface import TABLES, MetaEngine, pack

BATCH = 2000
#: Tables not copied: the change feed (each engine keeps its own); objects go separately.
NOT_COPIED = ("changes", "objects")
#: `info` entries that are the LMDB engine's own bookkeeping.
LMDB_INFO = (b"schema", b"seq")


@dataclass
class MigrateReport:
    url: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    old_meta: str = ""


def _entries(meta: MetaEngine, txn: Any, table: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, packed value) of a table in key order; objects as (bucket NUL key, manifest)."""
    if table == "objects":
        for bucket, key, manifest in meta.objects.scan_all(txn):
            yield bucket.encode() + b"\0" + key.encode("utf-8"), pack(manifest)
    else:
        for k, v in meta.scan(txn, table):
            if table == "info" and bytes(k) in LMDB_INFO:
                continue
            yield bytes(k), pack(v)


def table_digest(meta: MetaEngine, table: str) -> tuple[int, str]:
    """(entries, digest) of one table as this engine reads it back."""
    h = hashlib.blake2b(digest_size=32)
    n = 0
    with meta.read() as txn:
        for k, v in _entries(meta, txn, table):
            h.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(8, "big") + v)
            n += 1
    return n, h.hexdigest()


def copy_tables(src: MetaEngine, dst: MetaEngine,
                progress: Callable[[str, int], None] = lambda t, n: None) -> dict[str, int]:
    """Copy every table but NOT_COPIED and the objects, in batches; counts per table."""
    counts: dict[str, int] = {}
    for table in [t for t in TABLES if t not in NOT_COPIED] + ["objects"]:
        counts[table] = 0
        with src.read() as txn:
            if table == "objects":
                rows: Iterator[tuple[Any, ...]] = ((b, k, m) for b, k, m in src.objects.scan_all(txn))
            else:
                rows = ((k, v) for k, v in src.scan(txn, table)
                        if not (table == "info" and bytes(k) in LMDB_INFO))
            batch: list[tuple[Any, ...]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= BATCH:
                    _write_batch(dst, table, batch)
                    counts[table] += len(batch)
                    progress(table, counts[table])
                    batch = []
            if batch:
                _write_batch(dst, table, batch)
                counts[table] += len(batch)
                progress(table, counts[table])
    return counts


def _write_batch(dst: MetaEngine, table: str, batch: list[tuple[Any, ...]]) -> None:
    def fn(txn: Any) -> None:  # safe to rerun: only puts of fixed values
        for row in batch:
            if table == "objects":
                dst.objects.put(txn, row[0], row[1], row[2])
            else:
                dst.put(txn, table, bytes(row[0]), row[1])
    dst.write(fn)


def migrate_to_postgresql(root: str, url: str,
                          progress: Callable[[str, int], None] = lambda t, n: None) -> MigrateReport:
    from ..metasnap import _aside_name, _in_use, _process_has_env
    from ..nodeops import config_lock
    from . import lmdb_dir
    from .lmdb import LmdbMeta
    from .postgresql import PgMeta, redact

    started = time.monotonic()
    cfgmod.check_meta_url(url, "--to")
    cfg = cfgmod.load(root)
    if cfg.meta_url:
        raise ClusterError(f"the metadata of the cluster at {root} is already in "
                           f"{redact(cfg.meta_url)}; nothing to migrate")
    meta_dir = lmdb_dir(root)
    if not os.path.exists(os.path.join(meta_dir, "data.mdb")):
        raise ClusterError(f"no LMDB metadata at {meta_dir} to migrate")
    if _process_has_env(meta_dir) or _in_use(meta_dir):
        raise ClusterError(f"the metadata at {meta_dir} is in use by a running r2fs process "
                           "(a mount or gateway); stop every one before migrating")
    report = MigrateReport(redact(url))
    src = LmdbMeta(meta_dir)
    try:
        dst = PgMeta(url, cluster_id=cfg.cluster_id, create=True)
        try:
            report.counts = copy_tables(src, dst, progress)
            for table in [t for t in TABLES if t not in NOT_COPIED] + ["objects"]:
                want, got = table_digest(src, table), table_digest(dst, table)
                if want != got:
                    raise ClusterError(f"verifying the copy failed for table {table}: LMDB has "
                                       f"{want[0]} entries, {report.url} {got[0]} (or their "
                                       "contents differ); cluster.toml was not changed")
        finally:
            dst.close()
    finally:
        src.close()
    with config_lock(root):
        fresh = cfgmod.load(root)
        fresh.meta_url = url
        cfgmod.save(fresh, root)
    report.old_meta = _aside_name(root, "meta.migrated")
    os.rename(meta_dir, report.old_meta)
    report.seconds = time.monotonic() - started
    return report
