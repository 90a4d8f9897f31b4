"""Changing the node set: add, drain, remove, replace -- and noticing such changes.

The node set lives in cluster.toml. A change is made under `run/config.lock`
(one changer at a time) and written atomically (`config.save`); every
running process re-reads the file when it changes (`refresh`, at most once a
second, from the write path and whenever a chunk record names a node the
process does not know), so reads and writes keep working while nodes come
and go:

* add: the new node takes part in placement at once; `rebalance` moves the
  shards whose rendezvous winner it now is.
* drain: the node is marked `state = "draining"`: it keeps serving reads but
  gets no new shards; `rebalance` moves its shards away.
* remove: refused while any chunk record still places a shard there.
* replace: the node keeps its id (so placement does not change) but gets a new
  directory; `rebuild_node` re-creates its shards there from the other nodes.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from . import config as cfgmod
from .chunkwalk import iter_records
from .errors import InvalidClusterConfig, R2fsError
from .fileio import file_lock
from .simulate import build_nodes

if TYPE_CHECKING:
    from .core import Core as Cluster

LOCK_FILE = os.path.join("run", "config.lock")
REFRESH_EVERY = 1.0
_REGION_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class NodeInUse(R2fsError):
    """A node cannot be removed: chunk records still place shards on it."""


class NoSuchNode(R2fsError):
    """No node of that id in cluster.toml."""


def _stamp(root: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(os.path.join(root, cfgmod.CONFIG_FILE))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def start_watching(c: "Cluster") -> None:
    c._config_stamp = _stamp(c.path)
    c._config_checked = time.monotonic()


def refresh(c: "Cluster", *, force: bool = False) -> bool:
    """Re-read cluster.toml if it changed; True if the node set was updated.

    Nodes are updated in place in `c.nodes` (the mapping the chunk store
    reads), so every component sees the new set at once.
    """
    now = time.monotonic()
    if not force and now - getattr(c, "_config_checked", 0.0) < REFRESH_EVERY:
        return False
    c._config_checked = now
    stamp = _stamp(c.path)
    if stamp is None or (stamp == getattr(c, "_config_stamp", None) and not force):
        return False
    try:
        cfg = cfgmod.load(c.path)
    except R2fsError:
        return False  # a broken edit by hand: keep the set we have
    fresh = build_nodes(cfg, c.path)
    for nid in list(c.nodes):
        if nid not in fresh:
            del c.nodes[nid]
    for nid, node in fresh.items():
        old = c.nodes.get(nid)
        if old is None or old.location != node.location:
            c.nodes[nid] = node
    c.config = cfg
    c.refresh_regions()
    c._config_stamp = stamp
    return True


def config_lock(root: str) -> Any:
    """One changer of cluster.toml at a time (waits for the other)."""
    return file_lock(os.path.join(root, LOCK_FILE))


def _change(c: "Cluster", edit: Callable[[cfgmod.ClusterConfig], None]) -> cfgmod.ClusterConfig:
    """Apply `edit(cfg)` to a fresh read of cluster.toml under the lock; save; refresh."""
    with config_lock(c.path):
        cfg = cfgmod.load(c.path)
        edit(cfg)
        cfgmod.validate_layout(len(cfg.nodes), cfg.k, cfg.m, cfg.chunk_size)
        cfgmod.save(cfg, c.path)
    refresh(c, force=True)
    return c.config


def _find(cfg: cfgmod.ClusterConfig, node_id: str) -> cfgmod.NodeConfig:
    for n in cfg.nodes:
        if n.id == node_id:
            return n
    raise NoSuchNode(f"no node {node_id!r} in this cluster (nodes: {', '.join(cfg.node_ids)})")


def _check_new_dir(cfg: cfgmod.ClusterConfig, path: str, *, allow: str | None = None) -> None:
    """A new node directory: not another node's, empty if it exists; created here."""
    real = os.path.realpath(path)
    for n in cfg.nodes:
        if n.id != allow and os.path.realpath(n.path) == real:
            raise InvalidClusterConfig(f"{path} is already the directory of node {n.id}")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise InvalidClusterConfig(f"{path} exists and is not a directory")
        if os.listdir(path):
            raise InvalidClusterConfig(f"{path} is not empty; a new node needs an empty directory")
    else:
        parent = os.path.dirname(real)
        if not os.path.isdir(parent):
            raise InvalidClusterConfig(f"cannot create node directory {path}: "
                                       f"{parent} does not exist")
        os.mkdir(path, 0o755)


def add_node(c: "Cluster", path: str, region: str | None = None) -> str:
    """Add a node directory; returns its new id. Data moves with `rebalance`."""
    if region is not None and not _REGION_RE.match(region):
        raise InvalidClusterConfig(f"invalid region {region!r}: lower-case letters, digits, - and _")
    path = os.path.abspath(path)
    new_id = ""

    def edit(cfg: cfgmod.ClusterConfig) -> None:
        nonlocal new_id
        taken = set(cfg.node_ids)
        i = len(cfg.nodes)
        while f"n{i}" in taken:
            i += 1
        new_id = f"n{i}"
        _check_new_dir(cfg, path)
        if len(cfg.nodes) + 1 > 32 * 32:
            raise InvalidClusterConfig("too many nodes")
        cfg.nodes.append(cfgmod.NodeConfig(new_id, path, region or "default"))

    _change(c, edit)
    return new_id


def drain_node(c: "Cluster", node_id: str) -> None:
    """Mark a node draining: no new shards go there; `rebalance` moves its shards away."""
    def edit(cfg: cfgmod.ClusterConfig) -> None:
        node = _find(cfg, node_id)
        if node.state == cfgmod.NODE_DRAINING:
            return
        active = [n for n in cfg.nodes if n.state == cfgmod.NODE_ACTIVE and n.id != node_id]
        if len(active) < cfg.k + cfg.m:
            raise InvalidClusterConfig(
                f"cannot drain {node_id}: RS({cfg.k},{cfg.m}) needs {cfg.k + cfg.m} nodes to "
                f"place shards on and only {len(active)} would be left (add a node first)")
        node.state = cfgmod.NODE_DRAINING

    _change(c, edit)


def undrain_node(c: "Cluster", node_id: str) -> None:
    def edit(cfg: cfgmod.ClusterConfig) -> None:
        _find(cfg, node_id).state = cfgmod.NODE_ACTIVE

    _change(c, edit)


def shards_on(c: "Cluster", node_id: str, limit: int | None = None) -> int:
    """How many live chunks on the nodes place a shard on `node_id` (stops at `limit`)."""
    n = 0
    for _, rec in iter_records(c):
        if rec.get("loc", "nodes") == "nodes" and node_id in rec["p"]:
            n += 1
            if limit is not None and n >= limit:
                break
    return n


def remove_node(c: "Cluster", node_id: str) -> str:
    """Take a node out of cluster.toml; refused while chunk records need it. Returns its path.

    The directory itself is left alone (the caller may delete it)."""
    path = ""

    def edit(cfg: cfgmod.ClusterConfig) -> None:
        nonlocal path
        node = _find(cfg, node_id)
        path = node.path
        if node.state != cfgmod.NODE_DRAINING:
            raise NodeInUse(f"node {node_id} is not drained: run `r2fs node drain {node_id}` first")
        still = shards_on(c, node_id)
        if still:
            raise NodeInUse(f"node {node_id} still holds shards of {still} chunks: "
                            f"finish `r2fs node drain {node_id}` before removing it")
        if len(cfg.nodes) - 1 < cfg.k + cfg.m:
            raise NodeInUse(f"removing {node_id} would leave {len(cfg.nodes) - 1} nodes, fewer "
                            f"than the {cfg.k + cfg.m} shards of a chunk")
        cfg.nodes.remove(node)

    _change(c, edit)
    return path


def replace_node(c: "Cluster", node_id: str, path: str) -> str:
    """Point node `node_id` at a new (empty) directory; returns the old path.

    Its id stays, so placement does not change; `rebuild_node` fills it."""
    path = os.path.abspath(path)
    old = ""

    def edit(cfg: cfgmod.ClusterConfig) -> None:
        nonlocal old
        node = _find(cfg, node_id)
        old = node.path
        if os.path.realpath(old) == os.path.realpath(path):
            if not os.path.isdir(path):
                os.mkdir(path, 0o755)  # the same place, emptied: rebuild into it
            return
        _check_new_dir(cfg, path, allow=node_id)
        node.path = path

    _change(c, edit)
    return old
