"""`r2fs demo` ends with the bucket `demo` mounted, and says how to unmount."""

from __future__ import annotations

import os
import re
import signal
import socket

import boto3
from botocore.config import Config

from fusehelp import Mount, r2fs
from r2fs.cli.fuse_cmds import is_r2fs_mount


def test_demo_mounts_bucket(tmp_path):
    cluster = str(tmp_path / "c")
    mp = str(tmp_path / "mnt")
    m = Mount(cluster, "demo", mp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{s.getsockname()[1]}"
    gateway_pid = None
    try:
        out = r2fs("--cluster", cluster, "demo", "--mountpoint", mp, "--listen", listen).stdout
        gateway_pid = int(re.search(r"kill (\d+)", out).group(1))
        key_id = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", out).group(1)
        secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", out).group(1)
        s3 = boto3.client("s3", endpoint_url=f"http://{listen}", region_name="auto",
                          aws_access_key_id=key_id, aws_secret_access_key=secret,
                          config=Config(s3={"addressing_style": "path"}))
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="demo")["Contents"]}
        assert "hello.txt" in keys  # the gateway serves what the folder shows
        assert is_r2fs_mount(mp)
        assert "bucket    demo created" in out and f"r2fs umount {mp}" in out
        names = os.listdir(mp)
        assert {"hello.txt", "random-1MiB.bin", "written-through-the-folder.txt"} <= set(names)
        with open(os.path.join(mp, "hello.txt"), "rb") as f:
            assert f.read().startswith(b"Hello from r2fs")
        again = r2fs("--cluster", cluster, "demo", "--mountpoint", mp, "--listen", listen).stdout
        assert "already an r2fs mount" in again and "already exists" in again  # idempotent
        assert "already running" in again and f"AWS_ACCESS_KEY_ID={key_id}" in again
        other = r2fs("--cluster", str(tmp_path / "other"), "demo", "--mountpoint", mp,
                     "--no-gateway", check=False)
        assert other.returncode == 1 and "another cluster" in other.stderr  # never reuses it
    finally:
        if gateway_pid:
            try:
                os.kill(gateway_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        m.stop()
    assert not is_r2fs_mount(mp)
