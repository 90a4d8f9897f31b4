"""Metadata engines: one interface (`interface.py`), one module per engine.

Modelled on JuiceFS's pkg/meta: the store holds a `MetaEngine` and never
knows which one it is. `open_engine` picks it from the cluster's
configuration: the `[meta] url` of cluster.toml, else the embedded LMDB
environment in the cluster directory.
"""

from __future__ import annotations

import os

from ..config import ClusterConfig
from ..errors import ClusterError
from .interface import (CHANGE_HISTORY, CHUNK_DELETING, CHUNK_LIVE, TABLES, MetaEngine,
                        ObjectIndex, Txn, pack, u64, unpack)

__all__ = ["CHANGE_HISTORY", "CHUNK_DELETING", "CHUNK_LIVE", "TABLES", "MetaEngine",
           "ObjectIndex", "Txn", "pack", "u64", "unpack", "lmdb_dir", "create_engine",
           "open_engine"]


def lmdb_dir(cluster_path: str) -> str:
    """Where the embedded engine keeps a cluster's metadata."""
    return os.path.join(cluster_path, "meta")


def create_engine(cluster_path: str, config: ClusterConfig) -> MetaEngine:
    """A new, empty metadata store for a cluster being initialised."""
    if config.meta_url:
        from .postgresql import PgMeta
        return PgMeta(config.meta_url, cluster_id=config.cluster_id, create=True)
    from .lmdb import LmdbMeta
    return LmdbMeta(lmdb_dir(cluster_path))


def open_engine(cluster_path: str, config: ClusterConfig) -> MetaEngine:
    """The metadata of an existing cluster; refuses to start an empty one over its data."""
    if config.meta_url:
        from .postgresql import PgMeta
        return PgMeta(config.meta_url, cluster_id=config.cluster_id)
    from .lmdb import LmdbMeta
    meta_dir = lmdb_dir(cluster_path)
    if not os.path.exists(os.path.join(meta_dir, "data.mdb")):
        raise ClusterError(f"the metadata of the cluster at {cluster_path} is missing ({meta_dir}); "
                           "refusing to start an empty one over existing data")
    return LmdbMeta(meta_dir)
