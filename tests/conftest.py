"""Fixtures shared by every test directory: a fresh cluster in a temp dir."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile

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


# --- PostgreSQL ------------------------------------------------------------------------
# A server for the whole session, started on first use; one fresh database per test.
# R2FS_TEST_META=postgresql runs the suite against it: every Cluster.init (and every
# `r2fs init` subprocess, through R2FS_META_URL) gets a new database.

import os  # noqa: E402

PG_MODE = os.environ.get("R2FS_TEST_META", "") in ("postgresql", "pg")


@pytest.fixture(scope="session")
def pg_server():
    from pgserver import PgServer, pg_bindir
    if pg_bindir() is None:
        pytest.skip("PostgreSQL is not installed (make system-deps installs it)")
    server = PgServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server):
    return pg_server.new_database()


#: Test files that change what the whole machine sees (`make install`'s links in
#: /usr/local/bin and /sbin, PATH lookups of them): never run beside each other.
MACHINE_WIDE = ("tests/ops/", "tests/fuse/test_demo.py")
#: held by the one test file of MACHINE_WIDE running on this machine (any checkout)
MACHINE_WIDE_LOCK = "/tmp/r2fs-tests-machine-wide.lock"


@pytest.fixture(scope="module", autouse=True)
def _machine_wide_files_one_at_a_time(request):
    """`make test` runs two pytest-xdist workers, `--dist loadfile` (a file's module-scoped
    mounts and servers stay on one worker, its tests in order). A file of MACHINE_WIDE
    holds a machine-wide lock from its first test to its last, so no two of them overlap:
    one removes the links another has just installed. (A lock, not xdist's loadgroup: with
    pytest 9.2 loadgroup's marks no longer reach the scheduler, and every test went to
    either worker -- CI: the fstab test found /sbin/mount.fuse.r2fs gone.)"""
    if not request.node.nodeid.startswith(MACHINE_WIDE):
        yield
        return
    with open(MACHINE_WIDE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_collection_modifyitems(config, items):
    if not PG_MODE:
        return
    skip = pytest.mark.skip(reason="LMDB-specific (R2FS_TEST_META=postgresql run)")
    for item in items:
        if item.get_closest_marker("lmdb_only"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _meta_engine_under_test(request, monkeypatch):
    if not PG_MODE or request.node.get_closest_marker("lmdb_only"):
        yield
        return
    server = request.getfixturevalue("pg_server")
    original = Cluster.init.__func__

    def init(cls, path, **kw):
        kw.setdefault("meta_url", server.new_database())
        return original(cls, path, **kw)

    monkeypatch.setattr(Cluster, "init", classmethod(init))
    monkeypatch.setenv("R2FS_META_URL", server.new_database())
    yield


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir():
    """Mount daemons keep their pid files and logs in $XDG_RUNTIME_DIR/r2fs-UID
    (else /tmp/r2fs-UID): a private one for the test session, removed at its
    end, so the suite leaves no mount-*.log files behind (nor reads stale ones)."""
    path = tempfile.mkdtemp(prefix="r2fs-test-runtime-")
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = path
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
        shutil.rmtree(path, ignore_errors=True)
