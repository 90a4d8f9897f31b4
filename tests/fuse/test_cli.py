"""`r2fs mount` / `r2fs umount`: one-line errors, busy refusal, flush on signals."""

from __future__ import annotations

import os
import signal

from fusehelp import BUCKET, Mount, make_cluster, published, r2fs
from r2fs.cli.fuse_cmds import is_r2fs_mount, wait_for_exit


def test_mount_errors_are_one_line(tmp_path):
    cluster = str(tmp_path / "c")
    make_cluster(cluster)
    (tmp_path / "m").mkdir()
    bad = r2fs("--cluster", cluster, "mount", "no-such-bucket", str(tmp_path / "m"), check=False)
    assert bad.returncode == 1 and "no such bucket" in bad.stderr.lower()
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert not is_r2fs_mount(str(tmp_path / "m"))
    notdir = r2fs("--cluster", cluster, "mount", BUCKET, str(tmp_path / "missing"), check=False)
    assert notdir.returncode == 2 and "not a directory" in notdir.stderr
    nomount = r2fs("umount", str(tmp_path / "m"), check=False)
    assert nomount.returncode == 1 and "not an r2fs mount" in nomount.stderr
    opt = r2fs("--cluster", cluster, "mount", BUCKET, str(tmp_path / "m"), "-o", "attr_timeout=x",
               check=False)
    assert opt.returncode == 1 and "bad mount option" in opt.stderr


def test_mount_shows_as_fuse_r2fs_and_refuses_busy_umount(mnt):
    with open("/proc/self/mounts") as f:
        line = next(ln for ln in f if f" {mnt.path} " in ln)
    assert line.split()[0] == "r2fs" and line.split()[2] == "fuse.r2fs"
    fd = os.open(mnt.p("open"), os.O_CREAT | os.O_WRONLY)
    try:
        busy = r2fs("umount", mnt.path, check=False)
        assert busy.returncode == 1 and "cannot unmount" in busy.stderr
        assert is_r2fs_mount(mnt.path)
    finally:
        os.close(fd)
    r2fs("umount", mnt.path)
    assert not is_r2fs_mount(mnt.path)


def test_sigterm_flushes_dirty_files(mount_factory):
    m: Mount = mount_factory()
    fd = os.open(m.p("dirty"), os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"unflushed data" * 1000)
    pid = m.pid()
    os.kill(pid, signal.SIGTERM)
    assert wait_for_exit(pid, 30), "mount daemon did not exit on SIGTERM"
    try:
        os.close(fd)
    except OSError:
        pass
    assert not is_r2fs_mount(m.path)
    info = m.api(lambda b: b.head("dirty"))
    assert info.size == len(b"unflushed data") * 1000


def test_fstab_helper_mounts(tmp_path):
    cluster = str(tmp_path / "c")
    make_cluster(cluster)
    mp = tmp_path / "m"
    mp.mkdir()
    m = Mount(cluster, BUCKET, str(mp))
    try:
        import subprocess
        import sys
        proc = subprocess.run([sys.executable, "-m", "r2fs.fuse.fstab", BUCKET, str(mp), "-o",
                               f"rw,cluster={cluster},attr_timeout=1,nofail,_netdev"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert is_r2fs_mount(str(mp))
        with open(mp / "via-fstab", "w") as f:
            f.write("ok")
        assert published(m, "via-fstab").size == 2
    finally:
        m.stop()
