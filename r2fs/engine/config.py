"""cluster.toml: what a cluster is made of (nodes, k, m, chunk size).

Written once by `init`; read by every process. The format carries a version
number; a newer one is refused rather than misread.
"""

from __future__ import annotations

import os
import tomllib
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .fileio import fsync_dir
from .errors import InvalidClusterConfig, UnsupportedFormat
from .types import KiB, MiB

CONFIG_FORMAT = 1
CONFIG_FILE = "cluster.toml"


NODE_ACTIVE = "active"
NODE_DRAINING = "draining"  # keeps its shards readable, gets no new ones (`r2fs node drain`)
NODE_STATES = (NODE_ACTIVE, NODE_DRAINING)


@dataclass
class NodeConfig:
    id: str
    path: str  # absolute; "" for a node that is not a local directory (url)
    region: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)  # further settings, e.g. [nodes.ID.simulate]
    state: str = NODE_ACTIVE
    url: str | None = None  # s3://bucket/prefix: the node is a bucket of an S3-compatible store


@dataclass
class ClusterConfig:
    k: int
    m: int
    chunk_size: int
    nodes: list[NodeConfig]
    cluster_id: str
    key_check: str
    stripe_size: int = 256 * KiB
    inline_threshold: int = 128 * KiB
    #: `[meta] url`: the metadata engine (None: the embedded LMDB environment in meta/)
    meta_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the whole parsed file, for other subsystems

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    @property
    def placeable_ids(self) -> list[str]:
        """Nodes new shards may be placed on (every node but draining ones)."""
        return [n.id for n in self.nodes if n.state == NODE_ACTIVE]


def validate_layout(nodes: int, k: int, m: int, chunk_size: int,
                    spell: Callable[[str], str] = str) -> None:
    """One set of layout rules for `init`, `Cluster.create` and reading cluster.toml.

    `spell` names a setting in the caller's terms (the CLI passes `--k` style option
    names), so each error message says what the user actually typed."""
    if nodes < 1:
        raise InvalidClusterConfig(f"{spell('nodes')} must be at least 1 (got {nodes})")
    if k < 1:
        raise InvalidClusterConfig(f"{spell('k')} must be at least 1 data shard (got {k})")
    if m < 0:
        raise InvalidClusterConfig(f"{spell('m')} must be 0 or more parity shards (got {m})")
    if k + m > nodes:
        raise InvalidClusterConfig(
            f"k+m = {k}+{m} = {k + m} shards per chunk need at least {k + m} nodes, "
            f"but {spell('nodes')} is {nodes}")
    if k + m > 32:
        raise InvalidClusterConfig(f"k+m must be at most 32 (got {k + m})")
    if not (64 * KiB <= chunk_size <= 64 * MiB):
        raise InvalidClusterConfig(
            f"{spell('chunk-size')} must be between 64KiB and 64MiB (got {chunk_size})")


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(cfg: ClusterConfig, root: str) -> str:
    lines = [
        "# r2fs cluster. Written by `r2fs init`; read by every r2fs process.",
        f"format = {CONFIG_FORMAT}",
        f"cluster_id = {_quote(cfg.cluster_id)}",
        f"k = {cfg.k}",
        f"m = {cfg.m}",
        f"chunk_size = {cfg.chunk_size}",
        f"stripe_size = {cfg.stripe_size}",
        f"inline_threshold = {cfg.inline_threshold}",
        f"key_check = {_quote(cfg.key_check)}",
        "",
    ]
    if cfg.meta_url:
        lines += ["[meta]", f"url = {_quote(cfg.meta_url)}", ""]
    for n in cfg.nodes:
        where = f"url = {_quote(n.url)}" if n.url else f"path = {_quote(os.path.relpath(n.path, root))}"
        lines += [f"[nodes.{n.id}]", where, f"region = {_quote(n.region)}"]
        if n.state != NODE_ACTIVE:
            lines.append(f"state = {_quote(n.state)}")
        lines += _table_lines(f"nodes.{n.id}", n.extra, header=False)
    # other subsystems' tables ([pops], [meta_snapshots]...), kept as they were
    lines += _table_lines("", {k: v for k, v in cfg.raw.items()
                               if k not in _OWN_KEYS and isinstance(v, dict)}, header=False)
    return "\n".join(lines)


META_SCHEMES = ("postgresql", "postgres")


def check_meta_url(url: str, where: str = "--meta") -> str:
    """A metadata engine URL we can use (postgresql://...), or InvalidClusterConfig."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in META_SCHEMES:
        raise InvalidClusterConfig(f"{where}: {url.split('@')[-1]!r} is not a metadata engine URL "
                                   "(use postgresql://[user[:password]@]host[:port]/database; "
                                   "without it the metadata is the embedded LMDB in meta/)")
    return url


_OWN_KEYS = ("format", "cluster_id", "k", "m", "chunk_size", "stripe_size", "inline_threshold",
             "key_check", "nodes", "meta")


def _table_lines(name: str, table: dict[str, Any], *, header: bool = True) -> list[str]:
    """`table` as TOML: its scalars under [name] (if header), then its sub-tables."""
    lines = [f"[{name}]"] if header else []
    subs = []
    for key, value in table.items():
        if isinstance(value, dict):
            subs.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    lines.append("")
    for key, value in subs:
        lines += _table_lines(f"{name}.{key}" if name else key, value)
    return lines


def _value(v: Any) -> str:
    """A TOML scalar (or list of scalars) as written by `render`."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return _quote(str(v))


def save(cfg: ClusterConfig, root: str) -> None:
    """Durably replace cluster.toml with `cfg` (temp file, fsync, rename, directory fsync).

    Callers serialise changes with `config_lock`; readers see the old or the new file.
    """
    path = os.path.join(root, CONFIG_FILE)
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(render(cfg, root))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    fsync_dir(root)


def new_config(root: str, *, nodes: int, k: int, m: int, chunk_size: int,
               regions: dict[str, int] | None, key_check: str) -> ClusterConfig:
    validate_layout(nodes, k, m, chunk_size)
    if regions:
        if sum(regions.values()) != nodes:
            raise InvalidClusterConfig(
                f"regions list {sum(regions.values())} nodes but --nodes is {nodes}")
        names = [r for r, n in regions.items() for _ in range(n)]
    else:
        names = ["default"] * nodes
    node_cfgs = [NodeConfig(f"n{i}", os.path.join(root, "nodes", f"n{i}"), names[i])
                 for i in range(nodes)]
    return ClusterConfig(k=k, m=m, chunk_size=chunk_size, nodes=node_cfgs,
                         cluster_id=uuid.uuid4().hex, key_check=key_check)


def _meta_url(raw: dict[str, Any], path: str) -> str | None:
    table = raw.get("meta")
    if table is None:
        return None
    if not isinstance(table, dict) or not isinstance(table.get("url"), str):
        raise InvalidClusterConfig(f"{path}: [meta] must be a table with url = \"postgresql://...\"")
    return check_meta_url(table["url"], f"{path} [meta] url")


def load(root: str) -> ClusterConfig:
    path = os.path.join(root, CONFIG_FILE)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidClusterConfig(f"{path} is not valid TOML: {exc}") from None
    fmt = raw.get("format")
    if fmt != CONFIG_FORMAT:
        raise UnsupportedFormat(f"{path} has format {fmt!r}; this r2fs reads format {CONFIG_FORMAT}")
    try:
        nodes = []
        for node_id, table in raw["nodes"].items():
            extra = {k: v for k, v in table.items() if k not in ("path", "region", "state", "url")}
            state = table.get("state", NODE_ACTIVE)
            if state not in NODE_STATES:
                raise InvalidClusterConfig(f"{path}: node {node_id} has unknown state {state!r} "
                                           f"(known: {', '.join(NODE_STATES)})")
            if "url" in table:
                if "path" in table:
                    raise InvalidClusterConfig(f"{path}: [nodes.{node_id}] has both path and url; "
                                               "a node is a directory or a bucket")
                nodes.append(NodeConfig(node_id, "", table.get("region", "default"), extra, state,
                                        url=str(table["url"])))
                continue
            p = table["path"]
            nodes.append(NodeConfig(node_id, os.path.normpath(os.path.join(root, p)),
                                    table.get("region", "default"), extra, state))
        cfg = ClusterConfig(k=int(raw["k"]), m=int(raw["m"]), chunk_size=int(raw["chunk_size"]),
                            nodes=nodes, cluster_id=str(raw["cluster_id"]),
                            key_check=str(raw["key_check"]),
                            stripe_size=int(raw.get("stripe_size", 256 * KiB)),
                            inline_threshold=int(raw.get("inline_threshold", 128 * KiB)),
                            meta_url=_meta_url(raw, path), raw=raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidClusterConfig(f"{path} is incomplete or malformed ({exc})") from None
    validate_layout(len(cfg.nodes), cfg.k, cfg.m, cfg.chunk_size)
    return cfg
