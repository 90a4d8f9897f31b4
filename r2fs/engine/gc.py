"""Garbage collection: removing chunks no manifest refers to, off the hot path.

Deletes only decrement refcounts; chunks whose count reached 0 wait in the
`gcq` table. gc (1) marks candidates older than the grace period as
deleting in one transaction -- from then on no commit may take a reference to
them (ChunkMissing) and the replicator will not move them to the nodes --
(2) deletes their data: the shard files, or the staging file for a chunk that
was never replicated (loc="staging"), (3) forgets the records (and their
replication-journal entries) whose generation is unchanged. A kill between the
steps is harmless: a marked record is picked up again by the next run, and so
is one whose data could not be deleted (a node down). Leftovers no record
claims -- shard files of writers or replicators killed mid-way, staging files
of replicators killed after the flip, journal entries of collected chunks --
are removed once older than `orphan_grace`.

Metadata snapshots (metasnap) name chunks too: a restore from the newest
snapshot must not point at collected data. So each `gcq` entry records when
the chunk's refcount reached 0, and gc keeps every chunk that reached 0 after
the newest snapshot was started; it first takes a fresh snapshot (when the
metadata changed) so that this holds back as little as possible.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from . import metasnap
from .chunks import ChunkStore
from .meta import CHUNK_DELETING
from .nodes import TEMP_SUFFIX, NodeUnavailable
from .replicator import sweep_staging
from .types import GcReport
from .writer import LOC_META, LOC_STAGING

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger(__name__)


async def collect_garbage(c: "Core", *, grace: float, orphan_grace: float) -> GcReport:
    report = GcReport()
    cutoff = time.time() - grace
    horizon = await trio.to_thread.run_sync(_snapshot_horizon, c)

    def mark(txn: Any) -> list[tuple[bytes, dict]]:
        doomed = []
        for cid, dropped in list(c.meta.scan(txn, "gcq")):
            rec = c.meta.get(txn, "chunks", cid)
            if rec is None or rec["r"] > 0:
                c.meta.delete(txn, "gcq", cid)
                continue
            if rec["s"] != CHUNK_DELETING and horizon is not None:
                if not isinstance(dropped, float):  # queued before drop times were kept
                    c.meta.queue_for_gc(txn, cid)
                    report.held_for_snapshot += 1
                    continue
                if dropped >= horizon:  # the newest snapshot may name it
                    report.held_for_snapshot += 1
                    continue
            if rec["s"] == CHUNK_DELETING or rec["t"] <= cutoff:
                rec["s"] = CHUNK_DELETING
                c.meta.put(txn, "chunks", cid, rec)
                doomed.append((cid, rec))
        return doomed

    doomed = await c.transact(mark)
    deleted = []
    for cid, rec in doomed:
        try:
            if rec.get("loc") == LOC_META:
                freed = rec["l"]  # a slice kept in its record: forgetting it frees it
            elif rec.get("loc") == LOC_STAGING:
                freed = await trio.to_thread.run_sync(_unstage, c, cid, rec["g"])
            else:
                n, freed = await trio.to_thread.run_sync(c.chunks.delete_shards, cid, rec["g"],
                                                         rec["p"])
                report.shards_removed += n
        except (NodeUnavailable, OSError):
            continue  # stays marked: the next run finishes it when the node is back
        report.bytes_freed += freed
        deleted.append((cid, rec))

    def forget(txn: Any) -> int:
        removed = 0
        for cid, rec in deleted:
            cur = c.meta.get(txn, "chunks", cid)
            if cur is not None and cur["s"] == CHUNK_DELETING and cur["g"] == rec["g"]:
                c.meta.delete(txn, "chunks", cid)
                c.meta.delete(txn, "gcq", cid)
                removed += 1
        for cid, j in list(c.meta.scan(txn, "journal")):
            cur = c.meta.get(txn, "chunks", cid)
            if cur is None or cur.get("loc") != LOC_STAGING or cur["g"] != j.get("g"):
                c.meta.delete(txn, "journal", cid)  # its chunk is gone or already replicated
        return removed

    report.chunks_removed = await c.transact(forget)
    report.orphans_removed, freed = await trio.to_thread.run_sync(_remove_orphans, c, orphan_grace)
    report.bytes_freed += freed
    staged, freed = await trio.to_thread.run_sync(sweep_staging, c, orphan_grace)
    report.orphans_removed += staged
    report.bytes_freed += freed
    return report


def _snapshot_horizon(c: "Core") -> float | None:
    """When the newest metadata snapshot started (after refreshing it), or None without any.

    With no snapshot there is nothing to restore from, so nothing to protect."""
    if metasnap.gc_horizon(c) is None:
        return None
    try:
        metasnap.maybe_snapshot(c, min_interval=0)
    except Exception as e:  # noqa: BLE001 - gc still runs, holding back more
        log.warning("gc: could not refresh the metadata snapshot (%s); chunks dropped since "
                    "the newest one are kept", e)
    return metasnap.gc_horizon(c)


def _unstage(c: "Core", cid: bytes, gen: int) -> int:
    path = c.staging.path_of(cid, gen)
    return c.staging.remove_file(path)


def _is_temp(name: str) -> bool:
    """A shard write's temp file (`.<shard name>.<random>.tmp`) left by a killed process."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and base.endswith(TEMP_SUFFIX)


def _remove_orphans(c: "Core", grace: float) -> tuple[int, int]:
    """Shard files no chunk record places on their node (of collected chunks, or copies
    a killed rebalance left) and temp files of shard writes killed mid-way (writers,
    replicators), older than grace."""
    cutoff = time.time() - grace
    removed = freed = 0
    for node in c.nodes.values():
        if not node.available():
            continue
        try:
            for name, mtime in list(node.names()):
                if mtime > cutoff:
                    continue
                parsed = ChunkStore.parse_shard_name(name)
                if parsed is None:
                    if not _is_temp(name):
                        continue  # not ours to judge
                else:
                    cid, gen, index = parsed
                    rec = c.chunk_record(cid)
                    if rec is not None and rec["g"] == gen and (
                            index >= len(rec["p"]) or rec["p"][index] == node.id):
                        continue  # (a copy where the record does not place it: a killed move's)
                size = node.size_of(name) or 0
                if node.delete(name):
                    removed += 1
                    freed += size
        except (NodeUnavailable, OSError):
            continue  # the node went away meanwhile: the next run does the rest
    return removed, freed
