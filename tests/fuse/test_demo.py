"""`r2fs demo` ends with the bucket `demo` mounted, and says how to unmount."""

from __future__ import annotations

import os

from fusehelp import Mount, r2fs
from r2fs.cli.fuse_cmds import is_r2fs_mount


def test_demo_mounts_bucket(tmp_path):
    cluster = str(tmp_path / "c")
    mp = str(tmp_path / "mnt")
    m = Mount(cluster, "demo", mp)
    try:
        out = r2fs("--cluster", cluster, "demo", "--mountpoint", mp).stdout
        assert is_r2fs_mount(mp)
        assert "bucket    demo created" in out and f"r2fs umount {mp}" in out
        names = os.listdir(mp)
        assert {"hello.txt", "random-1MiB.bin", "written-through-the-folder.txt"} <= set(names)
        with open(os.path.join(mp, "hello.txt"), "rb") as f:
            assert f.read().startswith(b"Hello from r2fs")
        again = r2fs("--cluster", cluster, "demo", "--mountpoint", mp).stdout  # idempotent
        assert "already an r2fs mount" in again and "already exists" in again
        other = r2fs("--cluster", str(tmp_path / "other"), "demo", "--mountpoint", mp, check=False)
        assert other.returncode == 1 and "another cluster" in other.stderr  # never reuses it
    finally:
        m.stop()
    assert not is_r2fs_mount(mp)
