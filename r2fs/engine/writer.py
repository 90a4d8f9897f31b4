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

import os
import secrets
import signal
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import trio

from .chunks import borrow, give_back
from .crypto import SEAL_OVERHEAD, seal_chunk_into
from .errors import DataUnavailable, InvalidClusterConfig
from .meta import CHUNK_LIVE
from .nodes import DirSync, start_sync, sync_dirs
from .types import ChunkRef

if TYPE_CHECKING:
    from .core import Core

#: A deduplicated chunk's `touched` time is refreshed at most this often (a write txn).
TOUCH_INTERVAL = 10.0
#: A put's chunks are recorded in its manifest commit; a put running longer
#: than this first records the chunks stored so far in a commit of their own,
#: so that no file waits unrecorded for long: gc's orphan scan and the staging
#: sweep spare unrecorded files only for `orphan_grace` (600 s by default).
BATCH_MAX_AGE = 10.0
WRITE_MODES = ("sync", "local")
T = TypeVar("T")
LOC_NODES = "nodes"
LOC_STAGING = "staging"
#: A small slice (an in-place update smaller than SLICE_INLINE_MAX): its sealed
#: bytes live in the chunk record itself ("d"), committed with the manifest that
#: references it; nothing on the nodes (p=[]). See slices.py.
LOC_META = "meta"


#: TEST HOOK ONLY: "stored", "synced" or "committed"; a put SIGKILLs its own process
#: right after that step of `ChunkWriter.commit`, so tests can prove that a kill at
#: any step leaves either the old object or the whole new one, never a dangling manifest.
TEST_KILL_ENV = "R2FS_TEST_KILL_PUT_AFTER"


def _test_hook_kill_after(step: str) -> None:
    if os.environ.get(TEST_KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def new_journal_entry(bucket: str | None, gen: int, sealed_len: int, plain_len: int) -> dict:
    """A replication-journal entry (schema shared with replicator.py)."""
    return {"b": bucket, "g": gen, "l": sealed_len, "n": plain_len, "t": time.time(),
            "a": 0, "next": 0.0, "err": None, "lease": 0.0, "owner": None}


class ChunkWriter:
    """Writes chunks to the nodes (`sync`) or to local staging (`local`)."""

    def __init__(self, core: "Core") -> None:
        self.core = core
        self.staging = core.staging
        self.regions = core.regions
        self.mode: str | None = None  # None: decided per bucket by region
        self.region: str | None = None  # None: "at the bucket's home"

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

    # --- regions and placement ------------------------------------------------------------

    def mode_for(self, home: str | None) -> str:
        if self.mode is not None:
            return self.mode
        if self.region is None or home is None or self.region == home:
            return "sync"
        return "local"

    # --- status and staged reads -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The `uploads` section of ClusterStatus.extra (blocking: journal scan)."""
        from .replicator import backlog, live_replicators
        b = backlog(self.core)
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
        section["replicators running"] = len(live_replicators(self.core))
        return {"uploads": section}

    # --- writes ---------------------------------------------------------------------------------

    def _home(self, bucket: str | None) -> str | None:
        with self.core.meta.read() as txn:
            return self.core.home_region(txn, bucket)

    def _live(self, cid: bytes) -> dict | None:
        rec = self.core.chunk_record(cid)
        return rec if rec is not None and rec["s"] == CHUNK_LIVE else None

    async def write(self, data: bytes, *, bucket: str | None = None,
                    batch: "ChunkBatch | None" = None, in_meta: bool = False) -> ChunkRef:
        """Store one chunk; dedup against live chunks (and the batch's own).

        Without `batch` the chunk's record is committed before this returns
        (`Cluster.write_chunk`, used by the FUSE layer, commits its manifest
        much later). With one, the record waits in the batch for the commit
        that references it (`commit`), or for `flush`.
        """
        c = self.core
        if batch is None:
            home = self._home(bucket)
        else:  # one put, one bucket: its home region is read once
            if batch.home is _UNKNOWN:
                batch.home = self._home(bucket)
            home = batch.home  # type: ignore[assignment]
        local = self.mode_for(home) == "local"
        # one worker-thread hop for hash + dedup check + seal + encode/stage (+ record):
        # the acknowledged latency is what local mode is about
        if in_meta:  # a small slice: sealed into its record, no thread hop, no files
            cid, rec, new = self._store_in_meta(data, batch is None, batch)
        else:
            cid, rec, new = await trio.to_thread.run_sync(
                self._store, data, home, bucket, local, batch is None, batch)
        if new is not None:
            if batch is None:
                if local:
                    self.staging.notify()
            elif cid in batch:  # stored twice at once by this batch: drop ours
                await trio.to_thread.run_sync(self._delete_files, cid, new[0])
            else:
                batch.add(cid, *new)
        if rec is not None and rec["t"] < time.time() - TOUCH_INTERVAL:
            await c.transact(lambda txn: self._touch(txn, cid))
        return ChunkRef(cid, len(data))

    def _store(self, data: bytes, home: str | None, bucket: str | None, local: bool,
               record_now: bool, pending: "ChunkBatch | None"
               ) -> tuple[bytes, dict | None, tuple[dict, dict | None, DirSync | None] | None]:
        """(chunk id, live record if deduplicated, (record, journal, dir sync) if stored). Blocking.

        record_now: make the new files durable and commit the record here
        (then `new` is None when another writer recorded the chunk first and
        ours were removed). Otherwise the fsyncs of the directories the files
        went into are started in the background and returned with the record
        for the batch, whose commit waits for them.
        """
        c = self.core
        cid, known = self._dedup(data, pending)
        if known:
            return cid, self._live(cid), None
        gen = secrets.randbits(31)
        placement = c.place(cid, home)
        dirs: list[str] = []
        if local:
            sealed_len = len(data) + SEAL_OVERHEAD
            sealed = borrow(sealed_len)  # a pooled buffer: no fresh pages per chunk
            try:
                seal_chunk_into(c.master, cid, data, sealed)
                self.staging.write(cid, gen, sealed, sync_later=dirs)
            finally:
                give_back(sealed)
            record = {"r": 0, "n": len(data), "l": sealed_len, "g": gen, "p": placement,
                      "s": CHUNK_LIVE, "t": time.time(), "loc": LOC_STAGING}
            if c.staged_url:  # where other hosts read it until it is replicated
                record["w"] = c.staged_url
            journal: dict | None = new_journal_entry(bucket, gen, sealed_len, len(data))
        else:
            sealed_len, _ = c.chunks.seal_and_write(cid, gen, data, placement, sync_later=dirs)
            record = {"r": 0, "n": len(data), "l": sealed_len, "g": gen, "p": placement,
                      "s": CHUNK_LIVE, "t": time.time(), "loc": LOC_NODES}
            journal = None
        if not record_now:
            return cid, None, (record, journal, start_sync(dirs))
        try:
            sync_dirs(dirs)
            created = c.meta.write(lambda txn: self._create(txn, cid, record, journal))
        except BaseException:
            self._delete_files(cid, record)
            raise
        if not created:
            self._delete_files(cid, record)
            return cid, None, None
        return cid, None, (record, journal, None)

    def _dedup(self, data: bytes, pending: "ChunkBatch | None") -> tuple[bytes, bool]:
        """(chunk id, whether it is stored already: live, or in this batch)."""
        cid = self.core.master.chunk_id(data)
        return cid, (pending is not None and cid in pending) or self._live(cid) is not None

    def _store_in_meta(self, data: bytes, record_now: bool, pending: "ChunkBatch | None"
                       ) -> tuple[bytes, dict | None, tuple[dict, dict | None, DirSync | None] | None]:
        """`_store` for a small slice kept in the metadata (LOC_META)."""
        c = self.core
        cid, known = self._dedup(data, pending)
        if known:
            return cid, self._live(cid), None
        sealed = bytes(c.chunks.seal(cid, data))
        record = {"r": 0, "n": len(data), "l": len(sealed), "g": secrets.randbits(31), "p": [],
                  "s": CHUNK_LIVE, "t": time.time(), "loc": LOC_META, "d": sealed}
        if record_now:
            if not c.meta.write(lambda txn: self._create(txn, cid, record, None)):
                return cid, None, None
        return cid, None, (record, None, None)

    def _delete_files(self, cid: bytes, record: dict) -> None:
        """Remove a stored chunk's files that no committed record names (best effort:
        what stays behind is an orphan for gc's scan or the staging sweep)."""
        try:
            if record.get("loc") == LOC_META:
                return  # its bytes were only ever in the record
            if record.get("loc") == LOC_STAGING:
                self.staging.delete(cid, record["g"])
            else:
                self.core.chunks.delete_shards(cid, record["g"], record["p"])
        except OSError:
            pass

    # --- batches: a put's chunk records committed with its manifest -------------------------

    def install(self, txn: Any, batch: "ChunkBatch") -> None:
        """Inside the commit transaction: create the records of the chunks being
        committed (refcount 0; the commit's `_ref` takes the references). A chunk
        someone else recorded meanwhile keeps that record; ours is surplus,
        removed after the commit."""
        batch.surplus = []
        for cid, (record, journal) in batch.committing.items():
            if not self._create(txn, cid, record, journal):
                batch.surplus.append((cid, record))

    async def commit(self, batch: "ChunkBatch | None", fn: Callable[[Any], T]) -> T:
        """Run the commit transaction `fn` (which calls `install(txn, batch)`) once the
        batch's files are durable; then clean up and wake the replicator.

        On failure the batch keeps the chunks (`discard` removes their files)."""
        c = self.core
        if batch is None or not batch.records:
            return await c.transact(fn)
        syncs = batch.begin()

        def work() -> T:
            _test_hook_kill_after("stored")
            for sync in syncs:
                sync.wait()
            _test_hook_kill_after("synced")
            result = c.meta.write(fn)
            _test_hook_kill_after("committed")
            return result

        result = await trio.to_thread.run_sync(work)
        staged, surplus = batch.committed()
        if surplus:
            await trio.to_thread.run_sync(
                lambda: [self._delete_files(cid, rec) for cid, rec in surplus])
        if staged:
            self.staging.notify()
        return result

    async def flush(self, batch: "ChunkBatch") -> None:
        """Commit the records stored so far (refcount 0, queued for gc) ahead of the
        manifest: a long put must not leave files unrecorded for long (see
        BATCH_MAX_AGE); the manifest commit then references them like any chunk.
        Chunks still being stored meanwhile stay in the batch."""
        if batch.records:
            await self.commit(batch, lambda txn: self.install(txn, batch))

    async def discard(self, batch: "ChunkBatch | None") -> None:
        """The put failed: remove the files of its uncommitted chunks (shielded from
        cancellation; what a kill leaves behind is an orphan for gc)."""
        if batch is None:
            return
        doomed = batch.drop()
        if doomed:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    lambda: [self._delete_files(cid, rec) for cid, rec in doomed])

    def _create(self, txn: Any, cid: bytes, record: dict, journal: dict | None) -> bool:
        """Record a freshly stored chunk unless someone stored it first (then ours is surplus)."""
        c = self.core
        cur = c.meta.get(txn, "chunks", cid)
        if cur is not None and cur["s"] == CHUNK_LIVE:
            cur["t"] = time.time()
            c.meta.put(txn, "chunks", cid, cur)
            return False
        c.meta.put(txn, "chunks", cid, record)
        c.meta.queue_for_gc(txn, cid)
        if journal is not None:
            c.meta.put(txn, "journal", cid, journal)
        else:
            c.meta.delete(txn, "journal", cid)  # a stale entry of an older, collected copy
        return True

    def _touch(self, txn: Any, cid: bytes) -> None:
        c = self.core
        rec = c.meta.get(txn, "chunks", cid)
        if rec is not None:
            rec["t"] = time.time()
            c.meta.put(txn, "chunks", cid, rec)


_UNKNOWN = object()


class ChunkBatch:
    """Chunks one put (or part upload) stored whose records are not committed yet.

    Why: recording every chunk in a commit of its own (an fsync'd LMDB
    transaction) and fsyncing every shard's directory entry on its own made
    a put pay ~2 metadata commits and up to 3 directory fsyncs per shard. Both
    only have to be durable before the manifest that references the chunk
    commits, and a manifest never references a chunk whose record is not in
    the same or an earlier commit -- so a killed put still leaves only
    unreferenced files (orphans gc's scan and the staging sweep remove),
    never a dangling manifest. The batch's chunk records, the journal
    entries of staged chunks, the refcounts and the manifest are one commit.

    Only the trio thread touches a batch.
    """

    __slots__ = ("records", "syncs", "oldest", "committing", "surplus", "home")

    def __init__(self) -> None:
        self.home: str | None | object = _UNKNOWN  # the bucket's home region, once read
        self.records: dict[bytes, tuple[dict, dict | None]] = {}  # cid -> (record, journal)
        self.syncs: list[DirSync] = []  # directory fsyncs to wait for before the records commit
        self.oldest: float | None = None  # time.monotonic() of the oldest record
        self.committing: dict[bytes, tuple[dict, dict | None]] = {}  # in the commit under way
        self.surplus: list[tuple[bytes, dict]] = []  # stored twice: delete after the commit

    def __contains__(self, cid: bytes) -> bool:
        return cid in self.records or cid in self.committing

    def add(self, cid: bytes, record: dict, journal: dict | None, sync: DirSync | None) -> None:
        self.records[cid] = (record, journal)
        if sync is not None:  # (a slice kept in the metadata has no files to sync)
            self.syncs.append(sync)
        if self.oldest is None:
            self.oldest = time.monotonic()

    def due(self) -> bool:
        """Should the records stored so far be flushed (see BATCH_MAX_AGE)?"""
        return self.oldest is not None and time.monotonic() - self.oldest >= BATCH_MAX_AGE

    def begin(self) -> list[DirSync]:
        """Move the stored chunks into the commit under way; the directory fsyncs to wait for."""
        self.committing.update(self.records)
        syncs = self.syncs
        self.records, self.syncs, self.oldest = {}, [], None
        return syncs

    def committed(self) -> tuple[bool, list[tuple[bytes, dict]]]:
        """The commit succeeded: (whether it recorded staged chunks, surplus to delete)."""
        staged = any(journal is not None for _, journal in self.committing.values())
        surplus = self.surplus
        self.committing, self.surplus = {}, []
        return staged, surplus

    def drop(self) -> list[tuple[bytes, dict]]:
        """Forget every uncommitted chunk; (chunk id, record) of each, to remove its files."""
        doomed = [(cid, rec) for cid, (rec, _) in (*self.committing.items(), *self.records.items())]
        self.records, self.committing, self.syncs, self.oldest, self.surplus = {}, {}, [], None, []
        return doomed
