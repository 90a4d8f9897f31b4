"""mkdir, symlink and rmdir answered at once and committed in group commits, through a real mount.

mkdir's marker goes into dirattrs.py's group commit (journaled), a symlink
made in bulk is published like a small file closed in bulk (journaled), and
rmdir of an empty directory whose listing the mount knows joins the unlinks'
group commit (journaled). The mount must behave as if each were committed
at once, other interfaces must see them a moment later, and kill -9 right
after a burst must keep exactly what was acknowledged.
"""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest

from fusehelp import read, write


def keys(m) -> list[str]:
    async def ls(b):
        out, cursor = [], None
        while True:
            page = await b.list(limit=1000, cursor=cursor)
            out += [o.key for o in page.objects]
            if not page.truncated:
                return out
            cursor = page.cursor
    return m.api(ls)


def heads(m, names: list[str]) -> dict:
    async def get(b):
        return {k: await b.head(k) for k in names}
    return m.api(get)


def burst(m) -> dict[str, int]:
    """Directories, files and symlinks made one after another (tar x); their st_ino."""
    inos = {}
    for i in range(12):
        d = m.p(f"t{i}")
        os.mkdir(d)
        os.mkdir(os.path.join(d, "sub"))
        write(os.path.join(d, "sub", "f"), b"file %d" % i)
        os.symlink(f"sub/f", os.path.join(d, "ln"))  # right after a close: in bulk
        os.chmod(os.path.join(d, "sub"), 0o750)
        for name in (f"t{i}", f"t{i}/sub", f"t{i}/ln", f"t{i}/sub/f"):  # (f: held, unpublished)
            inos[name] = os.lstat(m.p(name)).st_ino
    return inos


def check_burst(m, inos: dict[str, int]) -> None:
    for i in range(12):
        assert os.readlink(m.p(f"t{i}", "ln")) == "sub/f"
        assert read(m.p(f"t{i}", "ln")) == b"file %d" % i
        assert stat.S_IMODE(os.stat(m.p(f"t{i}", "sub")).st_mode) == 0o750
    assert {name: os.lstat(m.p(name)).st_ino for name in inos} == inos


def test_mkdir_symlink_rmdir_are_shown_at_once_and_committed_soon(mnt):
    inos = burst(mnt)
    assert sorted(os.listdir(mnt.p("t3"))) == ["ln", "sub"]
    assert sorted(n for n in os.listdir(mnt.path) if n.startswith("t")) == sorted(
        f"t{i}" for i in range(12))
    check_burst(mnt, inos)
    time.sleep(0.6)  # committed: other interfaces see the same objects and numbers
    got = heads(mnt, ["t3/", "t3/sub/", "t3/ln"])
    assert got["t3/"].ino == inos["t3"] and got["t3/sub/"].ino == inos["t3/sub"]
    assert got["t3/ln"].ino == inos["t3/ln"]
    assert stat.S_ISLNK(int(got["t3/ln"].custom_metadata["mode"]))
    assert int(got["t3/sub/"].custom_metadata["mode"]) & 0o7777 == 0o750
    # rm -rf of the lot: answered at once, gone from the bucket a moment later
    for i in range(12):
        os.unlink(mnt.p(f"t{i}", "sub", "f"))
        os.rmdir(mnt.p(f"t{i}", "sub"))
        os.unlink(mnt.p(f"t{i}", "ln"))
        os.rmdir(mnt.p(f"t{i}"))
        assert not os.path.exists(mnt.p(f"t{i}"))
    time.sleep(0.6)
    assert [k for k in keys(mnt) if k.startswith("t")] == []
    os.mkdir(mnt.p("t0"))  # the same name again, right after its rmdir
    assert os.listdir(mnt.p("t0")) == []


def test_rmdir_sees_pending_entries(mnt):
    os.mkdir(mnt.p("d"))
    write(mnt.p("x"), b"1")
    write(mnt.p("d", "f"), b"2")  # in bulk: held, not in the bucket yet
    with pytest.raises(OSError) as exc:
        os.rmdir(mnt.p("d"))
    assert exc.value.errno == errno.ENOTEMPTY
    os.mkdir(mnt.p("d", "sub"))  # marker not committed yet
    os.unlink(mnt.p("d", "f"))
    with pytest.raises(OSError) as exc:
        os.rmdir(mnt.p("d"))
    assert exc.value.errno == errno.ENOTEMPTY
    write(mnt.p("y"), b"3")
    os.symlink("target", mnt.p("d", "sub", "ln"))  # held
    with pytest.raises(OSError) as exc:
        os.rmdir(mnt.p("d", "sub"))
    assert exc.value.errno == errno.ENOTEMPTY
    os.unlink(mnt.p("d", "sub", "ln"))
    os.rmdir(mnt.p("d", "sub"))  # made and removed before its marker was committed
    os.rmdir(mnt.p("d"))
    assert not os.path.exists(mnt.p("d"))
    time.sleep(0.6)
    assert [k for k in keys(mnt) if k.startswith("d")] == []


def test_rmdir_of_a_directory_with_hidden_keys_is_refused(mnt):
    mnt.api(lambda b: b.put("h//x", b"not a name the tree can show"))
    time.sleep(0.6)
    assert os.listdir(mnt.p("h")) == []  # (the listing is known now, and looks empty)
    with pytest.raises(OSError) as exc:
        os.rmdir(mnt.p("h"))
    assert exc.value.errno == errno.ENOTEMPTY


def test_other_writer_sees_directories_soon(mnt):
    os.makedirs(mnt.p("p", "q"))
    os.rmdir(mnt.p("p", "q"))
    os.mkdir(mnt.p("p", "r"))
    time.sleep(0.6)
    assert sorted(k for k in keys(mnt) if k.startswith("p")) == ["p/", "p/r/"]
    mnt.api(lambda b: b.put("p/r/other", b"from elsewhere"))
    time.sleep(0.8)  # the change poller
    with pytest.raises(OSError) as exc:
        os.rmdir(mnt.p("p", "r"))
    assert exc.value.errno == errno.ENOTEMPTY


def test_kill9_after_mkdir_symlink_rmdir_bursts(mount_factory):
    m = mount_factory()
    for i in range(8):
        os.mkdir(m.p(f"old{i}"))
    time.sleep(0.6)  # committed: their rmdirs below delete markers
    inos = burst(m)
    for i in range(8):
        os.rmdir(m.p(f"old{i}"))
    os.mkdir(m.p("gone"))
    os.rmdir(m.p("gone"))  # never committed, never comes back
    os.mkdir(m.p("last"))
    inos["last"] = os.stat(m.p("last")).st_ino
    os.kill(m.pid(), 9)
    m.stop()
    m.start()  # replays the journal before it serves
    check_burst(m, inos)
    assert os.path.isdir(m.p("last"))
    names = os.listdir(m.path)
    assert not [n for n in names if n.startswith("old")] and "gone" not in names
    ks = keys(m)
    assert not [k for k in ks if k.startswith(("old", "gone"))]
    assert {"last/", "t0/", "t0/sub/", "t0/ln", "t0/sub/f"} <= set(ks)
