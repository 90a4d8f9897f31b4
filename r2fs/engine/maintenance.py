"""Background upkeep in long-running processes, and what status and metrics say about it.

Every mount and gateway runs `run_maintenance` beside the replicator and the
snapshotter (on by default):

* a slow scrub with repair: `scrub_rate` MB/s of data (default 4), in slices
  of `SLICE` seconds under `run/scrub.lock` (so two processes never scrub at
  once and `r2fs scrub` waits at most one slice); its position is saved, so
  a pass spans restarts; after a full pass the next starts `scrub_interval`
  seconds later (default a day);
* gc every `gc_interval` seconds (default 300) with the usual grace periods
  (`gc_grace` 60 s for unreferenced chunks, 600 s for orphan files), under
  `run/gc.lock`.

Neither starts before `start_delay` seconds (default 60). Settings: the
`[durability]` table of cluster.toml (`scrub_rate = 0` or `gc_interval = 0`
turns that part off). A failure is logged and retried,
never fatal to the process serving files.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import trio

from .chunkwalk import load_state
from .errors import InvalidClusterConfig
from .fileio import file_lock
from .repair import BAD_PREFIX, COUNTERS
from .scrub import scrub

if TYPE_CHECKING:
    from .core import Core
    from .store import Cluster

log = logging.getLogger("r2fs.maintenance")

CONFIG_TABLE = "durability"
SLICE = 30.0
BACKGROUND_STATE = "scrub-background"
DEFAULTS = {"scrub_rate": 4.0, "scrub_interval": 86400.0, "gc_interval": 300.0,
            "gc_grace": 60.0, "orphan_grace": 600.0, "start_delay": 60.0}


def settings(c: "Core") -> dict[str, float]:
    table = (c.config.raw or {}).get(CONFIG_TABLE) or {}
    out = dict(DEFAULTS)
    for key, value in table.items():
        if key not in DEFAULTS:
            raise InvalidClusterConfig(f"cluster.toml [{CONFIG_TABLE}]: unknown setting {key!r} "
                                       f"(known: {', '.join(DEFAULTS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InvalidClusterConfig(f"cluster.toml [{CONFIG_TABLE}] {key} must be a number >= 0")
        out[key] = float(value)
    return out


def try_lock(root: str, name: str) -> Any:
    """`run/<name>` held without waiting: yields whether we got it."""
    return file_lock(os.path.join(root, "run", name), wait=False)


def scrub_slice(c: "Core", rate: float, seconds: float, stop: threading.Event) -> bool:
    """Scrub (with repair) for up to `seconds` at `rate` bytes/s; True when a pass finished."""
    with try_lock(c.path, "scrub.lock") as locked:
        if not locked:
            return False
        timer = threading.Timer(seconds, stop.set)
        timer.daemon = True
        timer.start()
        try:
            report = scrub(c, repair=True, rate=rate, stop=stop, state=BACKGROUND_STATE)
        finally:
            timer.cancel()
        if report.damaged_chunks:
            log.warning("background scrub: %d damaged chunks, %d repaired, %d lost",
                        report.damaged_chunks, report.repaired_chunks, report.lost_chunks)
        st = load_state(c, BACKGROUND_STATE)
        return bool(st and st.get("done"))


async def run_maintenance(cluster: "Cluster", stop_event: trio.Event) -> None:
    """Background scrub and gc until `stop_event` (see the module doc)."""
    try:
        cfg = settings(cluster)
    except InvalidClusterConfig as e:
        log.error("%s; background scrub and gc use the defaults", e)
        cfg = dict(DEFAULTS)
    current: list[threading.Event] = []  # the slice under way, to end it when we stop
    # nothing in the first `start_delay` seconds: a short-lived process costs nothing
    next_gc = time.monotonic() + cfg["start_delay"]
    next_scrub = time.monotonic() + cfg["start_delay"]
    st = load_state(cluster, BACKGROUND_STATE)
    if st and st.get("done"):
        next_scrub = time.monotonic() + max(cfg["start_delay"],
                                            cfg["scrub_interval"] - (time.time() - st["updated"]))

    async def stopper() -> None:
        await stop_event.wait()
        for ev in current:
            ev.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stopper)
        while not stop_event.is_set():
            now = time.monotonic()
            if cfg["gc_interval"] > 0 and now >= next_gc:
                next_gc = now + cfg["gc_interval"]
                try:
                    with try_lock(cluster.path, "gc.lock") as locked:
                        if locked:
                            report = await cluster.gc(grace=cfg["gc_grace"],
                                                      orphan_grace=cfg["orphan_grace"])
                            if report.bytes_freed:
                                log.info("background gc freed %d bytes", report.bytes_freed)
                except Exception as e:  # noqa: BLE001 - retried next interval
                    log.warning("background gc failed, will retry: %s", e)
            if cfg["scrub_rate"] > 0 and now >= next_scrub:
                slice_stop = threading.Event()
                current[:] = [slice_stop]
                try:
                    done = await trio.to_thread.run_sync(
                        scrub_slice, cluster, cfg["scrub_rate"] * 1e6, SLICE, slice_stop)
                    next_scrub = time.monotonic() + (cfg["scrub_interval"] if done else 1.0)
                except Exception as e:  # noqa: BLE001 - retried later
                    log.warning("background scrub failed, will retry: %s", e)
                    next_scrub = time.monotonic() + 60.0
                finally:
                    current.clear()
            with trio.move_on_after(1.0):
                await stop_event.wait()
        nursery.cancel_scope.cancel()


def _scrub_summary(st: dict | None) -> str:
    if not st:
        return "never"
    c = st.get("counts") or {}
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.get("updated", 0)))
    where = "finished" if st.get("done") else (
        f"in progress or interrupted at {st.get('done_chunks', 0)}/{st.get('total_chunks', 0)} chunks")
    return (f"{where} {when}: {c.get('damaged_chunks', 0)} damaged, "
            f"{c.get('repaired_chunks', 0)} repaired, {c.get('lost_chunks', 0)} lost")


def known_damaged(c: "Core") -> int:
    with c.meta.read() as txn:
        return sum(1 for _ in c.meta.scan(txn, "records", BAD_PREFIX))


def durability_status(c: "Cluster") -> dict[str, Any]:
    """The durability section of `r2fs status`: scrubs, heal queue, moves in progress."""
    from .rebalance import MOVE_PREFIX
    with c.meta.read() as txn:
        moves = sum(1 for _ in c.meta.scan(txn, "records", MOVE_PREFIX))
    healer = getattr(c, "healer", None)
    return {
        "last_scrub": _scrub_summary(load_state(c, "scrub")),
        "background_scrub": _scrub_summary(load_state(c, BACKGROUND_STATE)),
        "known_damaged_chunks": known_damaged(c),
        "heal_on_read": ({"pending": healer.pending(), "scheduled": healer.scheduled,
                          "shards_repaired": healer.repaired_shards, "failed": healer.failed}
                         if healer is not None else {}),
        "shard_moves_in_progress": moves,
    }


def render_metrics(clusters: list["Cluster"]) -> str:
    """Prometheus text: the degraded-chunk gauge, scrub and repair progress counters."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    degraded = 0
    progress = 0.0
    seen: set[str] = set()
    for c in clusters:
        if c.path in seen:
            continue
        seen.add(c.path)
        try:
            degraded += known_damaged(c)
            st = load_state(c, BACKGROUND_STATE) or {}
            if st.get("total_bytes"):
                progress = st.get("done_bytes", 0) / st["total_bytes"]
        except Exception:  # noqa: BLE001 - metrics must render even with metadata trouble
            continue
    heal_pending = sum(getattr(c, "healer").pending() for c in clusters if hasattr(c, "healer"))
    k = COUNTERS.snapshot()
    metric("r2fs_degraded_chunks", "gauge",
           "Chunks with damaged or missing shards found by scrub or reads, not yet repaired.",
           [("", degraded)])
    metric("r2fs_heal_pending_chunks", "gauge", "Chunks queued for repair by reads.",
           [("", heal_pending)])
    metric("r2fs_scrub_chunks_total", "counter", "Chunks verified by scrub in this process.",
           [("", k["scrub_chunks"])])
    metric("r2fs_scrub_bytes_total", "counter", "Logical bytes verified by scrub in this process.",
           [("", k["scrub_bytes"])])
    metric("r2fs_scrub_damaged_shards_total", "counter", "Bad or missing shards scrub found.",
           [("", k["scrub_damaged_shards"])])
    metric("r2fs_scrub_progress_ratio", "gauge", "Share of the current background scrub pass done.",
           [("", round(progress, 4))])
    metric("r2fs_repair_shards_total", "counter", "Shards rewritten by repair (scrub, heal on read).",
           [("", k["repair_shards"])])
    metric("r2fs_repair_bytes_total", "counter", "Shard bytes written by repair.",
           [("", k["repair_bytes"])])
    metric("r2fs_repair_failed_chunks_total", "counter", "Chunks repair could not fix.",
           [("", k["repair_failed_chunks"])])
    return "\n".join(lines) + "\n"
