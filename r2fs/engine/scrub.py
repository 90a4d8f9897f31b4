"""Scrub: read every shard, verify its header and checksum, optionally repair.

Built on the chunk records (not on manifests): every live chunk whose shards
are on the nodes is visited once, in id order, through `chunkwalk.walk`
(resumable after a kill, throttled, a few chunks in flight). `--bucket` limits
it to the chunks that bucket's objects reference (`store.chunks_of_bucket`).

What is found is kept in the `records` table so that `r2fs status` and the
Prometheus gauge can say how many chunks are degraded without reading every
shard again: `durability\\0bad/<chunk id>` per damaged chunk (removed when it
is repaired), and the counts of the last finished pass.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .chunkwalk import WalkProgress, crash_point, live_on_nodes, load_state, walk
from .repair import COUNTERS, check_and_repair, known_damage, note_damage

if TYPE_CHECKING:
    from .store import Cluster

STATE = "scrub"


@dataclass
class ScrubReport:
    chunks: int = 0
    bytes: int = 0  # logical (plaintext) bytes of the chunks checked
    shard_bytes: int = 0  # shard bytes read
    healthy: int = 0
    damaged_chunks: int = 0
    damaged_shards: int = 0
    repaired_chunks: int = 0
    repaired_shards: int = 0
    lost_chunks: int = 0  # fewer than k good shards: cannot be repaired
    unrepaired_chunks: int = 0  # repairable, not repaired (no --repair, or a node down)
    resumed: bool = False
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # first few, for the summary

    @property
    def ok(self) -> bool:
        return self.lost_chunks == 0 and self.unrepaired_chunks == 0


def scrub(c: "Cluster", *, repair: bool = False, bucket: str | None = None,
          rate: float | None = None, window: int = 16, fresh: bool = False,
          progress: Callable[[WalkProgress], None] | None = None,
          stop: threading.Event | None = None, state: str = STATE) -> ScrubReport:
    """Verify every shard of every chunk (of `bucket`); rewrite bad ones with `repair`.

    Blocking: run it in a worker thread. `rate`: bytes/s of logical data.
    `window`: chunks verified at once (one worker thread each, reading its
    shards one after another with O_DIRECT, one shard buffer at a time).
    Measured on the reference VM (tools/bench durability, 1 GiB, medians of
    3): 4 in flight ~750-850 MB/s, 8 ~800-860, 16 ~1,150-1,320 -- the
    virtio disk wants a deep queue of 1 MiB requests. Memory: 16 shard
    buffers (~32 MiB: 4 chunks' worth of shards), plus k shards per chunk
    being repaired.
    """
    started = time.monotonic()
    only = c.chunks_of_bucket(bucket) if bucket is not None else None
    known = known_damage(c)
    report = ScrubReport()

    def work(cid: bytes, rec: dict) -> dict[str, int]:
        result = check_and_repair(c, cid, rec, repair=repair)
        crash_point("scrub:checked")
        out = {"shard_bytes": result.read_bytes}
        COUNTERS.add(scrub_chunks=1, scrub_bytes=rec["n"], scrub_damaged_shards=len(result.bad))
        if not result.bad:
            out["healthy"] = 1
            if cid in known:
                note_damage(c, cid, None)
            return out
        out["damaged_chunks"] = 1
        out["damaged_shards"] = len(result.bad)
        if result.repaired:
            out["repaired_shards"] = result.repaired
            COUNTERS.add(repair_shards=result.repaired, repair_bytes=result.written_bytes)
        if result.repaired == len(result.bad) and not result.error:
            out["repaired_chunks"] = 1
            if cid in known:
                note_damage(c, cid, None)
            return out
        out["lost_chunks" if result.unreadable else "unrepaired_chunks"] = 1
        if result.error:
            COUNTERS.add(repair_failed_chunks=1)
        note_damage(c, cid, result.bad)
        if len(report.problems) < 5:
            detail = "; ".join(f"shard {i} on {rec['p'][i]}: {d}" for i, (_, d) in
                               sorted(result.bad.items()))
            report.problems.append(f"chunk {cid.hex()[:16]}: {detail}"
                                   + (f" ({result.error})" if result.error else ""))
        return out

    prog = walk(c, state, work, select=lambda cid, rec: live_on_nodes(rec), only=only,
                scope={"bucket": bucket, "repair": repair}, window=window, rate=rate,
                progress=progress, stop=stop, fresh=fresh)
    counts = prog.counts
    report.chunks = prog.done_chunks
    report.bytes = prog.done_bytes
    report.resumed = prog.resumed
    for name in ("shard_bytes", "healthy", "damaged_chunks", "damaged_shards",
                 "repaired_chunks", "repaired_shards", "lost_chunks", "unrepaired_chunks"):
        setattr(report, name, counts.get(name, 0))
    report.seconds = time.monotonic() - started
    return report


def last_scrub(c: "Cluster") -> dict | None:
    """The saved state of the newest scrub run (finished or not), for status and metrics."""
    return load_state(c, STATE)
