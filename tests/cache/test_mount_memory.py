"""A mount's memory stays bounded however big the file: a real mount, a file many
times the engine's buffer bounds written and read (cold from the nodes, then
from L1) several times; the daemon's peak RSS stays under a fixed limit, and
once the mount is idle its buffer pools are given back."""

from __future__ import annotations

import os
import sys
import time

import pytest
import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "fuse"))
from fusehelp import BUCKET, Mount  # noqa: E402

from r2fs.engine.reader import SNAPSHOT_EVERY, TRIM_IDLE  # noqa: E402
from r2fs.engine.store import Cluster  # noqa: E402

MiB = 1 << 20
SIZE = 320 * MiB  # 80 chunks of 4 MiB: ~10x the read-ahead budget
#: Peak RSS allowed over the whole test. An idle mount is ~45 MiB; before the
#: pools were bounded and trimmed, a cold read of this file took it past 200 MiB.
PEAK_LIMIT = 180 * MiB


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def _drop_caches() -> None:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # not root: the first read is then partly from the page cache; the bound holds


def _write(path: str, seed: int) -> None:
    block = bytearray(os.urandom(MiB))
    with open(path, "wb") as f:
        for i in range(SIZE // MiB):
            block[:8] = (seed * 100000 + i).to_bytes(8, "little")  # no two chunks alike
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def _read(path: str) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(MiB):
            n += len(chunk)
    return n


@pytest.fixture
def big_mount(tmp_path):
    """A fresh cluster with the default 4 MiB chunks, mounted; always unmounted."""
    cluster_dir = str(tmp_path / "cluster")

    async def make() -> None:
        c = Cluster.init(cluster_dir)
        try:
            await c.create_bucket(BUCKET)
        finally:
            c.close()
    trio.run(make)
    (tmp_path / "mnt").mkdir()
    m = Mount(cluster_dir, BUCKET, str(tmp_path / "mnt"))
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.mark.slow
def test_big_files_keep_the_daemon_within_a_memory_bound(big_mount):
    m = big_mount
    pid = m.pid()
    idle = _status(pid, "VmRSS")
    for seed in range(2):
        path = m.p(f"big{seed}")
        _write(path, seed)
        _drop_caches()
        assert _read(path) == SIZE  # cold: decoded from the nodes, filling L1
        _drop_caches()
        assert _read(path) == SIZE  # L1 hits
    peak = _status(pid, "VmHWM")
    assert peak < PEAK_LIMIT, f"daemon peak RSS {peak / MiB:.0f} MiB (idle was {idle / MiB:.0f})"
    # idle: the pools are given back within a few maintenance rounds
    deadline = time.monotonic() + TRIM_IDLE + 6 * SNAPSHOT_EVERY
    while True:
        rss = _status(pid, "VmRSS")
        if rss < idle + 48 * MiB or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rss < idle + 48 * MiB, (
        f"idle daemon still holds {rss / MiB:.0f} MiB (it started at {idle / MiB:.0f})")
