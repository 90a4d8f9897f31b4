"""Honest space accounting and chunk health for `r2fs status`.

Space: every node's whole directory is listed (`NodeStore.entries`), not just
its shards, and each entry is put in one kind -- object data (shard files),
metadata snapshots, temp files of interrupted writes, other files, and
directories themselves -- with both its size and the storage it takes
(allocated blocks). The kinds of a node add up to its total, and the total is
what `du -s -B1` reports for the node directory. The cluster directory's
local areas (metadata, staging, read cache, run files) are counted the same
way, separately: they are on this machine, not on a node.

Health: a chunk is degraded when fewer than k+m of its shards are good --
a shard file missing, its node down or unknown, or damage a scrub or a read
found and nobody repaired yet (`repair.known_damage`); it is lost when fewer
than k are. A stat per shard, no reads: status stays quick; `r2fs scrub`
is what reads every byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from .chunkwalk import iter_records, live_on_nodes
from .nodes import TEMP_SUFFIX
from .repair import known_damage

if TYPE_CHECKING:
    from .core import Core

KINDS = ("object_data", "metadata_snapshots", "temp", "other", "directories")
LOCAL_AREAS = {"meta": "metadata", "staging": "staging", "cache": "cache", "run": "run"}


@dataclass
class Usage:
    """Bytes (apparent) and storage used (allocated), per kind."""
    bytes: dict[str, int] = field(default_factory=dict)
    disk: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, size: int, disk: int) -> None:
        self.bytes[kind] = self.bytes.get(kind, 0) + size
        self.disk[kind] = self.disk.get(kind, 0) + disk
        self.files[kind] = self.files.get(kind, 0) + 1

    @property
    def total_disk(self) -> int:
        return sum(self.disk.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def as_dict(self) -> dict:
        return {"bytes": dict(self.bytes), "disk_bytes": dict(self.disk), "files": dict(self.files),
                "total_bytes": self.total_bytes, "total_disk_bytes": self.total_disk}


def kind_of(name: str, is_dir: bool) -> str:
    if is_dir:
        return "directories"
    base = name.rsplit("/", 1)[-1]
    if base.startswith(".") and base.endswith(TEMP_SUFFIX):
        return "temp"
    top = name.split("/", 1)[0]
    if top == "shards":
        return "object_data"
    if top == "meta-snapshots":
        return "metadata_snapshots"
    return "other"


def node_usage(entries: Iterable[tuple[str, int, int, bool]]) -> Usage:
    u = Usage()
    for kind in KINDS:
        u.bytes[kind] = u.disk[kind] = u.files[kind] = 0
    for name, size, disk, is_dir in entries:
        u.add(kind_of(name, is_dir), size, disk)
    return u


def tree_usage(path: str) -> tuple[int, int]:
    """(bytes, storage used) of a local directory tree, the directory included (as du)."""
    total = disk = 0
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0, 0
    total, disk = st.st_size, st.st_blocks * 512
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += st.st_size
            disk += st.st_blocks * 512
    return total, disk


def local_usage(c: "Core") -> dict[str, dict[str, int]]:
    """The cluster directory's own areas on this machine: area -> {bytes, disk_bytes}."""
    out = {}
    for sub, kind in LOCAL_AREAS.items():
        size, disk = tree_usage(os.path.join(c.path, sub))
        out[kind] = {"bytes": size, "disk_bytes": disk}
    return out


@dataclass
class NodeHealth:
    expected: int = 0  # shards the chunk records place here
    present: int = 0
    missing: int = 0
    damaged: int = 0  # known damage (a scrub or a read found it)


@dataclass
class Health:
    chunks: int = 0  # chunks on the nodes
    staged: int = 0  # chunks still in local staging (not on the nodes yet)
    degraded: int = 0  # fewer than k+m good shards
    lost: int = 0  # fewer than k good shards
    nodes: dict[str, NodeHealth] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def health(c: "Core") -> Health:
    """Degraded and lost chunks, and shards per node (a stat per shard; blocking)."""
    cfg = c.config
    n = cfg.k + cfg.m
    damage = known_damage(c)
    h = Health(nodes={nid: NodeHealth() for nid in c.nodes})
    up = {nid: node.available() for nid, node in c.nodes.items()}
    for cid, rec in iter_records(c):
        if not live_on_nodes(rec):
            if rec.get("loc") == "staging":
                h.staged += 1
            continue
        h.chunks += 1
        names = c.chunks.shard_names(cid, rec["g"])
        known = (damage.get(cid) or {}).get("bad") or {}
        good = 0
        for i, nid in enumerate(rec["p"]):
            nh = h.nodes.setdefault(nid, NodeHealth())
            nh.expected += 1
            node = c.nodes.get(nid)
            if node is None or not up.get(nid, False):
                nh.missing += 1
                continue
            try:
                size = node.size_of(names[i])
            except OSError:
                size = None
            if size is None:
                nh.missing += 1
                continue
            nh.present += 1
            if str(i) in known:
                nh.damaged += 1
                continue
            good += 1
        if good < n:
            h.degraded += 1
            if len(h.examples) < 5:
                h.examples.append(f"{cid.hex()[:16]}: {good} of {n} shards good")
        if good < cfg.k:
            h.lost += 1
    return h
