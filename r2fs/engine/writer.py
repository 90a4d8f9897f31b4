"""Storing chunks: content-addressed, deduplicated, crash-safe, region-aware.

A chunk is stored before any manifest refers to it and then recorded with
refcount 0 (queued for gc); the manifest commit that follows takes the
reference. A process killed in between leaves an unreferenced chunk that gc
removes -- never a manifest pointing at nothing.

Two write modes (R2's Local Uploads):

* `sync`: the chunk is sealed, RS-coded and all k+m shards are durable on the
  nodes before the record is written (loc="nodes").
* `local`: the sealed chunk is made durable in the local staging area and the
  record (loc="staging") is written together with a replication-journal entry
  in ONE transaction; the replicator (replicator.py) spreads it later. The
  write costs one local fsync instead of k+m round trips to a far region.

The default follows R2: `sync` when this writer runs in the bucket's home
region (or no region was given: "at the bucket's home"), `local` when it runs
elsewhere; `configure(mode=...)` overrides it.

Placement: a bucket's location hint names its home region; its chunks go to
that region's nodes when it has at least k+m of them, otherwise over all
nodes -- rendezvous hashing either way.

Every write gets a fresh random generation number that is part of the shard
and staging file names, so a writer re-storing a chunk that gc is deleting at
the same moment can never have its new files removed by gc's old deletion.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable

import trio

from .errors import DataUnavailable, InvalidClusterConfig
from .meta import CHUNK_LIVE
from .nodes import place
from .staging import Staging
from .types import ChunkRef

if TYPE_CHECKING:
    from .store import Cluster

#: A deduplicated chunk's `touched` time is refreshed at most this often (a write txn).
TOUCH_INTERVAL = 10.0
WRITE_MODES = ("sync", "local")
LOC_NODES = "nodes"
LOC_STAGING = "staging"


def new_journal_entry(bucket: str | None, gen: int, sealed_len: int, plain_len: int) -> dict:
    """A replication-journal entry (schema shared with replicator.py)."""
    return {"b": bucket, "g": gen, "l": sealed_len, "n": plain_len, "t": time.time(),
            "a": 0, "next": 0.0, "err": None, "lease": 0.0, "owner": None}


class ChunkWriter:
    """Writes chunks to the nodes (`sync`) or to local staging (`local`)."""

    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster
        self.staging = Staging(cluster.path)
        self.mode: str | None = None  # None: decided per bucket by region
        self.region: str | None = None  # None: "at the bucket's home"
        self._listeners: list[Callable[[], None]] = []
        regions: dict[str, list[str]] = defaultdict(list)
        for n in cluster.config.nodes:
            regions[n.region].append(n.id)
        self.regions: dict[str, list[str]] = dict(regions)

    # --- configuration ------------------------------------------------------------------

    def configure(self, *, mode: str | None = None, region: str | None = None) -> None:
        """Set where this process runs and how it acknowledges writes.

        `mode` None: by region (see the module doc). `region` must be one of
        the cluster's regions (a typo would silently turn every write local).
        """
        if mode is not None and mode not in WRITE_MODES:
            raise InvalidClusterConfig(f"unknown write mode {mode!r} (use sync or local)")
        if region is not None and region not in self.regions:
            raise InvalidClusterConfig(f"unknown region {region!r}; this cluster's regions: "
                                       f"{', '.join(sorted(self.regions))}")
        self.mode = mode
        self.region = region

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call `fn()` (on the trio thread) after each chunk staged by this process."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    # --- regions and placement ------------------------------------------------------------

    def home_region(self, txn: Any, bucket: str | None) -> str | None:
        """The bucket's location hint if it names a region of this cluster, else None."""
        if not bucket:
            return None
        rec = self.cluster.meta.get(txn, "buckets", bucket.encode())
        loc = rec.get("location") if rec else None
        return loc if loc in self.regions else None

    def mode_for(self, home: str | None) -> str:
        if self.mode is not None:
            return self.mode
        if self.region is None or home is None or self.region == home:
            return "sync"
        return "local"

    def _place(self, cid: bytes, home: str | None) -> list[str]:
        cfg = self.cluster.config
        n = cfg.k + cfg.m
        candidates = self.regions.get(home, []) if home else []
        if len(candidates) < n:
            candidates = cfg.node_ids
        return place(cid, candidates, n)

    def placement(self, cid: bytes, bucket: str | None) -> list[str]:
        with self.cluster.meta.read() as txn:
            return self._place(cid, self.home_region(txn, bucket))

    # --- status and staged reads -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The `uploads` section of ClusterStatus.extra (blocking: journal scan)."""
        from .replicator import backlog, live_replicators
        b = backlog(self.cluster)
        section: dict[str, Any] = {}
        if self.mode or self.region:  # this process's settings (a mount or gateway)
            section["write mode"] = self.mode or "by region (sync at home, local elsewhere)"
            section["region"] = self.region or "the bucket's home"
        section.update({
            "backlog chunks": b.chunks,
            "backlog bytes": b.bytes,
            "oldest (s)": round(b.oldest_age, 1),
        })
        if b.failing:
            section["failing chunks"] = b.failing
            section["last error"] = b.last_error
        section["replicators running"] = len(live_replicators(self.cluster))
        return {"uploads": section}

    def read_staged(self, cid: bytes) -> bytes | None:
        """The sealed chunk if it is in local staging (loc="staging"), else None. Blocking.

        Safe against the replicator finishing in between: when the chunk left
        staging after the caller looked at its record, the sealed chunk is
        read from the nodes it now lives on, so a reader holding a stale
        record never sees a spurious failure.
        """
        c = self.cluster
        rec = c.chunk_record(cid)
        if rec is None or rec.get("loc") != LOC_STAGING:
            return None
        sealed = self.staging.read(cid, rec["g"])
        if sealed is not None:
            return sealed
        now = c.chunk_record(cid)
        if now is None:
            return None
        if now.get("loc") == LOC_STAGING:
            if now["g"] != rec["g"]:
                sealed = self.staging.read(cid, now["g"])
                if sealed is not None:
                    return sealed
            raise DataUnavailable(f"chunk {cid.hex()} is recorded in local staging but "
                                  f"{self.staging.path_of(cid, now['g'])} is missing")
        return bytes(c.chunks.read_sealed(cid, now["g"], now["p"], now["l"]))

    # --- writes ---------------------------------------------------------------------------------

    def _home(self, bucket: str | None) -> str | None:
        with self.cluster.meta.read() as txn:
            return self.home_region(txn, bucket)

    def _live(self, cid: bytes) -> dict | None:
        rec = self.cluster.chunk_record(cid)
        return rec if rec is not None and rec["s"] == CHUNK_LIVE else None

    async def write(self, data: bytes, *, bucket: str | None = None) -> ChunkRef:
        c = self.cluster
        home = self._home(bucket)
        if self.mode_for(home) == "local":
            # one worker-thread hop for hash + dedup check + seal + stage + record:
            # the acknowledged latency is what local mode is about
            cid, rec, staged = await trio.to_thread.run_sync(self._write_local, data, home, bucket)
            if staged:
                for fn in list(self._listeners):
                    fn()
        else:
            cid = await trio.to_thread.run_sync(c.master.chunk_id, data)
            rec = self._live(cid)
            if rec is None:
                await self._write_sync(cid, secrets.randbits(31), data, self._place(cid, home))
        if rec is not None and rec["t"] < time.time() - TOUCH_INTERVAL:
            await c._write(lambda txn: self._touch(txn, cid))
        return ChunkRef(cid, len(data))

    def _write_local(self, data: bytes, home: str | None,
                     bucket: str | None) -> tuple[bytes, dict | None, bool]:
        """(chunk id, live record if deduplicated, whether this call staged it). Blocking."""
        cid = self.cluster.master.chunk_id(data)
        rec = self._live(cid)
        if rec is not None:
            return cid, rec, False
        staged = self._stage(cid, secrets.randbits(31), data, self._place(cid, home), bucket)
        return cid, None, staged

    async def _write_sync(self, cid: bytes, gen: int, data: bytes, placement: list[str]) -> None:
        c = self.cluster
        sealed_len, _ = await trio.to_thread.run_sync(c.chunks.seal_and_write, cid, gen, data,
                                                      placement)
        record = {"r": 0, "n": len(data), "l": sealed_len, "g": gen, "p": placement,
                  "s": CHUNK_LIVE, "t": time.time(), "loc": LOC_NODES}
        if not await c._write(lambda txn: self._create(txn, cid, record, None)):
            await trio.to_thread.run_sync(c.chunks.delete_shards, cid, gen, placement)

    def _stage(self, cid: bytes, gen: int, data: bytes, placement: list[str],
               bucket: str | None) -> bool:
        """Seal, stage durably, then record + journal in one txn (blocking). True if recorded."""
        c = self.cluster
        sealed = c.chunks.seal(cid, data)
        self.staging.write(cid, gen, sealed)
        record = {"r": 0, "n": len(data), "l": len(sealed), "g": gen, "p": placement,
                  "s": CHUNK_LIVE, "t": time.time(), "loc": LOC_STAGING}
        journal = new_journal_entry(bucket, gen, len(sealed), len(data))
        try:
            created = c.meta.write(lambda txn: self._create(txn, cid, record, journal))
        except BaseException:
            self.staging.delete(cid, gen)
            raise
        if not created:
            self.staging.delete(cid, gen)
        return created

    def _create(self, txn: Any, cid: bytes, record: dict, journal: dict | None) -> bool:
        """Record a freshly stored chunk unless someone stored it first (then ours is surplus)."""
        c = self.cluster
        cur = c.meta.get(txn, "chunks", cid)
        if cur is not None and cur["s"] == CHUNK_LIVE:
            cur["t"] = time.time()
            c.meta.put(txn, "chunks", cid, cur)
            return False
        c.meta.put(txn, "chunks", cid, record)
        c.meta.put(txn, "gcq", cid, b"")
        if journal is not None:
            c.meta.put(txn, "journal", cid, journal)
        else:
            c.meta.delete(txn, "journal", cid)  # a stale entry of an older, collected copy
        return True

    def _touch(self, txn: Any, cid: bytes) -> None:
        c = self.cluster
        rec = c.meta.get(txn, "chunks", cid)
        if rec is not None:
            rec["t"] = time.time()
            c.meta.put(txn, "chunks", cid, rec)
