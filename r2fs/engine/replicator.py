"""The replicator: moves chunks acknowledged from local staging onto the nodes.

For each replication-journal entry (one per chunk recorded with
loc="staging"), in five steps:

  1. claim     one txn: check the entry is still current, take a lease on it
  2. read      the sealed chunk from staging, authenticated before it is spread
  3. shards    RS-encode and write k+m shards to the home nodes under a FRESH
               generation number (durable: temp + fsync + rename)
  4. flip      one txn: if the record is still live, in staging, with the
               staged generation, point it at the new shards (loc="nodes",
               placement, generation) and delete the journal entry; else the
               new shards are surplus and are removed
  5. unstage   delete the staging file

Why this is safe when killed anywhere: before step 4 commits the record still
points at the staging file (never deleted before the flip), and the new shards
carry a generation no record names, so they are orphans gc removes; after it
commits, the shards are durable and only a superseded staging file may be
left, which gc's staging sweep removes. A lease that outlives its process (the
owner's pid is gone) or its time is void. Two replicators never corrupt each
other: each writes shards under its own generation, only one flip can win
(it is conditional on the staged generation), and a loser deletes only its own
files. Failures (a node down, a flaky disk) are recorded in the entry with the
error and the time of the next attempt: exponential backoff with jitter.
"""

from __future__ import annotations

import logging
import math
import os
import random
import secrets
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .errors import DataUnavailable, R2fsError
from .meta import CHUNK_LIVE
from .nodes import NodeUnavailable
from .writer import LOC_NODES, LOC_STAGING

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("r2fs.replicator")

LEASE_SECONDS = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
CONCURRENCY = 4
POLL_INTERVAL = 0.5
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_STALE = 10.0
SWEEP_INTERVAL = 300.0
#: Background replication yields to this process's own local writes. While
#: they keep coming (a pause shorter than YIELD_TO_WRITES seconds) it waits;
#: once the deferred backlog is older than MAX_DEFER_SECONDS or larger than
#: TRICKLE_BYTES it replicates one chunk at a time; past MAX_DEFERRED_BYTES at
#: full concurrency. Why: on one machine (and on any PoP whose staging disk
#: also carries other work) the replicator's k+m fsyncs and RS coding per chunk
#: queue in front of the client's one fsync and inflate its acknowledged
#: latency -- the very thing local mode is for -- while the bounds keep the
#: data at risk in staging small and the backlog from growing without end.
YIELD_TO_WRITES = 0.25
MAX_DEFER_SECONDS = 10.0
TRICKLE_BYTES = 64 * 1024 * 1024
MAX_DEFERRED_BYTES = 256 * 1024 * 1024
STAGING_ORPHAN_GRACE = 600.0
RECORDS = "replicators"  # Cluster records namespace: heartbeats of running replicators

STEPS = ("claim", "read", "shards", "flip", "unstage")
#: TEST HOOK ONLY: name of a step in STEPS; the process SIGKILLs itself right
#: after that step, so tests can prove that a kill at any step loses nothing.
TEST_KILL_ENV = "R2FS_TEST_KILL_REPLICATOR_AFTER"


def _test_hook_kill_after(step: str) -> None:
    if os.environ.get(TEST_KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def backoff_delay(attempts: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP,
                  rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: in [d/2, d], d = min(cap, base * 2**(attempts-1))."""
    d = min(cap, base * math.pow(2, max(0, attempts - 1)))
    return d * (rng or random).uniform(0.5, 1.0)


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _owner_alive(owner: str | None) -> bool:
    """False when `owner` certainly died (a pid on this host that no longer exists)."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # cannot tell: trust the lease's expiry time
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the backlog, as status and `r2fs sync` see it -------------------------------------------

@dataclass
class StuckChunk:
    chunk: str
    bucket: str | None
    age: float
    attempts: int
    error: str | None
    next_attempt_in: float


@dataclass
class Backlog:
    chunks: int = 0
    bytes: int = 0
    oldest_age: float = 0.0
    failing: int = 0
    last_error: str | None = None
    stuck: list[StuckChunk] = field(default_factory=list)  # entries that failed at least once


def backlog(cluster: "Core", bucket: str | None = None) -> Backlog:
    """What is waiting in the journal (blocking). `bucket` limits it to one bucket's writes."""
    out = Backlog()
    now = time.time()
    last_t = -1.0
    with cluster.meta.read() as txn:
        for cid, j in cluster.meta.scan(txn, "journal"):
            if bucket is not None and j.get("b") != bucket:
                continue
            out.chunks += 1
            out.bytes += j.get("n", 0)
            out.oldest_age = max(out.oldest_age, now - j.get("t", now))
            if j.get("err"):
                out.failing += 1
                if j.get("next", 0) > last_t:
                    last_t, out.last_error = j.get("next", 0), j["err"]
                out.stuck.append(StuckChunk(cid.hex(), j.get("b"), now - j.get("t", now),
                                            j.get("a", 0), j["err"], max(0.0, j.get("next", 0) - now)))
    return out


def live_replicators(cluster: "Core") -> list[dict[str, Any]]:
    """Heartbeats of replicators that are running now (blocking)."""
    prefix = RECORDS.encode() + b"\0"
    now = time.time()
    with cluster.meta.read() as txn:
        beats = [v for _, v in cluster.meta.scan(txn, "records", prefix)]
    return [b for b in beats if now - b.get("seen", 0) < HEARTBEAT_STALE and _owner_alive(b.get("owner"))]


# --- one chunk ----------------------------------------------------------------------------------

DONE, FAILED, BUSY, DROPPED, NOT_DUE = "done", "failed", "busy", "dropped", "not-due"


@dataclass
class ReplicationReport:
    replicated: int = 0
    failed: int = 0
    busy: int = 0  # leased by another running replicator
    dropped: int = 0  # entries whose chunk was collected or already replicated
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: str, error: str | None = None) -> None:
        if outcome == DONE:
            self.replicated += 1
        elif outcome == FAILED:
            self.failed += 1
            if error and len(self.errors) < 20:
                self.errors.append(error)
        elif outcome == BUSY:
            self.busy += 1
        elif outcome == DROPPED:
            self.dropped += 1


class Replicator:
    """Replicates journal entries of one cluster; every method here is blocking."""

    def __init__(self, cluster: "Core", *, backoff_base: float = BACKOFF_BASE,
                 backoff_cap: float = BACKOFF_CAP, lease: float = LEASE_SECONDS) -> None:
        self.cluster = cluster
        self.owner = _owner_id()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.lease = lease
        self.last_error: str | None = None

    def pending(self, *, force: bool = False, bucket: str | None = None,
                limit: int = 10_000) -> tuple[list[bytes], float | None]:
        """(chunk ids due now, time of the next later attempt) -- leased entries left out."""
        now = time.time()
        due: list[bytes] = []
        later: float | None = None
        with self.cluster.meta.read() as txn:
            for cid, j in self.cluster.meta.scan(txn, "journal"):
                if bucket is not None and j.get("b") != bucket:
                    continue
                if self._leased_elsewhere(j, now):
                    later = min(later or j["lease"], j["lease"])
                    continue
                if force or j.get("next", 0) <= now:
                    due.append(cid)
                    if len(due) >= limit:
                        break
                else:
                    later = min(later or j["next"], j["next"])
        return due, later

    def _leased_elsewhere(self, j: dict, now: float) -> bool:
        return (j.get("lease", 0) > now and j.get("owner") not in (None, self.owner)
                and _owner_alive(j.get("owner")))

    def replicate_one(self, cid: bytes, *, force: bool = False) -> tuple[str, str | None]:
        """Run the five steps for one chunk; (outcome, error message)."""
        c = self.cluster
        claimed = c.meta.write(lambda txn: self._claim(txn, cid, force))
        if isinstance(claimed, str):
            return claimed, None
        rec, j = claimed
        staged_gen = rec["g"]
        _test_hook_kill_after("claim")
        try:
            sealed = c.staging.read(cid, staged_gen)
            if sealed is None:
                if self._still_staged(cid, staged_gen):
                    raise DataUnavailable(f"staging file {c.staging.path_of(cid, staged_gen)} "
                                          "is missing (deleted by hand?)")
                return DROPPED, None
            c.chunks.unseal(cid, sealed)  # never spread a damaged staging file
            _test_hook_kill_after("read")
            gen = secrets.randbits(31)
            while gen == staged_gen:
                gen = secrets.randbits(31)
            placement = c.placement(cid, j.get("b"))
            c.chunks.write_shards(cid, gen, sealed, placement)
            _test_hook_kill_after("shards")
        except (NodeUnavailable, DataUnavailable, OSError, R2fsError) as exc:
            msg = f"chunk {cid.hex()[:16]}: {getattr(exc, 'strerror', None) or exc}"
            c.meta.write(lambda txn: self._fail(txn, cid, staged_gen, msg))
            self.last_error = msg
            return FAILED, msg
        flipped = c.meta.write(lambda txn: self._flip(txn, cid, staged_gen, gen, placement))
        if not flipped:
            _quietly(c.chunks.delete_shards, cid, gen, placement)  # else: orphans for gc
            return DROPPED, None
        _test_hook_kill_after("flip")
        _quietly(c.staging.delete, cid, staged_gen)  # else: left for the staging sweep
        _test_hook_kill_after("unstage")
        return DONE, None

    def replicate_safely(self, cid: bytes, *, force: bool = False) -> tuple[str, str | None]:
        """replicate_one, with an unexpected error reported as a failure (lease runs out)."""
        try:
            return self.replicate_one(cid, force=force)
        except Exception as exc:  # background work must outlive a bug; nothing is lost
            msg = f"chunk {cid.hex()[:16]}: {type(exc).__name__}: {exc}"
            log.exception("replication of chunk %s failed unexpectedly", cid.hex())
            self.last_error = msg
            return FAILED, msg

    def _still_staged(self, cid: bytes, gen: int) -> bool:
        rec = self.cluster.chunk_record(cid)
        return rec is not None and rec["s"] == CHUNK_LIVE and rec.get("loc") == LOC_STAGING \
            and rec["g"] == gen

    # --- transactions ---------------------------------------------------------------------------

    def _claim(self, txn: Any, cid: bytes, force: bool) -> str | tuple[dict, dict]:
        meta = self.cluster.meta
        j = meta.get(txn, "journal", cid)
        if j is None:
            return DROPPED
        rec = meta.get(txn, "chunks", cid)
        if rec is None or rec["s"] != CHUNK_LIVE or rec.get("loc") != LOC_STAGING \
                or rec["g"] != j["g"]:
            # collected (gc removes the staging file) or already replicated
            meta.delete(txn, "journal", cid)
            return DROPPED
        now = time.time()
        if self._leased_elsewhere(j, now):
            return BUSY
        if not force and j.get("next", 0) > now:
            return NOT_DUE
        j["lease"], j["owner"] = now + self.lease, self.owner
        meta.put(txn, "journal", cid, j)
        return rec, j

    def _fail(self, txn: Any, cid: bytes, staged_gen: int, msg: str) -> None:
        meta = self.cluster.meta
        j = meta.get(txn, "journal", cid)
        if j is None or j["g"] != staged_gen:
            return
        j["a"] = j.get("a", 0) + 1
        j["err"] = msg
        j["next"] = time.time() + backoff_delay(j["a"], base=self.backoff_base, cap=self.backoff_cap)
        if j.get("owner") == self.owner:
            j["lease"], j["owner"] = 0.0, None
        meta.put(txn, "journal", cid, j)

    def _flip(self, txn: Any, cid: bytes, staged_gen: int, gen: int, placement: list[str]) -> bool:
        meta = self.cluster.meta
        rec = meta.get(txn, "chunks", cid)
        j = meta.get(txn, "journal", cid)
        if j is not None and j["g"] == staged_gen:
            meta.delete(txn, "journal", cid)
        if rec is None or rec["s"] != CHUNK_LIVE or rec.get("loc") != LOC_STAGING \
                or rec["g"] != staged_gen:
            return False
        rec.update(g=gen, p=placement, loc=LOC_NODES)
        meta.put(txn, "chunks", cid, rec)
        return True

    # --- staging leftovers ----------------------------------------------------------------------

    def sweep_staging(self, grace: float = STAGING_ORPHAN_GRACE) -> tuple[int, int]:
        """Remove staging files no record needs, older than `grace`; (files, bytes)."""
        return sweep_staging(self.cluster, grace)


def sweep_staging(c: "Core", grace: float) -> tuple[int, int]:
    """Staging files that no live record in staging claims, older than `grace` (blocking).

    The age matters: a writer stages its file before it commits the record.
    """
    cutoff = time.time() - grace
    removed = freed = 0
    for path, cid, gen, mtime, _ in list(c.staging.files()):
        if mtime > cutoff:
            continue
        if cid is not None:
            rec = c.chunk_record(cid)
            if rec is not None and rec.get("loc") == LOC_STAGING and rec["g"] == gen:
                continue
        size = c.staging.remove_file(path)
        if size:
            removed += 1
            freed += size
    return removed, freed


# --- drivers ------------------------------------------------------------------------------------

async def replicate_all(cluster: "Core", *, bucket: str | None = None, force: bool = True,
                        concurrency: int = CONCURRENCY,
                        replicator: Replicator | None = None) -> ReplicationReport:
    """One pass over the journal (for `r2fs replicate` and `r2fs sync`).

    force=True tries every entry now, whatever its backoff schedule says;
    entries leased by another running replicator are left to it.
    """
    rep = replicator or Replicator(cluster)
    report = ReplicationReport()
    due, _ = await trio.to_thread.run_sync(lambda: rep.pending(force=force, bucket=bucket))

    def work() -> None:
        with ThreadPoolExecutor(max_workers=max(1, concurrency),
                                thread_name_prefix="r2fs-replicate") as pool:
            for outcome, error in pool.map(lambda cid: rep.replicate_safely(cid, force=force), due):
                report.add(outcome, error)

    await trio.to_thread.run_sync(work)
    return report


async def _heartbeat(cluster: "Core", rep: Replicator, started: float) -> None:
    await cluster.put_record(RECORDS, rep.owner, {
        "owner": rep.owner, "pid": os.getpid(), "host": socket.gethostname(),
        "started": started, "seen": time.time(), "last_error": rep.last_error})


async def run_replicator(cluster: "Core", stop_event: trio.Event, *,
                         concurrency: int = CONCURRENCY, poll: float = POLL_INTERVAL,
                         replicator: Replicator | None = None,
                         yield_to_writes: float = YIELD_TO_WRITES) -> None:
    """Replicate in the background until `stop_event` is set (mount and serve processes).

    Wakes when this process stages a chunk (once its writes pause, see
    YIELD_TO_WRITES; 0 disables yielding), otherwise polls the journal every
    `poll` seconds (other processes write to it too). Advertises itself with
    a heartbeat record so `r2fs sync` knows someone is working.
    """
    rep = replicator or Replicator(cluster)
    started = time.time()
    wake = trio.Event()
    last_staged = [-math.inf]

    def on_staged() -> None:
        last_staged[0] = time.monotonic()
        wake.set()

    cluster.staging.add_listener(on_staged)
    last_beat = last_sweep = 0.0
    concurrency = max(1, concurrency)
    limiter = trio.CapacityLimiter(concurrency)
    trickle = trio.CapacityLimiter(1)

    async def one_round() -> None:
        nonlocal last_beat, last_sweep, wake
        now = time.monotonic()
        if now - last_beat >= HEARTBEAT_INTERVAL:
            await _heartbeat(cluster, rep, started)
            last_beat = now
        if now - last_sweep >= SWEEP_INTERVAL:
            await trio.to_thread.run_sync(rep.sweep_staging)
            last_sweep = now
        wake = trio.Event()
        width = concurrency
        if time.monotonic() - last_staged[0] < yield_to_writes:
            width = await trio.to_thread.run_sync(_width_while_writing, cluster, concurrency)
            if width == 0:
                await trio.sleep(min(yield_to_writes, poll))
                return
        # small batches: yielding to writes is re-checked between them
        due, later = await trio.to_thread.run_sync(lambda: rep.pending(limit=4 * width))
        if due:
            async with trio.open_nursery() as batch:
                for cid in due:
                    batch.start_soon(_one, rep, cid, limiter if width == concurrency else trickle)
            return
        delay = poll if later is None else max(0.01, min(poll, later - time.time()))
        with trio.move_on_after(delay):
            await wake.wait()

    try:
        async with trio.open_nursery() as outer:
            async def stopper() -> None:
                await stop_event.wait()
                outer.cancel_scope.cancel()
            outer.start_soon(stopper)
            while True:
                try:
                    await one_round()
                except Exception:  # e.g. LMDB full: keep serving, retry later
                    log.exception("replicator round failed; retrying in %.1f s", 5 * poll)
                    await trio.sleep(5 * poll)
    finally:
        cluster.staging.remove_listener(on_staged)
        with trio.CancelScope(shield=True):
            try:
                await cluster.delete_record(RECORDS, rep.owner)
            except Exception as exc:  # the cluster may be closing: the beat just goes stale
                log.debug("could not remove the replicator heartbeat: %s", exc)


def _width_while_writing(cluster: "Core", concurrency: int) -> int:
    """How many chunks to replicate at once while this process is writing (0: wait)."""
    b = backlog(cluster)
    if b.bytes >= MAX_DEFERRED_BYTES:
        return concurrency
    if b.bytes >= TRICKLE_BYTES or b.oldest_age >= MAX_DEFER_SECONDS:
        return 1
    return 0


async def _one(rep: Replicator, cid: bytes, limiter: trio.CapacityLimiter) -> None:
    outcome, error = await trio.to_thread.run_sync(rep.replicate_safely, cid, limiter=limiter)
    if outcome == FAILED:
        log.warning("replication failed, will retry: %s", error)


def _quietly(fn: Any, *args: Any) -> None:
    """Best-effort cleanup: what it cannot remove now, gc or the sweep removes later."""
    try:
        fn(*args)
    except (OSError, NodeUnavailable) as exc:
        log.info("cleanup deferred to gc: %s", exc)
