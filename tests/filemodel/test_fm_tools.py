"""Backup tools and databases on a real mount: rsync -aH, --link-dest snapshots, cp -al,
borg, fsync'd slice updates surviving kill -9, sqlite integrity after kill -9."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import time

import pytest



def run(*cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc


def make_tree(root: str) -> None:
    os.makedirs(os.path.join(root, "a/b"))
    for i in range(5):
        with open(os.path.join(root, f"a/f{i}"), "wb") as f:
            f.write(os.urandom(1000 + i * 3000))
    os.link(os.path.join(root, "a/f0"), os.path.join(root, "a/b/f0-link"))
    os.symlink("../f1", os.path.join(root, "a/b/sym"))


def test_rsync_ah_keeps_hard_links(mnt, tmp_path):
    src = str(tmp_path / "src")
    make_tree(src)
    run("rsync", "-aH", src + "/", mnt.p("copy") + "/")
    a, b = os.stat(mnt.p("copy/a/f0")), os.stat(mnt.p("copy/a/b/f0-link"))
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    back = str(tmp_path / "back")
    run("rsync", "-aH", mnt.p("copy") + "/", back + "/")
    assert os.stat(back + "/a/f0").st_ino == os.stat(back + "/a/b/f0-link").st_ino
    assert run("rsync", "-aHn", "--itemize-changes", src + "/", mnt.p("copy") + "/").stdout == ""


def test_link_dest_snapshots_share_unchanged_files(mnt, tmp_path):
    src = str(tmp_path / "src")
    make_tree(src)
    prev = None
    for day in ("day1", "day2", "day3"):
        if day == "day3":
            with open(os.path.join(src, "a/f4"), "ab") as f:
                f.write(b"changed")
        args = ["rsync", "-a"] + ([f"--link-dest={prev}"] if prev else []) + [src + "/", mnt.p(day) + "/"]
        run(*args)
        prev = mnt.p(day)
    inos = {d: os.stat(mnt.p(d, "a/f1")).st_ino for d in ("day1", "day2", "day3")}
    assert len(set(inos.values())) == 1 and os.stat(mnt.p("day3/a/f1")).st_nlink == 3
    assert os.stat(mnt.p("day3/a/f4")).st_ino != os.stat(mnt.p("day2/a/f4")).st_ino
    assert os.stat(mnt.p("day2/a/f4")).st_ino == os.stat(mnt.p("day1/a/f4")).st_ino
    shutil.rmtree(mnt.p("day1"))
    assert os.stat(mnt.p("day3/a/f1")).st_nlink == 2
    assert open(mnt.p("day2/a/f1"), "rb").read() == open(os.path.join(src, "a/f1"), "rb").read()


def test_cp_al(mnt, tmp_path):
    make_tree(mnt.p("orig"))
    run("cp", "-al", mnt.p("orig"), mnt.p("linked"))
    for rel in ("a/f0", "a/f3"):
        assert os.stat(mnt.p("orig", rel)).st_ino == os.stat(mnt.p("linked", rel)).st_ino
    assert os.stat(mnt.p("orig/a/f0")).st_nlink == 4  # f0, f0-link and their cp -al copies


def test_borg_create_check_extract(mnt, tmp_path):
    if shutil.which("borg") is None:
        pytest.fail("borg is not installed (APT_FILEMODEL in the Makefile installs borgbackup)")
    src = str(tmp_path / "src")
    make_tree(src)
    env = dict(os.environ, BORG_PASSPHRASE="", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
               BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_BASE_DIR=str(tmp_path / "borg-home"))
    repo = mnt.p("repo")
    outs = [run("borg", "init", "--encryption=none", repo, env=env)]
    outs.append(run("borg", "create", f"{repo}::one", src, env=env))
    with open(os.path.join(src, "a/f2"), "ab") as f:
        f.write(b"more")
    outs.append(run("borg", "create", f"{repo}::two", src, env=env))
    outs.append(run("borg", "check", repo, env=env))
    out = str(tmp_path / "out")
    os.makedirs(out)
    subprocess.run(["borg", "extract", f"{repo}::two"], cwd=out, env=env, check=True,
                   capture_output=True, timeout=300)
    got = os.path.join(out, src.lstrip("/"), "a/f2")
    assert open(got, "rb").read() == open(os.path.join(src, "a/f2"), "rb").read()
    for proc in outs:
        assert "hardlink" not in (proc.stderr + proc.stdout).lower(), proc.stderr


def test_kill9_after_fsync_of_slice_updates(mount_factory):
    m = mount_factory()
    size = 3 << 20  # several chunks (the test clusters use 256 KiB chunks)
    content = bytearray(os.urandom(size))
    with open(m.p("db"), "wb") as f:
        f.write(content)
    rnd = random.Random(1)
    fd = os.open(m.p("db"), os.O_RDWR)
    for _ in range(30):
        off = rnd.randrange(0, size - 4096)
        piece = os.urandom(4096)
        content[off:off + 4096] = piece
        os.pwrite(fd, piece, off)
        os.fsync(fd)
    os.kill(m.pid(), 9)
    try:
        os.close(fd)
    except OSError:  # the daemon is gone
        pass
    m.stop()
    m2 = mount_factory(name="mnt2")
    assert open(m2.p("db"), "rb").read() == bytes(content)


def test_sqlite_integrity_after_random_updates_and_kill9(mount_factory):
    m = mount_factory()
    path = m.p("test.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    db.execute("BEGIN")
    for i in range(1, 2001):
        db.execute("INSERT INTO t VALUES (?, ?)", (i, os.urandom(500)))
    db.execute("COMMIT")
    rnd = random.Random(2)
    last = {}
    for _ in range(100):
        i = rnd.randint(1, 2000)
        v = os.urandom(500)
        db.execute("UPDATE t SET v = ? WHERE id = ?", (v, i))
        last[i] = v
    os.kill(m.pid(), 9)
    try:
        db.close()
    except sqlite3.Error:
        pass
    m.stop()
    m2 = mount_factory(name="mnt2")
    db = sqlite3.connect(m2.p("test.db"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for i, v in last.items():  # every committed update is there
            assert db.execute("SELECT v FROM t WHERE id = ?", (i,)).fetchone()[0] == v
    finally:
        db.close()


def test_fsync_of_new_small_files_survives_kill9_and_costs_no_commit(mount_factory):
    """sqlite's -journal pattern: a new small file created, written, fsynced (twice),
    unlinked. fsync goes to the mount's close journal (fdatasync'd): the fsynced
    bytes survive kill -9; a file unlinked before its publication never reaches
    the metadata; one kept is published a moment later."""
    m = mount_factory()
    seq = m.api(lambda b: _change_seq(b))
    for i in range(20):  # create, write, fsync, rewrite the header, fsync, unlink
        fd = os.open(m.p("db-journal"), os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(fd, os.urandom(4096), 512)
        os.fsync(fd)
        os.pwrite(fd, b"header%02d" % i, 0)
        os.fsync(fd)
        os.close(fd)
        os.unlink(m.p("db-journal"))
    assert m.api(lambda b: _change_seq(b)) == seq  # nothing was committed for them
    kept = {}
    for i in range(5):
        data = os.urandom(1000 + i)
        fd = os.open(m.p(f"kept{i}"), os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        kept[f"kept{i}"] = data  # (left open: the kill comes before any close)
    os.kill(m.pid(), 9)
    m.stop()
    m2 = mount_factory(name="mnt2")  # replays the dead mount's journal
    for name, data in kept.items():
        assert open(m2.p(name), "rb").read() == data
    assert not os.path.exists(m2.p("db-journal"))
    # through the API too, once published
    for name, data in kept.items():
        assert m2.api(lambda b, n=name: _body(b, n)) == data


async def _change_seq(bucket) -> int:
    return bucket.cluster.change_seq()


async def _body(bucket, key: str) -> bytes:
    return await (await bucket.get(key)).read()


def test_a_held_small_file_grown_to_a_terabyte_closes_and_reads(mnt):
    """A small file held for publication (closed in bulk, or journaled by fsync) that a
    truncate grows to 1 TB is no journal record any more: its next close commits it
    (it read the whole terabyte into memory for the journal: MemoryError, EIO)."""
    big = 10**12
    for name in ("first", "bulk"):  # the second close comes in bulk: held
        with open(mnt.p(name), "wb") as f:
            f.write(b"x")
    os.truncate(mnt.p("bulk"), big)
    fd = os.open(mnt.p("synced"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"y")
    os.fsync(fd)  # journaled and held
    os.ftruncate(fd, big)
    os.close(fd)
    for name, first in (("bulk", b"x"), ("synced", b"y")):
        with open(mnt.p(name), "rb") as f:  # reopen and close: no EIO
            assert f.read(2) == first + b"\0"
            f.seek(big - 3)
            assert f.read() == b"\0" * 3
        assert os.stat(mnt.p(name)).st_size == big
        assert mnt.api(lambda b, n=name: b.head(n)).size == big  # committed


def test_fsyncs_of_in_place_updates_share_metadata_commits(mount_factory):
    """fsync() of a page update of a published file goes to the close journal
    (fdatasync'd; kill -9 / power loss: replayed, test above) and is committed a
    moment later: many fsyncs per metadata commit, the content then over the API."""
    m = mount_factory()
    size = 1 << 20
    content = bytearray(os.urandom(size))
    with open(m.p("db"), "wb") as f:
        f.write(content)
    m.api(lambda b: b.head("db"))  # (a lone close commits)
    seq = m.api(lambda b: _change_seq(b))
    rnd = random.Random(3)
    fd = os.open(m.p("db"), os.O_RDWR)
    try:
        for _ in range(40):
            off = rnd.randrange(0, size - 4096)
            piece = os.urandom(4096)
            content[off:off + 4096] = piece
            os.pwrite(fd, piece, off)
            os.fsync(fd)
        commits = m.api(lambda b: _change_seq(b)) - seq
        assert commits < 20, f"{commits} metadata commits for 40 fsyncs"
        deadline = time.monotonic() + 10
        while m.api(lambda b: _body(b, "db")) != bytes(content):  # published while open
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.close(fd)
