"""Helpers for FUSE tests: a real cluster, a real bucket, a real mount.

The mount is started with the real CLI (`r2fs mount`, background mode) and
ALWAYS unmounted in `finally` -- `r2fs umount`, then `fusermount3 -u -z`
and killing the daemon as last resorts -- so a failing test never leaves a
mount behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import trio

from helpers import stop_mount
from r2fs.cli.fuse_cmds import daemon_pid, is_r2fs_mount
from r2fs.engine.store import Cluster

BUCKET = "fuse-test"
CHUNK = 256 * 1024  # small chunks: multi-chunk paths run on small files
STDLIB = os.path.dirname(os.__file__)
#: Directories of the standard library left out of tree tests (size, not meaning).
STDLIB_EXCLUDES = ("__pycache__", "site-packages", "test", "idlelib", "lib2to3", "tkinter")


def r2fs(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "r2fs.cli", *args], capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"r2fs {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@dataclass
class Mount:
    cluster_dir: str
    bucket: str
    path: str
    options: str | None = None
    args: tuple[str, ...] = ()  # more `r2fs mount` flags

    def p(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def start(self) -> None:
        args = ["--cluster", self.cluster_dir, "mount", self.bucket, self.path]
        if self.options:
            args += ["-o", self.options]
        r2fs(*args, *self.args)
        assert is_r2fs_mount(self.path)

    def peak_rss(self) -> int:
        """The daemon's peak resident set size in bytes (VmHWM)."""
        with open(f"/proc/{self.pid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def pid(self) -> int:
        pid = daemon_pid(self.path)
        assert pid is not None
        return pid

    def stop(self) -> None:
        """Unmount whatever state the mount is in; never raises."""
        stop_mount(self.path)

    def api(self, fn):
        """Run `async fn(bucket)` against the same cluster through the Python API."""
        async def main():
            c = Cluster.open(self.cluster_dir)
            try:
                return await fn(c.bucket(self.bucket))
            finally:
                c.close()
        return trio.run(main)


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def make_cluster(path: str, bucket: str = BUCKET) -> None:
    async def main():
        c = Cluster.init(path, chunk_size=CHUNK)
        try:
            await c.create_bucket(bucket)
        finally:
            c.close()
    trio.run(main)


def run_on_cluster(path: str, fn) -> None:
    """A fresh cluster at `path` (with BUCKET), opened for `await fn(cluster)`, then closed:
    engine-level tests of the mount's parts (journal, markers) without a mount."""
    make_cluster(path)

    async def main():
        c = Cluster.open(path)
        try:
            await fn(c)
        finally:
            c.close()
    trio.run(main)




def published(m: "Mount", key: str, timeout: float = 2.0):
    """The object once the mount published it (small files: a moment after close)."""
    from r2fs.engine.errors import NoSuchKey

    deadline = time.monotonic() + timeout
    while True:
        try:
            return m.api(lambda b: b.head(key))
        except NoSuchKey:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
