"""The parts of an open cluster that the engine's modules share.

`Core` is what the reader, writer, gc, replicator and snapshotter are given:
the configuration, the master key, the metadata engine, the node stores, the
chunk store and the staging area, plus the few metadata helpers they all use.
It knows nothing of buckets, objects or the store API, so none of those
modules imports `store.py`; `store.Cluster` is a `Core` with the store API on
top (which is why a `Cluster` can be handed to any of them).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import trio

from . import config as cfgmod, nodeops
from .chunks import ChunkStore
from .feed import ChangeFeed
from .keys import MasterKey
from .meta import MetaEngine, Txn
from .nodes import NodeStore, place
from .simulate import build_nodes
from .staging import Staging

T = TypeVar("T")


def placement_for(cid: bytes, n: int, region_nodes: list[str], placeable: list[str]) -> list[str]:
    """Rendezvous placement over the home region's nodes if it has n of them, else over
    every node that takes shards (the one rule for new chunks and for rebalancing)."""
    return place(cid, region_nodes if len(region_nodes) >= n else placeable, n)


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
        #: this process's peer endpoint, recorded with the chunks it stages (reader.configure)
        self.staged_url: str | None = None
        #: node ids by region that take new shards (placement keeps a bucket's
        #: chunks in its home region); a region of draining nodes maps to []
        self.regions: dict[str, list[str]] = {}
        self.refresh_regions()
        self.chunks.resolve_node = self._resolve_node
        nodeops.start_watching(self)

    # --- the node set --------------------------------------------------------------

    def refresh_regions(self) -> None:
        placeable = set(self.config.placeable_ids)
        regions: dict[str, list[str]] = {}
        for n in self.config.nodes:
            members = regions.setdefault(n.region, [])
            if n.id in placeable:
                members.append(n.id)
        self.regions = regions

    def refresh_config(self, *, force: bool = False) -> bool:
        """Pick up node changes other processes made to cluster.toml (cheap: a stat at
        most once a second, unless `force`). True if the node set changed."""
        return nodeops.refresh(self, force=force)

    def _resolve_node(self, node_id: str) -> NodeStore | None:
        """A node a chunk record names but this process does not know (added since)."""
        self.refresh_config(force=True)
        return self.nodes.get(node_id)

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

    def change_feed(self) -> ChangeFeed:
        """A reader of the changes committed from now on (a mount's change poller)."""
        return ChangeFeed(self.meta)

    async def wait_for_change(self, timeout: float, others_only: bool = False) -> None:
        """Sleep until a metadata change may have been committed (by any process on any
        host; `others_only`: by another process), at most `timeout` seconds: what a
        change poller waits on between polls."""
        await self.meta.wait_for_change(timeout, others_only)

    # --- placement -----------------------------------------------------------------

    def home_region(self, txn: Txn, bucket: str | None) -> str | None:
        """The bucket's location hint if it names a region of this cluster, else None."""
        if not bucket:
            return None
        rec = self.meta.get(txn, "buckets", bucket.encode())
        loc = rec.get("location") if rec else None
        return loc if loc in self.regions else None

    def place(self, cid: bytes, home: str | None) -> list[str]:
        """The nodes for a chunk's k+m shards: in its home region if that has enough,
        leaving out nodes known to be down (an S3 store not answering) while enough
        others are up; otherwise the write fails naming the node (chunks.write_shards)."""
        self.refresh_config()  # nodes added or draining since this process started
        n = self.config.k + self.config.m
        region = self.regions.get(home, []) if home else []
        placeable = self.config.placeable_ids
        up = [nid for nid in placeable if not self._down(nid)]
        if len(up) >= n:
            region = [nid for nid in region if not self._down(nid)]
            placeable = up
        return placement_for(cid, n, region, placeable)

    def _down(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.marked_down

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
