"""Helpers for the local-uploads tests: clusters with regions, CLI runners, writers.

Everything runs the real layers: real node directories, real LMDB, real
subprocesses for kills. Fault injection is the project's own simulate layer
(cluster.toml [nodes.ID.simulate]), never a mock.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

from r2fs.engine.store import Cluster

KiB = 1024
CHUNK = 64 * KiB  # small chunks: several per object, fast tests
TIMEOUT = 120
EAST = [f"n{i}" for i in range(6)]
WEST = [f"n{i}" for i in range(6, 12)]


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def make_cluster(path: str, regions: dict[str, int] | None = None, **kw) -> Cluster:
    regions = regions or {"east": 6, "west": 6}
    return Cluster.init(path, nodes=sum(regions.values()), regions=regions, chunk_size=CHUNK, **kw)


def shard_files(cluster_dir: str) -> dict[str, list[str]]:
    """node id -> shard file names on it."""
    out: dict[str, list[str]] = {}
    root = os.path.join(cluster_dir, "nodes")
    for node in sorted(os.listdir(root)):
        names = []
        for _, _, files in os.walk(os.path.join(root, node)):
            names += files
        out[node] = names
    return out


def staged_files(cluster_dir: str) -> list[str]:
    out = []
    for d, _, files in os.walk(os.path.join(cluster_dir, "staging")):
        out += [os.path.join(d, f) for f in files]
    return out


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("R2FS_CLUSTER", "R2FS_DEBUG", "R2FS_TEST_KILL_REPLICATOR_AFTER")}
    env.update(extra)
    return env


def r2fs(cluster: str, *args: object, env: dict[str, str] | None = None,
         timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "r2fs", "--cluster", cluster, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else cli_env())


#: A writer process: writes objects in local mode through the store API and
#: prints "ACK <key>" after each acknowledged put, then waits to be killed.
WRITER = r"""
import sys, trio, random
from r2fs.engine.store import Cluster
path, bucket, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
async def main():
    c = Cluster.open(path)
    c.writer.configure(mode="local", region="east")
    b = c.bucket(bucket)
    for i in range(count):
        await b.put(f"obj{i}", random.Random(i).randbytes(size))
        print(f"ACK obj{i}", flush=True)
    await trio.sleep(3600)
trio.run(main)
"""


def start_writer(cluster: str, bucket: str, count: int, size: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, cluster, bucket, str(count), str(size)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
