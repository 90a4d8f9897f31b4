"""The file model through a real mount: inode numbers, hard links, special files, times,
long paths, huge sparse files."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import time

import pytest

from fusehelp import published

PETA = 10**15


def st(path: str) -> os.stat_result:
    return os.lstat(path)


def test_inode_numbers_survive_rename_and_remount(mount_factory):
    m = mount_factory()
    os.makedirs(m.p("d"))
    with open(m.p("d/f"), "wb") as f:
        f.write(b"x")
    os.symlink("d/f", m.p("ln"))
    ino_f, ino_ln, ino_d = st(m.p("d/f")).st_ino, st(m.p("ln")).st_ino, st(m.p("d")).st_ino
    os.rename(m.p("ln"), m.p("ln2"))  # a renamed symlink keeps its number, the file too
    os.rename(m.p("d/f"), m.p("d/g"))
    os.rename(m.p("d"), m.p("e"))
    assert st(m.p("ln2")).st_ino == ino_ln
    assert st(m.p("e/g")).st_ino == ino_f
    assert st(m.p("e")).st_ino == ino_d
    m.stop()
    m2 = mount_factory(name="mnt2")
    assert st(m2.p("e/g")).st_ino == ino_f and st(m2.p("ln2")).st_ino == ino_ln
    assert st(m2.p("e")).st_ino == ino_d
    # an object put over the API gets a number, the same in every mount
    m2.api(lambda b: b.put("from-api", b"y"))
    first = st(m2.p("from-api")).st_ino
    m3 = mount_factory(name="mnt3")
    assert st(m3.p("from-api")).st_ino == first
    assert len({ino_f, ino_ln, ino_d, first}) == 4


def test_hard_links(mnt):
    with open(mnt.p("a"), "wb") as f:
        f.write(b"hello")
    ino = st(mnt.p("a")).st_ino
    os.link(mnt.p("a"), mnt.p("b"))
    os.mkdir(mnt.p("sub"))
    os.link(mnt.p("b"), mnt.p("sub/c"))
    for name in ("a", "b", "sub/c"):
        s = st(mnt.p(name))
        assert s.st_ino == ino and s.st_nlink == 3
    with open(mnt.p("b"), "r+b") as f:  # a write through one name shows in all
        f.seek(5)
        f.write(b" world")
    assert open(mnt.p("sub/c"), "rb").read() == b"hello world"
    os.chmod(mnt.p("sub/c"), 0o600)  # attributes are shared
    assert stat.S_IMODE(st(mnt.p("a")).st_mode) == 0o600
    os.unlink(mnt.p("a"))
    assert st(mnt.p("b")).st_nlink == 2 and open(mnt.p("b"), "rb").read() == b"hello world"
    os.rename(mnt.p("b"), mnt.p("sub/c"))  # both name one file: POSIX does nothing
    assert os.path.exists(mnt.p("b")) and st(mnt.p("sub/c")).st_nlink == 2
    with open(mnt.p("other"), "wb") as f:
        f.write(b"other")
    os.rename(mnt.p("other"), mnt.p("b"))  # rename over one link: the other keeps the content
    assert st(mnt.p("sub/c")).st_nlink == 1 and open(mnt.p("sub/c"), "rb").read() == b"hello world"
    # S3 GET (the store API) of any name returns the content
    os.link(mnt.p("sub/c"), mnt.p("d"))
    got = mnt.api(lambda b: _read(b, "d"))
    assert got == b"hello world"
    with pytest.raises(OSError) as e:
        os.link(mnt.p("sub"), mnt.p("dirlink"))
    assert e.value.errno == errno.EPERM


async def _read(bucket, key):
    return await (await bucket.get(key)).read()


def test_special_files(mnt):
    os.mkfifo(mnt.p("fifo"), 0o640)
    s = st(mnt.p("fifo"))
    assert stat.S_ISFIFO(s.st_mode) and stat.S_IMODE(s.st_mode) == 0o640
    got = []
    reader = threading.Thread(target=lambda: got.append(open(mnt.p("fifo"), "rb").read()))
    reader.start()
    with open(mnt.p("fifo"), "wb") as f:  # the kernel runs the pipe
        f.write(b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"]
    os.mknod(mnt.p("null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(mnt.p("blk"), 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    s = st(mnt.p("null"))
    assert stat.S_ISCHR(s.st_mode) and s.st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(st(mnt.p("blk")).st_mode) and st(mnt.p("blk")).st_rdev == os.makedev(7, 0)
    with open(mnt.p("null"), "rb") as f:  # the device itself, not the object's bytes
        assert f.read(10) == b""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(mnt.p("sock"))
        assert stat.S_ISSOCK(st(mnt.p("sock")).st_mode)
    finally:
        sock.close()
    info = published(mnt, "null")  # stored as an object with its mode and rdev (as s3fs)
    assert int(info.custom_metadata["mode"]) == st(mnt.p("null")).st_mode  # (umask applied)
    assert int(info.custom_metadata["rdev"]) == os.makedev(1, 3)
    os.rename(mnt.p("fifo"), mnt.p("fifo2"))
    assert stat.S_ISFIFO(st(mnt.p("fifo2")).st_mode)
    for name in ("fifo2", "null", "blk", "sock"):
        os.unlink(mnt.p(name))
    assert os.listdir(mnt.path) == []


def _times(path: str) -> tuple[int, int]:
    s = st(path)
    return s.st_mtime_ns, s.st_ctime_ns


def _changes(path: str, action) -> bool:
    before = _times(path)
    time.sleep(0.01)
    action()
    after = _times(path)
    return after[0] > before[0] and after[1] > before[1]


def test_directory_times_follow_their_entries(mnt):
    os.mkdir(mnt.p("d"))
    os.mkdir(mnt.p("e"))
    d = mnt.p("d")
    assert _changes(d, lambda: open(mnt.p("d/f"), "wb").close())
    assert _changes(d, lambda: os.mkdir(mnt.p("d/sub")))
    assert _changes(d, lambda: os.rmdir(mnt.p("d/sub")))
    assert _changes(d, lambda: os.link(mnt.p("d/f"), mnt.p("d/g")))
    assert _changes(d, lambda: os.symlink("f", mnt.p("d/s")))
    assert _changes(d, lambda: os.mkfifo(mnt.p("d/p")))
    assert _changes(d, lambda: os.unlink(mnt.p("d/g")))
    assert _changes(mnt.p("e"), lambda: os.rename(mnt.p("d/f"), mnt.p("e/f")))
    assert _changes(d, lambda: os.rename(mnt.p("e/f"), mnt.p("d/f")))
    mnt.stop()  # and they were committed with the change
    m2 = mnt.__class__(mnt.cluster_dir, mnt.bucket, mnt.path, mnt.options)
    m2.start()
    try:
        assert _times(m2.p("d"))[0] >= _times(m2.p("d/f"))[1] - 10**9
    finally:
        m2.stop()


def test_ctime_changes_with_every_change(mnt):
    p = mnt.p("f")
    with open(p, "wb") as f:
        f.write(b"abc")

    def ctime_moves(action) -> bool:
        before = st(p).st_ctime_ns
        time.sleep(0.01)
        action()
        return st(p).st_ctime_ns > before

    assert ctime_moves(lambda: os.chmod(p, 0o600))
    assert ctime_moves(lambda: os.chown(p, 1234, 1234))
    assert ctime_moves(lambda: os.utime(p, ns=(1, 1)))
    assert ctime_moves(lambda: os.truncate(p, 1))
    assert ctime_moves(lambda: _append(p))
    assert ctime_moves(lambda: os.link(p, mnt.p("g")))
    assert ctime_moves(lambda: os.rename(mnt.p("g"), mnt.p("h")))
    assert ctime_moves(lambda: os.setxattr(p, "user.k", b"v"))


def _append(p: str) -> None:
    with open(p, "ab") as f:
        f.write(b"more")


def test_path_max_and_name_max(mnt):
    """4,095-byte paths below the mount point (walked with dir_fd: the kernel's own
    PATH_MAX applies to the whole path string of a system call)."""
    fd = os.open(mnt.path, os.O_DIRECTORY)
    fds = [fd]
    try:
        for _ in range(15):  # 15 x 256 = 3,840 bytes
            os.mkdir("n" * 255, dir_fd=fds[-1])
            fds.append(os.open("n" * 255, os.O_DIRECTORY, dir_fd=fds[-1]))
        leaf = "f" * 254  # key: 3,840 + 254 = 4,094 bytes
        out = os.open(leaf, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fds[-1])
        os.write(out, b"deep")
        os.close(out)
        inp = os.open(leaf, os.O_RDONLY, dir_fd=fds[-1])
        assert os.read(inp, 10) == b"deep"
        os.close(inp)
        with pytest.raises(OSError) as e:
            os.open("g" * 256, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fds[-1])
        assert e.value.errno == errno.ENAMETOOLONG
    finally:
        for f in fds:
            os.close(f)
    key = "/".join(["n" * 255] * 15 + ["f" * 254])
    assert len(key.encode()) == 4094
    info = _head_long(mnt, key)  # an object whose key S3 clients cannot name (> 1,024 bytes)
    assert info.size == 4


def _head_long(mnt, key: str):
    import trio
    from r2fs.engine.names import MAX_MOUNT_KEY_BYTES
    from r2fs.engine.store import Cluster

    async def main():
        with Cluster.open(mnt.cluster_dir) as c:
            deadline = time.monotonic() + 3
            while True:
                try:
                    return await c.bucket(mnt.bucket, max_key=MAX_MOUNT_KEY_BYTES).head(key)
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await trio.sleep(0.05)
    return trio.run(main)


def test_truncate_to_a_petabyte_returns_at_once(mnt):
    p = mnt.p("sparse")
    with open(p, "wb") as f:
        f.write(b"head")
    rss = mnt.peak_rss()
    t = time.monotonic()
    os.truncate(p, PETA)
    assert time.monotonic() - t < 1.0
    assert st(p).st_size == PETA
    with open(p, "rb") as f:
        assert f.read(4) == b"head"
        f.seek(PETA - 3)
        assert f.read(10) == b"\0\0\0"
        f.seek(PETA // 2)
        assert f.read(4096) == bytes(4096)
    with open(p, "r+b") as f:  # ftruncate too, and a write far out
        t = time.monotonic()
        os.ftruncate(f.fileno(), PETA + 1)
        assert time.monotonic() - t < 1.0
        f.seek(5 * 2**40 - 1)  # a write out at 5 TiB (the kernel refuses writes near 1 PB)
        f.write(b"XY")
        os.fsync(f.fileno())
    assert mnt.peak_rss() - rss < 64 << 20
    info = mnt.api(lambda b: b.head("sparse"))
    assert info.size == PETA + 1
    tail = mnt.api(lambda b: _range(b, "sparse", 5 * 2**40 - 2, 4))  # S3-style ranged GET
    assert tail == b"\0XY\0"
    with pytest.raises(OSError) as e:
        os.truncate(p, 2**62)
    assert e.value.errno == errno.EFBIG
    os.truncate(p, 2)
    assert open(p, "rb").read() == b"he"


async def _range(bucket, key, offset, length):
    from r2fs.engine.types import Range
    return await (await bucket.get(key, range=Range(offset=offset, length=length))).read()
