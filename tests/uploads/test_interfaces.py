"""Local mode through the real interfaces: a gateway and a mount running far from the home region.

The home region (west) is DOWN while the client writes: the write can only be
acknowledged from local staging, and the object is read back at once -- through
the same interface and through the store API in another process. Then the
region comes back and the process's own replicator drains the backlog.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import stop_mount
from r2fs.engine.replicator import backlog
from r2fs.engine.simulate import set_simulation
from r2fs.engine.store import Cluster

from uploads_helpers import (CHUNK, EAST, WEST, cli_env, make_cluster, r2fs, rand, shard_files,
                             staged_files)

BUCKET = "far-bucket"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gateway did not start listening")


async def far_cluster_home_down(cdir: str) -> None:
    with make_cluster(cdir) as c:
        await c.create_bucket(BUCKET, location="west")
    for nid in WEST:
        set_simulation(cdir, nid, down=True)


async def read_via_api(cdir: str, key: str) -> bytes:
    with Cluster.open(cdir) as c:
        return await (await c.bucket(BUCKET).get(key)).read()


def backlog_chunks(cdir: str) -> int:
    with Cluster.open(cdir) as c:
        return backlog(c, BUCKET).chunks


def assert_home_placement(cdir: str, *, chunks: int) -> None:
    """Every shard is on a node of the bucket's home region (west), k+m per chunk."""
    files = shard_files(cdir)
    assert not any(files[n] for n in EAST), {n: files[n] for n in EAST}
    assert sum(len(files[n]) for n in WEST) == chunks * 6


def region_back(cdir: str) -> None:
    for nid in WEST:
        set_simulation(cdir, nid)


async def test_s3_gateway_in_local_mode(cdir):
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    await far_cluster_home_down(cdir)
    keys = dict(line.split("=", 1) for line in r2fs(cdir, "keys", "create").stdout.splitlines()
                if "=" in line)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "r2fs", "--cluster", cdir, "serve",
                             "--listen", f"127.0.0.1:{port}", "--region", "east"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    try:
        wait_port(port, proc)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="auto",
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
                          config=Config(retries={"max_attempts": 1},
                                        s3={"addressing_style": "path"}))
        data = rand(3 * CHUNK + 7, 1)
        s3.put_object(Bucket=BUCKET, Key="obj", Body=data)  # acknowledged with west down
        assert s3.get_object(Bucket=BUCKET, Key="obj")["Body"].read() == data
        assert await read_via_api(cdir, "obj") == data
        assert backlog_chunks(cdir) == 4
        region_back(cdir)
        done = r2fs(cdir, "sync", BUCKET, "--timeout", "60")
        assert done.returncode == 0, done.stderr
        assert_home_placement(cdir, chunks=4)
        shutil.rmtree(os.path.join(cdir, "staging"))
        assert s3.get_object(Bucket=BUCKET, Key="obj")["Body"].read() == data
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "FAULT INJECTION IS ON" in proc.stderr.read()
    assert await read_via_api(cdir, "obj") == data


def _fuse_available() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


@pytest.mark.skipif(not _fuse_available(), reason="no FUSE on this machine")
async def test_mount_in_local_mode(cdir, tmp_path):
    from r2fs.cli.fuse_cmds import is_r2fs_mount

    await far_cluster_home_down(cdir)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    data = rand(2 * CHUNK + 11, 2)
    try:
        started = r2fs(cdir, "mount", BUCKET, mnt, "--region", "east", "--write-mode", "local")
        assert started.returncode == 0, started.stderr
        assert is_r2fs_mount(str(mnt))
        with open(mnt / "file.bin", "wb") as f:
            f.write(data)
        assert (mnt / "file.bin").read_bytes() == data
        assert await read_via_api(cdir, "file.bin") == data  # another process, from staging
        assert backlog_chunks(cdir) == 3
        region_back(cdir)
        done = r2fs(cdir, "sync", BUCKET, "--timeout", "60")
        assert done.returncode == 0, done.stderr
        assert staged_files(cdir) == []
        assert_home_placement(cdir, chunks=3)
        assert (mnt / "file.bin").read_bytes() == data
    finally:
        stop_mount(str(mnt))
    assert await read_via_api(cdir, "file.bin") == data
