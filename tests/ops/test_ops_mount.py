"""`r2fs mount` as an operator meets it: dead mounts, non-empty folders, bad -o,
what killed mounts leave behind, and `status` listing what runs."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import opshelp  # noqa: F401 - puts tests/fuse on sys.path
from fusehelp import BUCKET, Mount, make_cluster, r2fs

from r2fs.cli.fuse_cmds import cache_base, is_r2fs_mount, pid_file, runtime_dir, wait_for_exit


@pytest.fixture
def mounted(tmp_path):
    """A fresh cluster's bucket mounted at tmp_path/mnt, always unmounted at the end."""
    make_cluster(str(tmp_path / "cluster"))
    (tmp_path / "mnt").mkdir()
    m = Mount(str(tmp_path / "cluster"), BUCKET, str(tmp_path / "mnt"))
    try:
        m.start()
        yield m
    finally:
        m.stop()


def _one_line(proc) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_dead_mount_is_cleared_and_remounted(mounted, tmp_path):
    m: Mount = mounted
    (tmp_path / "beside").mkdir()  # a second, live mount sharing the cache dir
    beside = Mount(m.cluster_dir, BUCKET, str(tmp_path / "beside"))
    try:
        _dead_mount_cleared(m, beside)
    finally:
        beside.stop()


def _dead_mount_cleared(m: Mount, beside: Mount) -> None:
    with open(m.p("kept.txt"), "w") as f:
        f.write("closed before the kill")
    f = open(m.p("open-at-kill.txt"), "w")  # a staging copy exists for this one
    f.write("x")
    pid = m.pid()
    staging = glob.glob(os.path.join(m.cluster_dir, "cache", f"fuse-staging-{pid}-*"))
    assert staging
    beside.start()
    [kept] = glob.glob(os.path.join(m.cluster_dir, "cache", f"fuse-staging-{beside.pid()}-*"))
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid, 10)
    try:
        f.close()
    except OSError:
        pass
    try:
        os.statvfs(m.path)
        raise AssertionError("expected a dead mount")
    except OSError as exc:
        assert exc.strerror == "Transport endpoint is not connected"
    assert os.path.exists(pid_file(m.path))  # what kill -9 leaves behind

    again = r2fs("--cluster", m.cluster_dir, "mount", BUCKET, m.path)
    assert again.stderr.strip() == (f"r2fs: {m.path} was a dead r2fs mount (its daemon had "
                                    "exited); cleared it")
    assert "mounted bucket" in again.stdout and is_r2fs_mount(m.path)
    with open(m.p("kept.txt")) as f:
        assert f.read() == "closed before the kill"  # replayed from the close journal
    assert not any(os.path.exists(s) for s in staging)  # the dead one's staging is gone
    assert os.path.isdir(kept)  # the live one's stays
    assert len(glob.glob(os.path.join(m.cluster_dir, "cache", "fuse-staging-*"))) == 2


def test_stale_pid_files_are_removed(tmp_path):
    cluster = str(tmp_path / "c")
    make_cluster(cluster)
    (tmp_path / "m").mkdir()
    stale = pid_file(str(tmp_path / "gone"))
    child = subprocess.Popen(["true"])
    child.wait()
    with open(stale, "w") as f:
        f.write(f"{child.pid}\n")  # a pid that is not (or no longer) an r2fs daemon
    m = Mount(cluster, BUCKET, str(tmp_path / "m"))
    try:
        m.start()
        assert not os.path.exists(stale)
        assert os.path.exists(pid_file(m.path))  # the live one stays
    finally:
        m.stop()


def test_non_empty_mount_point_refused_unless_nonempty(tmp_path):
    cluster = str(tmp_path / "c")
    make_cluster(cluster)
    mp = tmp_path / "full"
    mp.mkdir()
    for i in range(3):
        (mp / f"mine-{i}").write_text("precious")
    msg = _one_line(r2fs("--cluster", cluster, "mount", BUCKET, str(mp), check=False))
    assert msg == (f"r2fs: {mp} is not empty (3 entries); mounting would hide them: use an "
                   "empty directory, or -o nonempty")
    assert not is_r2fs_mount(str(mp))
    m = Mount(cluster, BUCKET, str(mp), "nonempty")
    try:
        m.start()
        assert "mine-0" not in os.listdir(mp)  # hidden while mounted, as asked
    finally:
        m.stop()
    assert sorted(os.listdir(mp)) == ["mine-0", "mine-1", "mine-2"]


def test_bad_options_are_named_on_the_terminal(tmp_path):
    cluster = str(tmp_path / "c")
    make_cluster(cluster)
    mp = tmp_path / "m"
    mp.mkdir()
    msg = _one_line(r2fs("--cluster", cluster, "mount", BUCKET, str(mp), "-o", "attr_timeout=x",
                         check=False))
    assert msg == "r2fs: bad mount option 'attr_timeout=x'"
    msg = _one_line(r2fs("--cluster", cluster, "mount", BUCKET, str(mp), "-o", "ro,no_such_opt",
                         check=False))
    assert "no_such_opt" in msg and "see the log" not in msg, msg
    assert not is_r2fs_mount(str(mp))


def test_status_lists_running_mounts_and_gateways(mounted, tmp_path):
    m: Mount = mounted
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "gw.log"
    with open(log, "wb") as out:
        gw = subprocess.Popen([sys.executable, "-m", "r2fs", "--cluster", m.cluster_dir, "serve",
                               "--listen", f"127.0.0.1:{port}"], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline and gw.poll() is None
            time.sleep(0.1)
        out = r2fs("--cluster", m.cluster_dir, "status").stdout
        section = out[out.index("running here:"):]
        assert f"- mount point: {m.path}\n      bucket: {BUCKET}\n      pid: {m.pid()}\n" in section
        assert f"log: {os.path.join(runtime_dir(), '')}" in section
        assert f"- endpoint: http://127.0.0.1:{port}\n      pid: {gw.pid}\n      log: {log}" in section
        # the same port again: one line naming the address, exit 1
        busy = r2fs("--cluster", m.cluster_dir, "serve", "--listen", f"127.0.0.1:{port}", check=False)
        assert _one_line(busy) == f"r2fs: cannot listen on 127.0.0.1:{port}: address already in use"
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
    other = str(tmp_path / "other")
    make_cluster(other)
    out = r2fs("--cluster", other, "status").stdout
    assert "running here:\n  mounts: []\n  gateways: []" in out  # only this cluster's


def test_cache_base_default():
    import argparse
    ns = argparse.Namespace(cache_dir=None, cluster="/c")
    assert cache_base(ns) == "/c/cache"
