"""Storing chunks: content-addressed, deduplicated, crash-safe.

A chunk is stored before any manifest refers to it: its shards are written
(temp file + fsync + rename) and then its record is created with refcount 0
(and queued for gc). The manifest commit that follows takes the reference. A
process killed in between leaves an unreferenced chunk that gc removes --
never a manifest pointing at nothing.

Every write gets a fresh random generation number that is part of the shard
file names, so a writer re-storing a chunk that gc is deleting at the same
moment can never have its new shards removed by gc's old deletion.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import trio

from .meta import CHUNK_LIVE
from .nodes import place
from .types import ChunkRef

if TYPE_CHECKING:
    from .store import Cluster

#: A deduplicated chunk's `touched` time is refreshed at most this often (a write txn).
TOUCH_INTERVAL = 10.0


class ChunkWriter:
    """Writes chunks straight to the nodes (write mode `sync`)."""

    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster

    def status(self) -> dict[str, Any]:
        """Sections for `ClusterStatus.extra`."""
        return {}

    def read_staged(self, cid: bytes) -> bytes | None:
        """The sealed chunk if it is still in local staging (write mode `local`), else None.

        In `sync` mode nothing is ever staged.
        """
        return None

    def placement(self, cid: bytes, bucket: str | None) -> list[str]:
        cfg = self.cluster.config
        return place(cid, cfg.node_ids, cfg.k + cfg.m)

    async def write(self, data: bytes, *, bucket: str | None = None) -> ChunkRef:
        c = self.cluster
        cid = await trio.to_thread.run_sync(c.master.chunk_id, data)
        ref = ChunkRef(cid, len(data))
        rec = c.chunk_record(cid)
        if rec is not None and rec["s"] == CHUNK_LIVE:
            if rec["t"] < time.time() - TOUCH_INTERVAL:
                await c._write(lambda txn: self._touch(txn, cid))
            return ref
        gen = secrets.randbits(31)
        placement = self.placement(cid, bucket)

        def encode_and_spread() -> int:
            sealed = c.chunks.seal(cid, data)
            c.chunks.write_shards(cid, gen, sealed, placement)
            return len(sealed)

        sealed_len = await trio.to_thread.run_sync(encode_and_spread)

        def txn_fn(txn: Any) -> bool:
            cur = c.meta.get(txn, "chunks", cid)
            if cur is not None and cur["s"] == CHUNK_LIVE:
                cur["t"] = time.time()
                c.meta.put(txn, "chunks", cid, cur)
                return False  # someone stored it first; ours are surplus
            c.meta.put(txn, "chunks", cid, {"r": 0, "n": len(data), "l": sealed_len, "g": gen,
                                            "p": placement, "s": CHUNK_LIVE, "t": time.time(),
                                            "loc": "nodes"})
            c.meta.put(txn, "gcq", cid, b"")
            return True

        if not await c._write(txn_fn):
            await trio.to_thread.run_sync(c.chunks.delete_shards, cid, gen, placement)
        return ref

    def _touch(self, txn: Any, cid: bytes) -> None:
        c = self.cluster
        rec = c.meta.get(txn, "chunks", cid)
        if rec is not None:
            rec["t"] = time.time()
            c.meta.put(txn, "chunks", cid, rec)
