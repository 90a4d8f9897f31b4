"""The parts of an open cluster that the engine's modules share.

`Core` is what the reader, writer, gc, replicator and snapshotter are given:
the configuration, the master key, the metadata engine, the node stores, the
chunk store and the staging area, plus the few metadata helpers they all use.
It knows nothing of buckets, objects or the store API, so none of those
modules imports `store.py`; `store.Cluster` is a `Core` with the store API on
top (which is why a `Cluster` can be handed to any of them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, TypeVar

import trio

from . import config as cfgmod
from .chunks import ChunkStore
from .keys import MasterKey
from .meta import MetaEngine, Txn
from .nodes import NodeStore, place
from .simulate import build_nodes
from .staging import Staging

T = TypeVar("T")


class Core:
    """Configuration, key, metadata, nodes, chunks and staging of one open cluster."""

    def __init__(self, path: str, config: cfgmod.ClusterConfig, master: MasterKey,
                 meta: MetaEngine) -> None:
        self.path = path
        self.config = config
        self.master = master
        self.meta = meta
        self.nodes: dict[str, NodeStore] = build_nodes(config, path)
        self.chunks = ChunkStore(master, self.nodes, config.k, config.m, config.stripe_size)
        self.staging = Staging(path)
        regions: dict[str, list[str]] = defaultdict(list)
        for n in config.nodes:
            regions[n.region].append(n.id)
        #: node ids by region (placement keeps a bucket's chunks in its home region)
        self.regions: dict[str, list[str]] = dict(regions)

    # --- metadata helpers ------------------------------------------------------------

    async def transact(self, fn: Callable[[Txn], T]) -> T:
        """Run `fn` in a metadata write transaction, in a worker thread."""
        return await trio.to_thread.run_sync(self.meta.write, fn)

    def chunk_record(self, cid: bytes) -> dict | None:
        """The chunk's metadata record, or None (blocking)."""
        with self.meta.read() as txn:
            return self.meta.get(txn, "chunks", cid)

    def change_seq(self) -> int:
        return self.meta.change_seq()

    async def wait_for_change(self, timeout: float) -> None:
        """Sleep until a metadata change may have been committed (by any process on any
        host), at most `timeout` seconds: what a change poller waits on between polls."""
        await self.meta.wait_for_change(timeout)

    # --- placement -----------------------------------------------------------------

    def home_region(self, txn: Txn, bucket: str | None) -> str | None:
        """The bucket's location hint if it names a region of this cluster, else None."""
        if not bucket:
            return None
        rec = self.meta.get(txn, "buckets", bucket.encode())
        loc = rec.get("location") if rec else None
        return loc if loc in self.regions else None

    def place(self, cid: bytes, home: str | None) -> list[str]:
        """The nodes for a chunk's k+m shards: in its home region if that has enough."""
        n = self.config.k + self.config.m
        candidates = self.regions.get(home, []) if home else []
        if len(candidates) < n:
            candidates = self.config.node_ids
        return place(cid, candidates, n)

    def placement(self, cid: bytes, bucket: str | None) -> list[str]:
        """`place` for a chunk of `bucket` (blocking: reads the bucket's record)."""
        with self.meta.read() as txn:
            return self.place(cid, self.home_region(txn, bucket))

    # --- records for other subsystems ------------------------------------------------

    @staticmethod
    def _rkey(namespace: str, name: str) -> bytes:
        return namespace.encode() + b"\0" + name.encode()

    async def put_record(self, namespace: str, name: str, value: dict[str, Any]) -> None:
        await self.transact(lambda txn: self.meta.put(txn, "records", self._rkey(namespace, name), value))

    async def get_record(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.meta.read() as txn:
            return self.meta.get(txn, "records", self._rkey(namespace, name))

    async def delete_record(self, namespace: str, name: str) -> bool:
        return await self.transact(lambda txn: self.meta.delete(txn, "records",
                                                                self._rkey(namespace, name)))

    async def list_records(self, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        prefix = namespace.encode() + b"\0"
        with self.meta.read() as txn:
            return [(k[len(prefix):].decode(), v) for k, v in self.meta.scan(txn, "records", prefix)]
