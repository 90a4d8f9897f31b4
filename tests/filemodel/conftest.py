"""Fixtures for the file-model tests: the FUSE tests' mounts (tests/fuse), reused as they are.

Every mount made here is ALWAYS unmounted in `finally` (see tests/fuse/conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FUSE_TESTS = os.path.join(os.path.dirname(HERE), "fuse")
sys.path.insert(0, FUSE_TESTS)  # fusehelp

_spec = importlib.util.spec_from_file_location("fuse_fixtures", os.path.join(FUSE_TESTS, "conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_fixtures)  # type: ignore[union-attr]

mount_factory = _fixtures.mount_factory
mnt = _fixtures.mnt
