"""Operation metering as R2 bills it: Class A (writes, lists) and Class B (reads)
per bucket, plus the Prometheus text exposition served at /metrics.

Counting in LMDB on every request would add a write transaction to each GET,
so counts gather in memory and are flushed with `Cluster.add_counters` about
once a second (and at shutdown). /metrics flushes first, so it shows totals
that include this process's most recent requests.
"""

from __future__ import annotations

from collections import defaultdict

import trio

from ..engine.reader import render_metrics
from ..engine.store import Cluster

FLUSH_SECONDS = 1.0


class Meter:
    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._pending: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._lock = trio.Lock()

    def count(self, bucket: str | None, op_class: str | None) -> None:
        """Record one operation of class "class_a" / "class_b" (None: free, not counted)."""
        if bucket and op_class:
            self._pending[bucket][op_class] += 1

    async def flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, defaultdict(lambda: defaultdict(int))
            for bucket, deltas in pending.items():
                await self._cluster.add_counters(bucket, dict(deltas))

    async def run(self) -> None:
        """Background flusher; runs until cancelled, flushing once more on the way out."""
        try:
            while True:
                await trio.sleep(FLUSH_SECONDS)
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()

    async def prometheus(self) -> bytes:
        await self.flush()
        status = await self._cluster.status()
        lines = ["# HELP r2fs_operations_total S3 operations per bucket and R2 billing class.",
                 "# TYPE r2fs_operations_total counter"]
        for bucket in sorted(status.counters):
            for name, value in sorted(status.counters[bucket].items()):
                if name.startswith("class_"):
                    label = name[len("class_"):].upper()
                    lines.append(f'r2fs_operations_total{{bucket="{_esc(bucket)}",class="{label}"}} {value}')
        lines += ["# HELP r2fs_objects Objects stored.", "# TYPE r2fs_objects gauge",
                  f"r2fs_objects {status.objects}",
                  "# HELP r2fs_logical_bytes Sum of object sizes.", "# TYPE r2fs_logical_bytes gauge",
                  f"r2fs_logical_bytes {status.logical_bytes}",
                  "# HELP r2fs_stored_bytes Shard bytes on the nodes.", "# TYPE r2fs_stored_bytes gauge",
                  f"r2fs_stored_bytes {status.stored_bytes}"]
        text = "\n".join(lines) + "\n"
        return (text + render_metrics()).encode()  # plus this process's read tiers (cache, peers)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
