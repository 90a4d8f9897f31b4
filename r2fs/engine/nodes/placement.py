"""Rendezvous placement: which nodes hold a chunk's shards."""

from __future__ import annotations

import hashlib
from typing import Sequence


def place(chunk_id: bytes, node_ids: Sequence[str], n: int) -> list[str]:
    """The `n` nodes for a chunk's shards, best first: rendezvous (HRW) hashing.

    Each (chunk, node) pair gets a pseudo-random score and the n highest win.
    Deterministic without any shared table, even spread, and adding or
    removing a node only changes the chunks whose top n included that node.
    """
    if n > len(node_ids):
        raise ValueError(f"cannot place {n} shards on {len(node_ids)} nodes")
    if len(set(node_ids)) != len(node_ids):
        raise ValueError("duplicate node ids")

    def score(node_id: str) -> bytes:
        return hashlib.blake2b(node_id.encode("utf-8"), key=chunk_id[:64], digest_size=8,
                               person=b"r2fs-hrw").digest()

    return sorted(node_ids, key=lambda nid: (score(nid), nid), reverse=True)[:n]
