"""Fault injection on node access -- FOR TESTS AND BENCHMARKS ONLY.

One machine has no far regions, flaky disks or outages, yet local uploads
(and the code that retries around them) must be shown to work with all three.
A node gets simulated behaviour only from an explicit table of its own in
cluster.toml, which `r2fs init` never writes:

    [nodes.n3.simulate]
    latency_ms = 80       # added to every access (a far region)
    error_rate = 0.1      # share of data accesses that fail (a flaky node)
    down = true           # every access fails, `available()` is False (an outage)

Nothing else turns it on, and every process that opens such a cluster says so
loudly on stderr. A node that has the table is re-read from cluster.toml while
the process runs (at most every RELOAD_INTERVAL seconds), so a test or a
benchmark can end an outage without restarting anyone; a node without the table
at start stays a plain `LocalNode`.
"""

from __future__ import annotations

import errno
import os
import random
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from . import config as cfgmod
from .errors import InvalidClusterConfig
from .nodes import Buffer, LocalNode, NodeStore, open_node

SIMULATE_TABLE = "simulate"
RELOAD_INTERVAL = 0.5

_warned: set[str] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class Simulation:
    """What one node pretends (a parsed `[nodes.ID.simulate]` table)."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    down: bool = False

    @classmethod
    def parse(cls, node_id: str, table: Any) -> "Simulation":
        where = f"cluster.toml [nodes.{node_id}.{SIMULATE_TABLE}]"
        if not isinstance(table, dict):
            raise InvalidClusterConfig(f"{where} must be a table")
        unknown = set(table) - {"latency_ms", "error_rate", "down"}
        if unknown:
            raise InvalidClusterConfig(f"{where}: unknown setting(s) {', '.join(sorted(unknown))} "
                                       "(known: latency_ms, error_rate, down)")
        latency = table.get("latency_ms", 0)
        rate = table.get("error_rate", 0)
        down = table.get("down", False)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not latency >= 0:
            raise InvalidClusterConfig(f"{where}: latency_ms must be a number >= 0 (got {latency!r})")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise InvalidClusterConfig(f"{where}: error_rate must be between 0 and 1 (got {rate!r})")
        if not isinstance(down, bool):
            raise InvalidClusterConfig(f"{where}: down must be true or false (got {down!r})")
        return cls(float(latency), float(rate), down)

    def describe(self) -> str:
        parts = []
        if self.down:
            parts.append("down")
        if self.latency_ms:
            parts.append(f"+{self.latency_ms:g} ms")
        if self.error_rate:
            parts.append(f"{self.error_rate:.0%} errors")
        return ", ".join(parts) or "no effect"


class SimulationSource:
    """The simulate tables of one cluster.toml, re-read when the file changes."""

    def __init__(self, config_path: str, initial: Mapping[str, Simulation]) -> None:
        self.path = config_path
        self._current = dict(initial)
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def get(self, node_id: str) -> Simulation:
        now = time.monotonic()
        if now - self._checked >= RELOAD_INTERVAL:
            with self._lock:
                if now - self._checked >= RELOAD_INTERVAL:
                    self._checked = now
                    mtime = self._stat()
                    if mtime != self._mtime:
                        self._reload()
                        self._mtime = mtime
        return self._current.get(node_id, Simulation())

    def _reload(self) -> None:
        """Keep the old settings when the file is mid-edit or invalid (never crash a reader)."""
        try:
            with open(self.path, "rb") as f:
                raw = tomllib.load(f)
            fresh = {nid: Simulation.parse(nid, table.get(SIMULATE_TABLE, {}))
                     for nid, table in raw.get("nodes", {}).items() if nid in self._current}
        except (OSError, tomllib.TOMLDecodeError, InvalidClusterConfig, AttributeError) as exc:
            print(f"r2fs: WARNING: ignoring unreadable simulate settings in {self.path}: {exc}",
                  file=sys.stderr)
            return
        self._current.update(fresh)


class SimulatedFault(OSError):
    """An injected failure: an OSError (EIO), as a failing disk or mount gives.

    Being an OSError, it takes exactly the paths a real I/O error takes in the
    chunk store, gc and the replicator -- which is what the simulation is for.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


class SimulatedNode:
    """A LocalNode behind injected latency, errors and outages (same interface)."""

    def __init__(self, inner: LocalNode, source: SimulationSource,
                 rng: random.Random | None = None) -> None:
        self.inner = inner
        self.source = source
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"SimulatedNode({self.inner!r}, {self.settings.describe()})"

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def path(self) -> str:
        return self.inner.path

    @property
    def region(self) -> str:
        return self.inner.region

    @property
    def settings(self) -> Simulation:
        return self.source.get(self.inner.id)

    def _enter(self, what: str, *, may_fail: bool = True) -> None:
        """Pay the latency, then fail if the node is down (or, for data access, by chance)."""
        s = self.settings
        if s.latency_ms:
            time.sleep(s.latency_ms / 1000.0)
        if s.down:
            raise SimulatedFault(f"node {self.id}: simulated outage during {what} "
                                  f"([nodes.{self.id}.simulate] down = true)")
        if may_fail and s.error_rate and self._rng.random() < s.error_rate:
            raise SimulatedFault(f"node {self.id}: simulated I/O error during {what} "
                                  f"([nodes.{self.id}.simulate] error_rate = {s.error_rate:g})")

    # --- data access: delayed, may fail ------------------------------------------------

    def write(self, name: str, data: Buffer) -> None:
        self.write_parts(name, [data])

    def write_parts(self, name: str, parts: Sequence[Buffer], *args: Any, **kw: Any) -> None:
        self._enter("write")
        self.inner.write_parts(name, parts, *args, **kw)

    def read(self, name: str, *args: Any, **kw: Any) -> bytes:
        self._enter("read")
        return self.inner.read(name, *args, **kw)

    def read_into(self, name: str, alloc: Callable[[int], bytearray], *args: Any,
                  only_if_cached: bool = False, **kw: Any) -> memoryview | None:
        if only_if_cached:
            return None  # a far node is never in this machine's page cache: the slow path
        self._enter("read")
        return self.inner.read_into(name, alloc, *args, **kw)

    def prefetch(self, name: str) -> None:
        if not self.settings.down:
            self.inner.prefetch(name)  # a hint; the read that follows pays the latency

    def delete(self, name: str) -> bool:
        self._enter("delete")
        return self.inner.delete(name)

    def size_of(self, name: str) -> int | None:
        self._enter("stat", may_fail=False)
        return self.inner.size_of(name)

    def __getattr__(self, attr: str) -> Any:
        """Anything LocalNode grows later: delayed and failing like data access."""
        if attr == "inner":
            raise AttributeError(attr)
        value = getattr(self.inner, attr)
        if not callable(value) or attr.startswith("_"):
            return value

        def simulated(*args: Any, **kw: Any) -> Any:
            self._enter(attr)
            return value(*args, **kw)
        return simulated

    # --- housekeeping: delayed, fail only when down -------------------------------------

    def names(self) -> Iterator[tuple[str, float]]:
        self._enter("listing", may_fail=False)
        return self.inner.names()

    def entries(self) -> Iterator[tuple[str, int, int, bool]]:
        self._enter("listing", may_fail=False)
        return self.inner.entries()

    def usage(self) -> tuple[int, int]:
        self._enter("usage", may_fail=False)
        return self.inner.usage()

    def free_bytes(self) -> int:
        self._enter("statfs", may_fail=False)
        return self.inner.free_bytes()

    def available(self) -> bool:
        return not self.settings.down and self.inner.available()


def build_nodes(config: cfgmod.ClusterConfig, root: str) -> dict[str, NodeStore]:
    """The cluster's nodes by id; simulated only where cluster.toml has a simulate table.

    Announces simulation on stderr (once per cluster per process), because a
    cluster that lies about its nodes must never pass for a normal one.
    """
    plain = {n.id: open_node(n) for n in config.nodes}
    tables = {n.id: Simulation.parse(n.id, n.extra[SIMULATE_TABLE])
              for n in config.nodes if SIMULATE_TABLE in n.extra}
    if not tables:
        return plain
    source = SimulationSource(os.path.join(root, cfgmod.CONFIG_FILE), tables)
    nodes: dict[str, Any] = dict(plain)
    for node_id in tables:
        nodes[node_id] = SimulatedNode(plain[node_id], source)
    _announce(root, tables)
    return nodes


def _announce(root: str, tables: Mapping[str, Simulation]) -> None:
    key = os.path.realpath(root)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    detail = "; ".join(f"{nid}: {s.describe()}" for nid, s in sorted(tables.items()))
    print(f"r2fs: WARNING: FAULT INJECTION IS ON for {len(tables)} node(s) of the cluster at "
          f"{root} ({detail}) -- [nodes.ID.simulate] tables in cluster.toml; "
          "for tests and benchmarks only", file=sys.stderr, flush=True)


def set_simulation(root: str, node_id: str, **settings: Any) -> None:
    """Write (or, with no settings, remove) a node's simulate table in cluster.toml.

    A helper for tests and benchmarks: edits the file the way a person would,
    atomically; running processes pick the change up within RELOAD_INTERVAL.
    """
    path = os.path.join(root, cfgmod.CONFIG_FILE)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = f"[nodes.{node_id}.{SIMULATE_TABLE}]"
    out: list[str] = []
    skipping = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            skipping = stripped == header
        if not skipping:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    if settings:
        Simulation.parse(node_id, settings)  # refuse nonsense before writing it
        out += ["", header]
        for k, v in settings.items():
            out.append(f"{k} = {str(v).lower() if isinstance(v, bool) else v}")
    tmp = path + ".sim.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
