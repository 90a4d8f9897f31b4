"""Small helpers for tests (tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import os


def rand(n: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (fast, incompressible enough, reproducible)."""
    import random
    return random.Random(seed).randbytes(n)


def shard_files(cluster_dir: str) -> list[str]:
    out = []
    for root, _, files in os.walk(os.path.join(cluster_dir, "nodes")):
        out += [os.path.join(root, f) for f in files]
    return out
