"""Each POSIX behaviour the mount promises, checked through a real mount."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import subprocess
import threading
import time

import pytest
from fusehelp import published, read, write

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(old: str, new: str, flags: int) -> None:
    if libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


# --- files -----------------------------------------------------------------------------

def test_o_excl_append_trunc(mnt):
    p = mnt.p("f")
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    os.write(fd, b"hello")
    os.close(fd)
    assert errno_of(os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b" world")
    os.close(fd)
    assert read(p) == b"hello world"
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    assert os.fstat(fd).st_size == 0
    os.write(fd, b"new")
    os.close(fd)
    assert read(p) == b"new"


def test_write_at_offsets_truncate_and_sparse(mnt):
    p = mnt.p("sparse")
    chunk = 256 * 1024
    with open(p, "wb") as f:
        f.seek(3 * chunk + 10)
        f.write(b"end")
    data = read(p)
    assert len(data) == 3 * chunk + 13 and data[:3 * chunk + 10] == bytes(3 * chunk + 10)
    base = os.urandom(3 * chunk)
    write(p, base)
    with open(p, "r+b") as f:
        f.seek(chunk - 2)
        f.write(b"XXXX")  # straddles a chunk boundary
    expect = bytearray(base)
    expect[chunk - 2:chunk + 2] = b"XXXX"
    assert read(p) == bytes(expect)
    os.truncate(p, chunk + 5)  # shrink mid-chunk
    assert read(p) == bytes(expect[:chunk + 5])
    os.truncate(p, 2 * chunk)  # grow: zeros, not the old bytes
    assert read(p) == bytes(expect[:chunk + 5]) + bytes(chunk - 5)
    with open(p, "r+b") as f:  # shrink + grow + write within one open
        f.truncate(10)
        f.truncate(100)
        f.seek(50)
        f.write(b"mid")
    assert read(p) == bytes(expect[:10]) + bytes(40) + b"mid" + bytes(47)


def test_unlink_while_open(mnt):
    p = mnt.p("gone")
    write(p, b"x" * 300_000)
    fd = os.open(p, os.O_RDWR)
    os.unlink(p)
    assert not os.path.exists(p)
    os.pwrite(fd, b"still here", 0)
    assert os.pread(fd, 10, 0) == b"still here"
    assert os.pread(fd, 5, 299_995) == b"xxxxx"
    assert os.fstat(fd).st_nlink == 0
    os.fsync(fd)
    os.close(fd)
    assert "gone" not in os.listdir(mnt.path)
    assert mnt.api(lambda b: b.list(prefix="gone")).objects == []


def test_fsync_statfs_mknod_link(mnt):
    p = mnt.p("synced")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"durable")
    os.fsync(fd)  # a new small file: journaled (durable), published a moment later,
    info = published(mnt, "synced", timeout=10)  # also while open (docs/semantics.md)
    assert info.size == 7
    os.write(fd, b"!")
    os.fsync(fd)  # an in-place update of an object now: journaled too, committed soon
    deadline = time.monotonic() + 10
    while mnt.api(lambda b: b.head("synced")).size != 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.close(fd)
    sv = os.statvfs(mnt.path)
    assert sv.f_blocks > 0 and 0 < sv.f_bavail <= sv.f_blocks and sv.f_namemax == 255
    native = os.statvfs(mnt.cluster_dir)
    # nodes share one disk here: usable capacity is it times k/(k+m)
    assert abs(sv.f_blocks * sv.f_frsize - native.f_blocks * native.f_frsize * 4 / 6) < 1 << 30
    os.mknod(mnt.p("node"), 0o600 | stat.S_IFREG)
    assert stat.S_ISREG(os.stat(mnt.p("node")).st_mode)
    os.mkfifo(mnt.p("fifo"))  # special files and hard links: tests/filemodel
    assert stat.S_ISFIFO(os.stat(mnt.p("fifo")).st_mode)
    os.link(p, mnt.p("hard"))
    assert os.stat(p).st_nlink == 2


# --- directories -------------------------------------------------------------------------

def test_fsync_of_a_directory_makes_deferred_changes_durable(mnt):
    """mkdir and unlink are answered before their commit and journaled; fsync() of the
    directory must fdatasync that journal (seen with strace on the daemon)."""
    os.mkdir(mnt.p("d"))
    with open(mnt.p("d", "gone"), "wb") as f:
        f.write(b"x")
    trace = subprocess.Popen(["strace", "-f", "-qq", "-y", "-e", "trace=fdatasync,fsync",
                              "-p", str(mnt.pid())], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # attached to every thread
        os.mkdir(mnt.p("d", "sub"))
        os.unlink(mnt.p("d", "gone"))
        fd = os.open(mnt.p("d"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        time.sleep(0.5)
    finally:
        trace.terminate()
        _, err = trace.communicate(timeout=30)
    synced = [line for line in err.splitlines() if "fdatasync(" in line and "fuse-journal" in line]
    assert synced, err
    assert sorted(os.listdir(mnt.p("d"))) == ["sub"]


def test_mkdir_rmdir_and_markers(mnt):
    d = mnt.p("d")
    os.mkdir(d, 0o750)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750
    assert "d" in os.listdir(mnt.path)
    assert errno_of(os.mkdir, d) == errno.EEXIST
    write(os.path.join(d, "f"), b"1")
    assert errno_of(os.rmdir, d) == errno.ENOTEMPTY
    os.unlink(os.path.join(d, "f"))
    assert os.listdir(d) == []  # the empty directory persists
    os.rmdir(d)
    assert not os.path.exists(d)
    assert errno_of(os.rmdir, mnt.p("nope")) == errno.ENOENT
    write(mnt.p("plain"), b"")
    assert errno_of(os.rmdir, mnt.p("plain")) == errno.ENOTDIR
    assert errno_of(os.unlink, mnt.path) in (errno.EISDIR, errno.EPERM, errno.EBUSY)


def test_implicit_directories_from_keys(mnt):
    mnt.api(lambda b: b.put("x/y/z.txt", b"deep"))
    time.sleep(0.6)
    assert os.path.isdir(mnt.p("x")) and os.path.isdir(mnt.p("x", "y"))
    assert read(mnt.p("x", "y", "z.txt")) == b"deep"
    os.unlink(mnt.p("x", "y", "z.txt"))
    assert os.listdir(mnt.p("x", "y")) == []  # kept: a marker was made


def test_readdir_stable_while_deleting(mnt):
    d = mnt.p("many")
    os.mkdir(d)
    names = {f"f{i:04d}" for i in range(300)}
    for n in names:
        write(os.path.join(d, n), b"")
    seen = []
    with os.scandir(d) as it:
        for entry in it:
            seen.append(entry.name)
            os.unlink(entry.path)
            write(os.path.join(d, "new-" + entry.name), b"")  # entries added meanwhile
    assert names <= set(seen)
    assert len(seen) == len(set(seen))
    out = os.popen(f"ls -a {d} | head -2").read().split()
    assert out == [".", ".."]


def test_rename_files_and_directories(mnt):
    write(mnt.p("a"), b"A")
    write(mnt.p("b"), b"B")
    os.rename(mnt.p("a"), mnt.p("b"))  # replaces
    assert read(mnt.p("b")) == b"A" and not os.path.exists(mnt.p("a"))
    write(mnt.p("c"), b"C")
    assert errno_of(renameat2, mnt.p("c"), mnt.p("b"), RENAME_NOREPLACE) == errno.EEXIST
    assert errno_of(renameat2, mnt.p("c"), mnt.p("b"), RENAME_EXCHANGE) == errno.EINVAL
    renameat2(mnt.p("c"), mnt.p("c2"), RENAME_NOREPLACE)
    os.makedirs(mnt.p("src", "sub"))
    for i in range(50):
        write(mnt.p("src", "sub", f"f{i}"), str(i).encode())
    os.mkdir(mnt.p("empty"))
    os.rename(mnt.p("src"), mnt.p("empty"))  # over an empty directory
    assert sorted(os.listdir(mnt.p("empty", "sub"))) == sorted(f"f{i}" for i in range(50))
    assert read(mnt.p("empty", "sub", "f7")) == b"7"
    assert not os.path.exists(mnt.p("src"))
    os.mkdir(mnt.p("full"))
    write(mnt.p("full", "x"), b"")
    assert errno_of(os.rename, mnt.p("empty"), mnt.p("full")) == errno.ENOTEMPTY
    assert errno_of(os.rename, mnt.p("empty"), mnt.p("b")) == errno.ENOTDIR
    assert errno_of(os.rename, mnt.p("b"), mnt.p("full")) == errno.EISDIR
    assert errno_of(os.rename, mnt.p("empty"), mnt.p("empty", "sub", "in")) == errno.EINVAL
    # an open file follows its rename and commits at the new name
    fd = os.open(mnt.p("b"), os.O_WRONLY)
    os.rename(mnt.p("b"), mnt.p("moved"))
    os.write(fd, b"Z")
    os.close(fd)
    assert read(mnt.p("moved")) == b"Z"
    assert mnt.api(lambda bk: bk.list(prefix="b")).objects == []


# --- attributes ----------------------------------------------------------------------------

def test_symlinks_modes_owners_times(mnt):
    os.symlink("target/../x", mnt.p("ln"))
    assert os.readlink(mnt.p("ln")) == "target/../x"
    assert stat.S_ISLNK(os.lstat(mnt.p("ln")).st_mode)
    write(mnt.p("f"), b"data")
    os.chown(mnt.p("f"), 1234, 5678)  # (chown after chmod would clear set-uid, as POSIX says)
    os.chmod(mnt.p("f"), 0o4711)
    os.utime(mnt.p("f"), ns=(1_111_111_111_222_333_444, 1_500_000_000_123_456_789))
    st = os.stat(mnt.p("f"))
    assert stat.S_IMODE(st.st_mode) == 0o4711 and (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime_ns == 1_500_000_000_123_456_789 and st.st_atime_ns == 1_111_111_111_222_333_444
    assert st.st_nlink == 1 and st.st_blocks * 512 >= st.st_size
    time.sleep(0.5)  # attribute changes of a closed file are committed together, 0.3 s later
    meta = mnt.api(lambda b: b.head("f")).custom_metadata
    assert meta["mode"] == str(stat.S_IFREG | 0o4711) and meta["uid"] == "1234" and meta["gid"] == "5678"
    assert meta["mtime"] == "1500000000.123456789"
    os.utime(mnt.p("ln"), ns=(5, 1_000_000_007), follow_symlinks=False)
    assert os.lstat(mnt.p("ln")).st_mtime_ns == 1_000_000_007
    os.mkdir(mnt.p("d"))
    os.chmod(mnt.p("d"), 0o700)
    os.utime(mnt.p("d"), ns=(7, 9_000_000_001))
    st = os.stat(mnt.p("d"))
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_mtime_ns == 9_000_000_001


def test_defaults_for_objects_from_elsewhere(mnt):
    mnt.api(lambda b: b.put("plain.txt", b"hi"))
    mnt.api(lambda b: b.put("dir-marker/", b""))
    time.sleep(0.6)
    st = os.stat(mnt.p("plain.txt"))
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == os.getuid() and st.st_gid == os.getgid()
    assert stat.S_IMODE(os.stat(mnt.p("dir-marker")).st_mode) == 0o755


def test_xattrs(mnt):
    p = mnt.p("x")
    write(p, b"")
    os.setxattr(p, "user.color", b"blue")
    os.setxattr(p, "user.bin", bytes(range(256)))
    assert os.getxattr(p, "user.color") == b"blue"
    assert os.getxattr(p, "user.bin") == bytes(range(256))
    assert sorted(os.listxattr(p)) == ["user.bin", "user.color"]
    os.removexattr(p, "user.color")
    assert os.listxattr(p) == ["user.bin"]
    assert errno_of(os.getxattr, p, "user.color") == errno.ENODATA
    assert errno_of(os.removexattr, p, "user.color") == errno.ENODATA
    assert errno_of(os.setxattr, p, "trusted.x", b"1") in (errno.ENOTSUP, errno.EPERM)
    os.mkdir(mnt.p("d"))
    os.setxattr(mnt.p("d"), "user.k", b"v")
    assert os.getxattr(mnt.p("d"), "user.k") == b"v"


# --- names -----------------------------------------------------------------------------------

def test_name_limits(mnt):
    assert errno_of(write, mnt.p("n" * 256), b"") == errno.ENAMETOOLONG
    write(mnt.p("n" * 255), b"ok")
    deep = mnt.path
    for i in range(20):  # PATH_MAX: 4,096-byte keys (tests/filemodel goes to the limit)
        deep = os.path.join(deep, "d" * 200)
        os.mkdir(deep)
    assert errno_of(os.mkdir, os.path.join(deep, "e" * 100)) == errno.ENAMETOOLONG
    bad = os.path.join(mnt.path, "bad").encode() + b"\xff\xfe"
    assert errno_of(os.open, bad, os.O_CREAT | os.O_WRONLY) == errno.EINVAL


def test_odd_keys_from_other_interfaces(mnt):
    async def put_odd(b):
        for key in ("a//b", "./x", "../y", "f", "f/g", "ok/c"):
            await b.put(key, key.encode())
    mnt.api(put_odd)
    time.sleep(0.6)
    assert sorted(os.listdir(mnt.path)) == ["a", "f", "ok"]
    assert os.listdir(mnt.p("a")) == []  # `a//b` has an empty component: not shown
    assert errno_of(os.rmdir, mnt.p("a")) == errno.ENOTEMPTY  # ...but it is kept
    assert read(mnt.p("f")) == b"f"  # the file wins over the prefix f/
    assert read(mnt.p("ok", "c")) == b"ok/c"


# --- other writers, concurrency, durability ----------------------------------------------------

def test_cross_interface_and_invalidation(mnt):
    write(mnt.p("shared"), b"from mount")
    assert published(mnt, "shared").size == len(b"from mount")
    body = mnt.api(lambda b: _read_all(b, "shared"))
    assert body == b"from mount"
    assert read(mnt.p("shared")) == b"from mount"
    os.stat(mnt.p("shared"))  # attributes now cached by the kernel
    mnt.api(lambda b: b.put("shared", b"changed by the API, longer"))
    mnt.api(lambda b: b.put("fresh", b"new"))
    time.sleep(1.0)
    assert "fresh" in os.listdir(mnt.path)
    assert read(mnt.p("shared")) == b"changed by the API, longer"
    mnt.api(lambda b: b.put("shared", b"short"))  # the kernel must not keep the old pages
    time.sleep(1.0)
    assert read(mnt.p("shared")) == b"short"
    assert read(mnt.p("shared")) == b"short"  # (handed to the page cache at open)
    mnt.api(lambda b: b.delete("fresh"))
    time.sleep(1.0)
    assert not os.path.exists(mnt.p("fresh"))


async def _read_all(bucket, key):
    return await (await bucket.get(key)).read()


def test_concurrent_writers(mnt):
    blobs = {f"w{i}": os.urandom(200_000 + i) for i in range(8)}

    def writer(name: str) -> None:
        with open(mnt.p(name), "wb") as f:
            for off in range(0, len(blobs[name]), 7000):
                f.write(blobs[name][off:off + 7000])

    threads = [threading.Thread(target=writer, args=(n,)) for n in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, data in blobs.items():
        assert read(mnt.p(name)) == data


def test_kill9_after_close_then_remount(mount_factory):
    m = mount_factory()
    write(m.p("kept"), b"k" * 1_000_000)
    fd = os.open(m.p("synced"), os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"s" * 500_000)
    os.fsync(fd)
    os.kill(m.pid(), 9)
    m.stop()
    try:
        os.close(fd)  # its daemon is gone: ENOTCONN is expected
    except OSError:
        pass
    m.start()
    assert read(m.p("kept")) == b"k" * 1_000_000
    assert read(m.p("synced")) == b"s" * 500_000


def test_kill9_right_after_close_of_small_files(mount_factory):
    """Closed small files are published a moment later; the journal covers the gap."""
    m = mount_factory()
    write(m.p("old"), b"old content")  # a lone close: committed before close() returns
    assert m.api(lambda b: b.head("old")).size == len(b"old content")
    os.mkdir(m.p("d"))
    for i in range(40):
        write(m.p("d", f"f{i}"), f"content {i}".encode() * 100)
    write(m.p("d", ".tmp-x"), b"renamed after close")  # what rsync does
    os.chmod(m.p("d", ".tmp-x"), 0o600)
    os.rename(m.p("d", ".tmp-x"), m.p("d", "final"))
    write(m.p("d", "f0"), b"rewritten")  # the newer close wins
    write(m.p("gone"), b"unlinked before publication")
    os.unlink(m.p("gone"))
    write(m.p("old"), b"new content")  # in bulk: journaled, published a moment later
    os.kill(m.pid(), 9)
    m.stop()
    m.start()
    assert read(m.p("d", "f0")) == b"rewritten"
    for i in range(1, 40):
        assert read(m.p("d", f"f{i}")) == f"content {i}".encode() * 100
    assert read(m.p("d", "final")) == b"renamed after close"
    assert not os.path.exists(m.p("d", ".tmp-x"))
    assert not os.path.exists(m.p("gone"))
    assert read(m.p("old")) == b"new content"
    assert os.listdir(os.path.join(m.cluster_dir, "fuse-journal")) != []  # the new mount's own


def test_deferred_publication_loses_to_a_newer_write_elsewhere(mnt):
    write(mnt.p("before"), b"closes in bulk are published a moment later")
    write(mnt.p("raced"), b"closed here first")
    mnt.api(lambda b: b.put("raced", b"written elsewhere after that close"))
    time.sleep(0.6)
    body = mnt.api(lambda b: _read_all(b, "raced"))
    assert body == b"written elsewhere after that close"
    time.sleep(0.5)
    assert read(mnt.p("raced")) == b"written elsewhere after that close"


def test_a_file_renamed_over_a_held_file_that_replaces_an_object_is_published(mnt):
    """git add writes index.lock and renames it over index (held, to replace the old
    object); git commit renames the next index.lock over it before it is published:
    the last one must replace the old object (it was lost: the old index came back)."""
    write(mnt.p("index"), b"C0")  # a lone close: published at once
    time.sleep(0.3)
    for i in range(5):
        write(mnt.p(f"obj{i}"), b"o")  # closes in bulk: those that follow are held
    write(mnt.p("index.lock"), b"C1")
    os.rename(mnt.p("index.lock"), mnt.p("index"))
    write(mnt.p("index.lock"), b"C2")
    os.rename(mnt.p("index.lock"), mnt.p("index"))
    assert read(mnt.p("index")) == b"C2"
    time.sleep(1.0)  # published by now
    assert mnt.api(lambda b: _read_all(b, "index")) == b"C2"
    assert read(mnt.p("index")) == b"C2"


def test_kill9_mid_write_old_or_new(mount_factory):
    m = mount_factory()
    old = os.urandom(2_000_000)
    write(m.p("victim"), old)
    new = os.urandom(3_000_000)
    fd = os.open(m.p("victim"), os.O_WRONLY | os.O_TRUNC)
    os.write(fd, new[:1_500_000])
    os.kill(m.pid(), 9)
    m.stop()
    try:
        os.close(fd)
    except OSError:
        pass
    m.start()
    assert read(m.p("victim")) in (old, new)
    write(m.p("after"), b"works")
    assert read(m.p("after")) == b"works"


def test_unreadable_data_is_eio_and_the_mount_survives(mount_factory):
    m = mount_factory()
    data = os.urandom(1_000_000)  # several chunks, stored on the nodes
    write(m.p("big"), data)
    write(m.p("small"), b"inline")  # small objects live in their manifest
    m.stop()
    import glob
    import shutil
    nodes = sorted(glob.glob(os.path.join(m.cluster_dir, "nodes", "*")))
    for node in nodes[:3]:  # more than m=2 shards of every chunk gone
        for entry in os.listdir(node):
            full = os.path.join(node, entry)
            if os.path.isdir(full):
                shutil.rmtree(full)
    shutil.rmtree(os.path.join(m.cluster_dir, "cache"), ignore_errors=True)
    m.args = ("--cache-size", "0")
    m.start()
    assert errno_of(read, m.p("big")) == errno.EIO
    assert read(m.p("small")) == b"inline"
    write(m.p("after"), b"still serving")
    assert read(m.p("after")) == b"still serving"
    assert errno_of(read, m.p("big")) == errno.EIO
