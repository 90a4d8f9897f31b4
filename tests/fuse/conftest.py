"""Fixtures for FUSE tests (the helpers are in fusehelp.py).

Every mount made here is ALWAYS unmounted in `finally`.
"""

from __future__ import annotations

import os

import pytest

from fusehelp import BUCKET, Mount, make_cluster


@pytest.fixture
def mount_factory(tmp_path):
    """Make (and always tear down) mounts: factory(options=None) -> Mount."""
    made: list[Mount] = []
    cluster_dir = str(tmp_path / "cluster")
    make_cluster(cluster_dir)

    def factory(options: str | None = None, name: str = "mnt", args: tuple[str, ...] = ()) -> Mount:
        # R2FS_TEST_MOUNT_OPTIONS runs the whole suite with extra -o options (e.g. writeback)
        extra = os.environ.get("R2FS_TEST_MOUNT_OPTIONS")
        options = ",".join(filter(None, [options, extra])) or None
        path = tmp_path / name
        path.mkdir(exist_ok=True)
        m = Mount(cluster_dir, BUCKET, str(path), options, args)
        made.append(m)
        m.start()
        return m

    try:
        yield factory
    finally:
        for m in made:
            m.stop()


@pytest.fixture
def mnt(mount_factory) -> Mount:
    return mount_factory()
