"""Fixtures shared by every test directory: a fresh cluster in a temp dir."""

from __future__ import annotations

import pytest

from r2fs.engine.store import Cluster


@pytest.fixture
def cluster_dir(tmp_path):
    return str(tmp_path / "cluster")


@pytest.fixture
def cluster(cluster_dir):
    c = Cluster.init(cluster_dir)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
async def bucket(cluster):
    await cluster.create_bucket("test-bucket")
    return cluster.bucket("test-bucket")
