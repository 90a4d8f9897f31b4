"""Fixtures for the read-cache tests: a cluster with small chunks (many chunks
from little data), its reader configured and always closed, peer processes
that are always killed, and a helper to make the node directories vanish."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Callable, Iterator

import pytest

from r2fs.engine.store import Cluster

CHUNK = 256 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def small_cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster.init(str(tmp_path / "cluster"), chunk_size=CHUNK)
    try:
        yield c
    finally:
        c.reader.close()
        c.close()


@pytest.fixture
async def bucket(small_cluster):
    await small_cluster.create_bucket("cache-test")
    return small_cluster.bucket("cache-test")


@contextlib.contextmanager
def nodes_gone(cluster: Cluster) -> Iterator[None]:
    """The node directories renamed away (we run as root: chmod would not stop us)."""
    nodes = os.path.join(cluster.path, "nodes")
    away = nodes + ".away"
    os.rename(nodes, away)
    try:
        yield
    finally:
        os.rename(away, nodes)


@pytest.fixture
def peer_process(tmp_path) -> Iterator[Callable[..., tuple[subprocess.Popen, str]]]:
    """Start peer processes on 127.0.0.1 free ports: (process, url). All killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(cluster_dir: str, name: str, *peers: str,
              cache_size: int = 64 << 20) -> tuple[subprocess.Popen, str]:
        cmd = [sys.executable, os.path.join(HERE, "peer_process.py"), cluster_dir,
               "--cache-dir", str(tmp_path / f"cache-{name}"), "--cache-size", str(cache_size)]
        for url in peers:
            cmd += ["--peer", url]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise AssertionError(f"peer process {name} did not start (got {url!r})")
        return proc, url

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
