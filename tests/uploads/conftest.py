"""Fixtures for the local-uploads tests (helpers live in uploads_helpers.py)."""

from __future__ import annotations

import pytest

from uploads_helpers import make_cluster


@pytest.fixture
def cdir(tmp_path) -> str:
    return str(tmp_path / "cluster")


@pytest.fixture
def regional(cdir):
    """east: n0-n5, west: n6-n11; RS(4,2), 64 KiB chunks."""
    c = make_cluster(cdir)
    try:
        yield c
    finally:
        c.close()
