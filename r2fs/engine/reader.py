"""Reading chunks: the tiers a chunk is looked for in, nearest first.

Today: the nodes (any k verified shards, RS-decoded, then authenticated). The
tiered cache (local L1, peer L2) and the local-uploads staging area plug in
here; because chunks are immutable and content-addressed, no tier ever needs
invalidation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .errors import DataUnavailable
from .types import ChunkRef

if TYPE_CHECKING:
    from .store import Cluster


class ChunkReader:
    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster

    def status(self) -> dict[str, Any]:
        """Sections for `ClusterStatus.extra`."""
        return {}

    async def read(self, ref: ChunkRef, *, context: str = "") -> bytes:
        c = self.cluster
        rec = c.chunk_record(ref.id)
        if rec is None:
            raise DataUnavailable(f"{context}: chunk {ref.hex} has no record (metadata damaged?)")
        return await trio.to_thread.run_sync(
            lambda: c.chunks.read(ref.id, rec["g"], rec["p"], rec["l"], context=context))
