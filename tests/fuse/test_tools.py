"""Ordinary tools trust the folder: cp/cmp, rsync, tar, git, sqlite."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess

import pytest

from fusehelp import STDLIB, STDLIB_EXCLUDES


def run(*cmd: str, cwd: str | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed: {proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("size", [0, 1, 4095, 128 * 1024 - 1, 128 * 1024 + 1, 256 * 1024,
                                  1024 * 1024 + 3, 5 * 1024 * 1024 + 17])
def test_cp_cat_cmp(mnt, tmp_path, size):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(size))
    dst = mnt.p("file.bin")
    run("cp", str(src), dst)
    assert os.path.getsize(dst) == size
    run("cmp", str(src), dst)
    assert subprocess.run(["cat", dst], capture_output=True).stdout == src.read_bytes()


def test_cp_200mib_and_remount(mount_factory, tmp_path):
    src = tmp_path / "big"
    with open(src, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    m = mount_factory()
    run("cp", str(src), m.p("big"))
    run("cmp", str(src), m.p("big"))
    assert m.peak_rss() < 400 << 20  # staging is on disk: memory does not grow with the file
    m.stop()
    m.start()  # cold: read back from the cluster, not from any cache of the first mount
    run("cmp", str(src), m.p("big"))


def _rsync_excludes() -> list[str]:
    return [f"--exclude={d}" for d in STDLIB_EXCLUDES]


def test_rsync_stdlib_diff_and_noop(mnt):
    dst = mnt.p("stdlib")
    run("rsync", "-a", *_rsync_excludes(), STDLIB + "/", dst + "/")
    diff = subprocess.run(["diff", "-r", "--no-dereference", *[f"--exclude={d}" for d in STDLIB_EXCLUDES],
                           STDLIB, dst], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout[:2000]
    again = run("rsync", "-a", "--itemize-changes", *_rsync_excludes(), STDLIB + "/", dst + "/")
    assert again.strip() == "", again[:2000]


def _tree(tmp_path):
    src = tmp_path / "tree"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "deeper" / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "sub" / "deeper" / "exec.sh", 0o755)
    (src / "private").write_text("secret")
    os.chmod(src / "private", 0o600)
    os.symlink("a.txt", src / "link")
    os.symlink("sub/deeper", src / "dirlink")
    for i, p in enumerate(sorted(src.rglob("*"))):
        os.utime(p, ns=(1_600_000_000_123_456_789 + i, 1_600_000_000_987_654_321 + i * 1000),
                 follow_symlinks=False)
    return src


def _snapshot(root: str) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, f.read())
    return out


def test_tar_round_trip(mnt, tmp_path):
    src = _tree(tmp_path)
    archive = tmp_path / "t.tar"
    run("tar", "--format=posix", "-C", str(src), "-cf", str(archive), ".")
    os.mkdir(mnt.p("x"))
    run("tar", "-C", mnt.p("x"), "-xpf", str(archive))
    assert _snapshot(mnt.p("x")) == _snapshot(str(src))
    back = tmp_path / "back"
    back.mkdir()
    run("tar", "--format=posix", "-C", mnt.p("x"), "-cf", mnt.p("again.tar"), ".")
    run("tar", "-C", str(back), "-xpf", mnt.p("again.tar"))
    assert _snapshot(str(back)) == _snapshot(str(src))


def test_git_workflow(mnt):
    repo = mnt.p("repo")
    os.mkdir(repo)
    env_cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    run("git", "init", "-q", cwd=repo)
    for i in range(20):
        with open(os.path.join(repo, f"f{i}.txt"), "w") as f:
            f.write(f"file {i}\n" * (i + 1))
    os.mkdir(os.path.join(repo, "pkg"))
    with open(os.path.join(repo, "pkg", "mod.py"), "w") as f:
        f.write("print('x')\n")
    run("git", "add", "-A", cwd=repo)
    run(*env_cmd, "commit", "-q", "-m", "first", cwd=repo)
    with open(os.path.join(repo, "f1.txt"), "a") as f:
        f.write("more\n")
    run(*env_cmd, "commit", "-q", "-am", "second", cwd=repo)
    run("git", "fsck", "--strict", cwd=repo)
    run("git", "gc", "-q", cwd=repo)
    run("git", "fsck", "--strict", cwd=repo)
    assert "second" in run("git", "log", "--oneline", cwd=repo)
    assert run("git", "status", "--porcelain", cwd=repo).strip() == ""


def test_sqlite_integrity(mnt):
    db = sqlite3.connect(mnt.p("db.sqlite"))
    db.execute("create table t (id integer primary key, v text)")
    for i in range(20):
        with db:
            db.executemany("insert into t (v) values (?)", [(f"row {i} {j} " * 20,) for j in range(200)])
    with db:
        db.execute("delete from t where id % 3 = 0")
    db.execute("vacuum")
    db.close()
    db = sqlite3.connect(mnt.p("db.sqlite"))
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select count(*) from t").fetchone()[0] == 4000 - 4000 // 3
    db.close()
