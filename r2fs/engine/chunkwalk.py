"""Walking every chunk record once, resumably, throttled, a few chunks at a time.

Scrub, node rebuilds and rebalancing all do the same thing: visit the chunk
records in chunk-id order, do some I/O-heavy work per chunk in worker
threads, and survive being killed. This module is that loop, once:

* records are read in short LMDB read transactions of `SCAN_BATCH` records
  (a long-lived reader would pin old pages while writers keep going);
* at most `window` chunks are in flight in worker threads (memory: a few
  chunks' shards, whatever the cluster size); results are taken in order;
* the position (the id below which every chunk is done) and the counters are
  saved in the `records` table every `SAVE_EVERY` seconds or `SAVE_CHUNKS`
  chunks, so a run killed with SIGKILL continues where it stopped, having
  redone at most a second's work;
* `rate` (bytes/s of logical data) throttles with a token bucket.

State records live under namespace `durability` (see `state_key`); their
format carries a version number (`STATE_VERSION`); an unknown one is ignored
(the run starts over) rather than misread.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .meta import CHUNK_LIVE

if TYPE_CHECKING:
    from .store import Cluster

NAMESPACE = "durability"
STATE_VERSION = 1
SCAN_BATCH = 256
SAVE_EVERY = 1.0
SAVE_CHUNKS = 16  # ... or after this many chunks, whichever comes first

#: TEST HOOK ONLY: "STEP" or "STEP:N" -- SIGKILL this process at the Nth time (default 1st)
#: a durability operation passes the named crash point (see `crash_point`), so tests can
#: show that a kill at every step of scrub, repair, drain and rebalance loses nothing.
TEST_KILL_ENV = "R2FS_TEST_KILL_DURABILITY"
_crash_counts: dict[str, int] = {}
_crash_lock = threading.Lock()


def crash_point(step: str) -> None:
    spec = os.environ.get(TEST_KILL_ENV)
    if not spec:
        return
    name, _, nth = spec.rpartition(":")
    if not nth.isdigit():
        name, nth = spec, ""
    if name != step:
        return
    with _crash_lock:
        _crash_counts[step] = _crash_counts.get(step, 0) + 1
        hit = _crash_counts[step] >= (int(nth) if nth else 1)
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)


def state_key(name: str) -> bytes:
    return NAMESPACE.encode() + b"\0" + name.encode()


def load_state(c: "Cluster", name: str) -> dict | None:
    with c.meta.read() as txn:
        st = c.meta.get(txn, "records", state_key(name))
    if not isinstance(st, dict) or st.get("v") != STATE_VERSION:
        return None
    return st


def save_state(c: "Cluster", name: str, state: dict) -> None:
    state = dict(state, v=STATE_VERSION)
    c.meta.write(lambda txn: c.meta.put(txn, "records", state_key(name), state))


def live_on_nodes(rec: dict | None) -> bool:
    """A chunk whose shards are on the nodes (not in staging, not being collected)."""
    return rec is not None and rec["s"] == CHUNK_LIVE and rec.get("loc", "nodes") == "nodes"


def iter_records(c: "Cluster", after: bytes = b"", only: set[bytes] | None = None
                 ) -> Iterator[tuple[bytes, dict]]:
    """(chunk id, record) in id order after `after`, in short read transactions."""
    start = after + b"\0" if after else b""
    ordered = sorted(only) if only is not None else None
    pos = 0
    if ordered is not None:
        import bisect
        pos = bisect.bisect_right(ordered, after) if after else 0
    while True:
        batch: list[tuple[bytes, dict]] = []
        with c.meta.read() as txn:
            if ordered is None:
                for cid, rec in c.meta.scan(txn, "chunks", start=start):
                    batch.append((cid, rec))
                    if len(batch) >= SCAN_BATCH:
                        break
            else:
                while pos < len(ordered) and len(batch) < SCAN_BATCH:
                    rec = c.meta.get(txn, "chunks", ordered[pos])
                    if rec is not None:
                        batch.append((ordered[pos], rec))
                    pos += 1
        if not batch:
            return
        yield from batch
        start = batch[-1][0] + b"\0"
        if ordered is not None and pos >= len(ordered):
            return


class Throttle:
    """A token bucket over bytes: `take(n)` sleeps as needed to stay at `rate` bytes/s."""

    def __init__(self, rate: float | None, stop: threading.Event | None = None) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.stop = stop
        self._t = time.monotonic()
        self._debt = 0.0

    def take(self, n: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        self._debt = max(0.0, self._debt - (now - self._t) * self.rate) + n
        self._t = now
        wait = self._debt / self.rate - 0.25  # a quarter second of burst allowed
        if wait > 0:
            if self.stop is not None:
                self.stop.wait(wait)
            else:
                time.sleep(wait)


@dataclass
class WalkProgress:
    """What a walk reports to its progress callback and keeps in its state record."""
    total_chunks: int = 0
    total_bytes: int = 0
    done_chunks: int = 0
    done_bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    resumed: bool = False


def walk(c: "Cluster", name: str, work: Callable[[bytes, dict], dict[str, int]], *,
         select: Callable[[bytes, dict], bool], only: set[bytes] | None = None,
         scope: Any = None, window: int = 4, rate: float | None = None,
         progress: Callable[[WalkProgress], None] | None = None,
         stop: threading.Event | None = None, fresh: bool = False) -> WalkProgress:
    """Run `work(cid, rec)` for every selected chunk record, resuming a killed run.

    `work` returns counters to add up (e.g. {"repaired": 1}); it runs in up to
    `window` worker threads. `scope` identifies what the run covers (e.g. the
    bucket scrubbed); a saved run of another scope is not resumed. `fresh`
    starts over even if a run was interrupted. `stop` ends the walk early (the
    position is saved: the next run resumes). Returns the totals.
    """
    saved = None if fresh else load_state(c, name)
    if saved is not None and (saved.get("done") or saved.get("scope") != scope):
        saved = None
    after = bytes(saved["after"]) if saved else b""
    prog = WalkProgress(counts=dict(saved["counts"]) if saved else {}, resumed=saved is not None)
    started = saved["started"] if saved else time.time()
    for cid, rec in iter_records(c, only=only):
        if select(cid, rec):
            prog.total_chunks += 1
            prog.total_bytes += rec["n"]
            if after and cid <= after:
                prog.done_chunks += 1
                prog.done_bytes += rec["n"]
    throttle = Throttle(rate, stop)
    last_save = time.monotonic()
    since_save = 0

    def save(done: bool = False) -> None:
        save_state(c, name, {"after": after, "scope": scope, "started": started,
                             "updated": time.time(), "done": done, "counts": prog.counts,
                             "total_chunks": prog.total_chunks, "done_chunks": prog.done_chunks,
                             "total_bytes": prog.total_bytes, "done_bytes": prog.done_bytes})

    save()
    inflight: deque[tuple[bytes, dict, Future[dict[str, int]]]] = deque()

    def finish_one() -> None:
        nonlocal after, last_save, since_save
        cid, rec, fut = inflight.popleft()
        for k, v in fut.result().items():
            prog.counts[k] = prog.counts.get(k, 0) + v
        prog.done_chunks += 1
        prog.done_bytes += rec["n"]
        after = cid
        if progress is not None:
            progress(prog)
        since_save += 1
        if since_save >= SAVE_CHUNKS or time.monotonic() - last_save >= SAVE_EVERY:
            save()
            crash_point(f"{name.split('-')[0]}:saved")
            last_save, since_save = time.monotonic(), 0

    with ThreadPoolExecutor(max_workers=max(1, window), thread_name_prefix=f"r2fs-{name}") as pool:
        try:
            for cid, rec in iter_records(c, after, only):
                if stop is not None and stop.is_set():
                    break
                if not select(cid, rec):
                    continue
                throttle.take(rec["n"])
                inflight.append((cid, rec, pool.submit(work, cid, rec)))
                while len(inflight) >= window:
                    finish_one()
            while inflight:
                finish_one()
        except BaseException:
            for _, _, fut in inflight:
                fut.cancel()
            raise
    finished = not (stop is not None and stop.is_set())
    save(done=finished)
    return prog
