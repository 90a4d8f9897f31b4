"""`r2fs demo` ends with the bucket `demo` mounted, says how to unmount, and
`r2fs demo --stop` undoes it (mount and gateway)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys

import boto3
from botocore.config import Config

from fusehelp import Mount, make_cluster
from r2fs.cli.fuse_cmds import is_r2fs_mount, wait_for_exit
from r2fs.cli.running import running_gateways


def _env(home):
    """A user's environment, without /usr/local/bin: whether `make install` links are there
    (they are global; other tests add and remove them) must not change what demo prints."""
    env = {k: v for k, v in os.environ.items() if k != "R2FS_CLUSTER"}
    env["HOME"] = str(home)
    env["PATH"] = ":".join(p for p in env.get("PATH", "/usr/bin:/bin").split(":")
                           if p.rstrip("/") != "/usr/local/bin")
    return env


def _r2fs(home, *args, check=True):
    env = _env(home)
    proc = subprocess.run([sys.executable, "-m", "r2fs", *args], capture_output=True, text=True,
                          timeout=120, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_demo_mounts_bucket_and_stop_undoes_it(tmp_path):
    cluster = str(tmp_path / ".local" / "share" / "r2fs")  # the default cluster, made on first use
    mp = str(tmp_path / "mnt")
    m = Mount(cluster, "demo", mp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{s.getsockname()[1]}"
    gateway_pid = None
    try:
        out = _r2fs(tmp_path, "demo", "--mountpoint", mp, "--listen", listen).stdout
        gateway_pid = int(re.search(r"pid (\d+), log \S+gateway.log", out).group(1))
        key_id = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", out).group(1)
        secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", out).group(1)
        s3 = boto3.client("s3", endpoint_url=f"http://{listen}", region_name="auto",
                          aws_access_key_id=key_id, aws_secret_access_key=secret,
                          config=Config(s3={"addressing_style": "path"}))
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="demo")["Contents"]}
        assert "hello.txt" in keys  # the gateway serves what the folder shows
        assert is_r2fs_mount(mp)
        assert "bucket    demo created" in out
        names = os.listdir(mp)
        assert {"hello.txt", "random-1MiB.bin", "written-through-the-folder.txt"} <= set(names)
        with open(os.path.join(mp, "hello.txt"), "rb") as f:
            assert f.read().startswith(b"Hello from r2fs")
        again = _r2fs(tmp_path, "demo", "--mountpoint", mp, "--listen", listen).stdout
        assert "already an r2fs mount" in again and "already exists" in again  # idempotent
        assert "already running" in again and f"AWS_ACCESS_KEY_ID={key_id}" in again
        # the mount's daemon killed: the next demo clears the dead mount and mounts again
        mount_pid = int(re.search(r"mounted at \S+ \(pid (\d+)", out).group(1))
        os.kill(mount_pid, signal.SIGKILL)
        assert wait_for_exit(mount_pid, 10)
        revived = _r2fs(tmp_path, "demo", "--mountpoint", mp, "--listen", listen).stdout
        assert f"mount     {mp} was a dead r2fs mount (its daemon had exited); cleared it" in revived
        assert "bucket demo mounted at" in revived and is_r2fs_mount(mp)
        other = str(tmp_path / "other")
        make_cluster(other, "demo")
        proc = _r2fs(tmp_path, "--cluster", other, "demo", "--mountpoint", mp, "--no-gateway",
                     check=False)
        assert proc.returncode == 1 and "another cluster" in proc.stderr  # never reuses it

        # the stop command it printed, run as printed (a shell, the same PATH)
        stop = out.strip().splitlines()[-1].strip()
        assert stop.endswith(f"demo --stop --mountpoint {shlex.quote(mp)}"), stop
        env = _env(tmp_path)
        done = subprocess.run(stop, shell=True, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        assert f"unmounted {mp}" in done.stdout and "stopped the S3 gateway" in done.stdout
        assert not is_r2fs_mount(mp) and wait_for_exit(gateway_pid, 10)
        assert not running_gateways(cluster)
        again = subprocess.run(stop, shell=True, capture_output=True, text=True, timeout=120, env=env)
        assert again.returncode == 0 and "nothing to stop" in again.stdout
    finally:
        if gateway_pid:
            try:
                os.kill(gateway_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        m.stop()
    assert not is_r2fs_mount(mp)
