"""Node stores: one interface (`interface.py`), one module per kind of store.

`build_nodes` (in `simulate.py`, which may wrap a node in fault injection)
makes each configured node; everything else holds `NodeStore`s and places
shards on them with `place`.
"""

from __future__ import annotations

from ..config import NodeConfig
from ..errors import InvalidClusterConfig
from ..fileio import Buffer
from .interface import TEMP_SUFFIX, NodeStore, NodeUnavailable, Scratch
from .local import DirSync, LocalNode, start_sync, sync_dirs
from .placement import place

__all__ = ["Buffer", "DirSync", "LocalNode", "NodeStore", "NodeUnavailable", "Scratch",
           "TEMP_SUFFIX", "open_node", "place", "start_sync", "sync_dirs"]

S3_SETTINGS = ("endpoint", "profile", "s3_region")


def open_node(cfg: NodeConfig) -> NodeStore:
    """The node store a `[nodes.ID]` table describes: `path` (a directory) or `url` (s3://)."""
    if cfg.url is None:
        return LocalNode(cfg.id, cfg.path, cfg.region)
    if not cfg.url.startswith("s3://"):
        raise InvalidClusterConfig(f"cluster.toml [nodes.{cfg.id}] url {cfg.url!r}: only "
                                   "s3://bucket/prefix node stores are supported")
    from .s3 import S3Node
    settings = {k: cfg.extra.get(k) for k in S3_SETTINGS}
    bad = [k for k, v in settings.items() if v is not None and not isinstance(v, str)]
    if bad:
        raise InvalidClusterConfig(f"cluster.toml [nodes.{cfg.id}] {bad[0]} must be a string")
    return S3Node(cfg.id, cfg.url, cfg.region, **settings)
