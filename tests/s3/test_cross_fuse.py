"""Cross-interface: a FUSE mount of a bucket and the S3 gateway see each other's writes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from helpers import stop_mount

R2FS = [sys.executable, "-m", "r2fs"]


@pytest.fixture
def mounted(gateway, s3, bucket_name, tmp_path):
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        pytest.skip("FUSE is not available here")
    path = str(tmp_path / "mnt")
    os.mkdir(path)
    subprocess.run([*R2FS, "--cluster", gateway.cluster, "mount", bucket_name, path], check=True,
                   capture_output=True, timeout=60)
    try:
        yield path
    finally:
        stop_mount(path)


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_mount_write_seen_over_s3(mounted, s3, bucket_name):
    os.makedirs(os.path.join(mounted, "docs"))
    path = os.path.join(mounted, "docs", "note.txt")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o640)
        os.write(fd, b"written through FUSE\n")
    finally:
        os.close(fd)  # close-to-open: the object and its attributes are committed here
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket_name, Prefix="docs/").get("Contents", [])]
    assert "docs/note.txt" in keys
    got = s3.get_object(Bucket=bucket_name, Key="docs/note.txt")
    assert got["Body"].read() == b"written through FUSE\n"
    meta = got["Metadata"]
    mode = int(meta["mode"])  # decimal st_mode, as s3fs writes it
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o640, meta
    assert int(meta["uid"]) == os.getuid() and "mtime" in meta


def test_s3_put_seen_in_mount(mounted, s3, bucket_name):
    s3.put_object(Bucket=bucket_name, Key="from-s3/hello.txt", Body=b"put over S3")
    path = os.path.join(mounted, "from-s3", "hello.txt")
    assert _wait_for(lambda: os.path.exists(path)), os.listdir(mounted)
    with open(path, "rb") as f:
        assert f.read() == b"put over S3"
