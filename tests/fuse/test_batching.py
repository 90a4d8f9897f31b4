"""Unlinks in group commits (deletes.py), through a real mount.

An unlink returns before its delete is committed; the mount must behave as
if it were (name gone, recreate works, rmdir sees an empty directory), the
bucket must follow a moment later, and kill -9 in between must not bring
the file back.
"""

from __future__ import annotations

import errno
import os
import time

from fusehelp import read, write


def keys(m) -> list[str]:
    async def ls(b):
        return [o.key for o in (await b.list(limit=1000)).objects]
    return m.api(ls)


def test_unlinks_are_batched_and_behave_at_once(mnt):
    os.mkdir(mnt.p("d"))
    for i in range(50):
        write(mnt.p("d", f"f{i}"), b"x" * 100)
    write(mnt.p("lone"), b"y")
    time.sleep(0.5)  # all published
    assert len([k for k in keys(mnt) if k.startswith("d/f")]) == 50
    for i in range(50):
        os.unlink(mnt.p("d", f"f{i}"))
    assert os.listdir(mnt.p("d")) == []
    assert not os.path.exists(mnt.p("d", "f3"))
    write(mnt.p("d", "f3"), b"again")  # the same name right after its unlink
    assert read(mnt.p("d", "f3")) == b"again"
    os.unlink(mnt.p("lone"))
    try:
        os.unlink(mnt.p("lone"))
    except OSError as exc:
        assert exc.errno == errno.ENOENT
    else:
        raise AssertionError("second unlink succeeded")
    time.sleep(0.5)
    assert sorted(k for k in keys(mnt) if k.startswith("d/")) == ["d/", "d/f3"]
    assert read(mnt.p("d", "f3")) == b"again"
    os.unlink(mnt.p("d", "f3"))
    os.rmdir(mnt.p("d"))  # sees the directory empty although the delete may be pending
    assert not os.path.exists(mnt.p("d"))
    time.sleep(0.3)
    assert [k for k in keys(mnt) if k.startswith(("d/", "lone"))] == []


def test_implicit_directory_survives_losing_its_last_file(mnt):
    mnt.api(lambda b: b.put("imp/only", b"z"))  # a directory with no marker
    time.sleep(0.6)
    os.unlink(mnt.p("imp", "only"))
    time.sleep(0.5)
    assert os.path.isdir(mnt.p("imp"))
    assert "imp/" in keys(mnt)  # given a marker once its last key went


def test_kill9_right_after_unlinks_keeps_them_unlinked(mount_factory):
    m = mount_factory()
    for i in range(20):
        write(m.p(f"f{i}"), b"content")
    time.sleep(0.5)
    for i in range(20):
        os.unlink(m.p(f"f{i}"))
    os.kill(m.pid(), 9)
    m.stop()
    m.start()
    assert [n for n in os.listdir(m.path) if n.startswith("f")] == []
    assert [k for k in keys(m) if k.startswith("f")] == []


def test_directory_attributes_are_batched_and_shown_at_once(mnt):
    os.makedirs(mnt.p("a", "b"))
    for d in ("a", "a/b"):
        os.chmod(mnt.p(d), 0o700)
        os.utime(mnt.p(d), ns=(1_000_000_000, 2_000_000_000))
        os.setxattr(mnt.p(d), "user.k", d.encode())
    st = os.stat(mnt.p("a", "b"))
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o700, 2_000_000_000)
    assert os.getxattr(mnt.p("a"), "user.k") == b"a"
    time.sleep(0.5)  # committed in one put_many
    info = mnt.api(lambda b: b.head("a/b/"))
    assert int(info.custom_metadata["mode"]) & 0o7777 == 0o700
    os.rename(mnt.p("a"), mnt.p("c"))  # settles first: the marker moves with its attributes
    assert os.stat(mnt.p("c", "b")).st_mtime_ns == 2_000_000_000
    os.chmod(mnt.p("c", "b"), 0o750)
    os.rmdir(mnt.p("c", "b"))  # what was pending for it goes with it
    time.sleep(0.3)
    assert sorted(k for k in keys(mnt) if k.startswith("c")) == ["c/"]


def test_unpublished_file_renamed_over_an_object_then_unlinked(mnt):
    """git: master.lock renamed over master, then pack-refs unlinks master before publication."""
    write(mnt.p("master"), b"first")
    time.sleep(0.5)
    assert mnt.api(lambda b: b.head("master")).size == len(b"first")
    for name in ("other", "master.lock"):  # closes in bulk: master.lock stays unpublished
        write(mnt.p(name), b"second")
    os.rename(mnt.p("master.lock"), mnt.p("master"))
    os.unlink(mnt.p("master"))
    write(mnt.p("moved.lock"), b"third")
    os.rename(mnt.p("moved.lock"), mnt.p("other"))  # over a published-or-not file
    os.rename(mnt.p("other"), mnt.p("final"))
    time.sleep(0.6)
    assert not os.path.exists(mnt.p("master"))
    assert not os.path.exists(mnt.p("other"))
    assert sorted(k for k in keys(mnt) if k in ("master", "other", "final")) == ["final"]
    assert read(mnt.p("final")) == b"third"


def test_listing_while_a_renamed_file_waits_for_publication(mnt):
    """git's ref update (master.lock renamed over master) then `find`/readdir before the
    publication: the listing must not give the name back to the old object (the new
    file lost its name and was never published: the ref went back)."""
    write(mnt.p("master"), b"first")
    time.sleep(0.5)
    assert mnt.api(lambda b: b.head("master")).size == len(b"first")
    for name in ("other", "master.lock"):  # closes in bulk: master.lock stays unpublished
        write(mnt.p(name), b"second")
    ino = os.stat(mnt.p("master.lock")).st_ino
    os.rename(mnt.p("master.lock"), mnt.p("master"))
    assert "master" in os.listdir(mnt.path)  # readdir from offset 0: a bucket snapshot
    assert os.stat(mnt.p("master")).st_ino == ino
    assert read(mnt.p("master")) == b"second"
    time.sleep(0.6)
    assert os.stat(mnt.p("master")).st_ino == ino
    assert read(mnt.p("master")) == b"second"
    info = mnt.api(lambda b: b.head("master"))
    assert (info.ino, info.size) == (ino, len(b"second"))


def test_unpublished_file_renamed_over_one_name_of_a_hard_link(mnt):
    """rsync/tar: a temp file renamed over one name of a hard-linked file replaces that name
    only; the other name keeps its content (a publication at the name would have written
    the content both share)."""
    write(mnt.p("f"), b"original")
    os.link(mnt.p("f"), mnt.p("h"))
    time.sleep(0.5)
    for name in ("other", "tmp"):  # closes in bulk: tmp stays unpublished
        write(mnt.p(name), b"new content")
    os.rename(mnt.p("tmp"), mnt.p("h"))
    assert read(mnt.p("h")) == b"new content" and read(mnt.p("f")) == b"original"
    assert os.stat(mnt.p("f")).st_nlink == 1
    time.sleep(0.6)
    assert read(mnt.p("h")) == b"new content" and read(mnt.p("f")) == b"original"
    assert mnt.api(lambda b: b.head("f")).size == len(b"original")
