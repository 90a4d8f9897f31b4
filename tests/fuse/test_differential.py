"""Differential test: the mount behaves like a native directory.

A Hypothesis state machine applies the same random operations to a
directory in the mount and to a native directory, and asserts the same
results (values or errnos) and, after every step, the same tree (types,
contents, permission bits, symlink targets, special files, which names share
an inode and st_nlink), that st_ino stays stable (each native inode maps to one
mount inode for as long as it exists) and that a directory's mtime and ctime
move when the native one's do. It includes hard links, FIFOs, character
devices, 255-byte names and truncates to a terabyte (files are compared by
size and samples, not read whole). JuiceFS tests its mount this way.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import time

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

LONG = "L" * 255  # NAME_MAX
NAMES = ("a", "b", LONG)
PATHS = [n for n in NAMES] + [f"{x}/{y}" for x in NAMES for y in NAMES]
path_st = st.sampled_from(PATHS)
_run = itertools.count()
_steps = itertools.count()


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except OSError as exc:
        return ("err", exc.errno)


def _special(p: str) -> bool:
    """FIFOs and devices are not opened (a FIFO would block both sides)."""
    try:
        m = os.lstat(p).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(m) or stat.S_ISCHR(m)


def do_write(root: str, path: str, offset: int, data: bytes):
    if _special(os.path.join(root, path)):
        return "special"
    fd = os.open(os.path.join(root, path), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def do_append(root: str, path: str, data: bytes):
    if _special(os.path.join(root, path)):
        return "special"
    with open(os.path.join(root, path), "ab") as f:
        return f.write(data)


def do_read(root: str, path: str):
    """Size, head and tail: a truncate may have made a terabyte (read whole, that was a
    MemoryError in this test)."""
    if _special(os.path.join(root, path)):
        return "special"
    with open(os.path.join(root, path), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(200_000)
        f.seek(max(0, size - 5000))
        return size, head, f.read()


def tree(root: str) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            elif stat.S_ISFIFO(st_.st_mode) or stat.S_ISCHR(st_.st_mode):
                out[rel] = ("special", st_.st_mode, st_.st_rdev, st_.st_nlink)
            else:
                with open(p, "rb") as f:  # head and tail (a truncate may make a terabyte)
                    head = f.read(200_000)
                    f.seek(max(0, st_.st_size - 5000))
                    out[rel] = ("file", stat.S_IMODE(st_.st_mode), st_.st_size, st_.st_nlink,
                                head, f.read())
    return out


def inodes(root: str) -> dict[str, int]:
    """rel path -> st_ino of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = os.lstat(p).st_ino
    return out


def machine(mount_root: str, native_root: str):
    class MountVsNative(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            n = next(_run)
            self.roots = [os.path.join(mount_root, f"run{n}"), os.path.join(native_root, f"run{n}")]
            for r in self.roots:
                os.mkdir(r)
            self.ino_map: dict[int, int] = {}  # native st_ino -> mount st_ino

        def both(self, fn, *args):
            next(_steps)
            results = [outcome(fn, root, *args) for root in self.roots]
            assert results[0] == results[1], f"{fn.__name__}{args}: mount {results[0]} native {results[1]}"

        def both_path(self, fn, path, *args):
            self.both(lambda root, *a: fn(os.path.join(root, path), *a), *args)

        @rule(path=path_st, offset=st.integers(0, 70_000), data=st.binary(min_size=1, max_size=3000))
        def write(self, path, offset, data):
            self.both(do_write, path, offset, data)

        @rule(path=path_st, data=st.binary(min_size=1, max_size=500))
        def append(self, path, data):
            self.both(do_append, path, data)

        @rule(path=path_st, size=st.one_of(st.integers(0, 80_000), st.just(10**12)))
        def truncate(self, path, size):
            self.both_path(os.truncate, path, size)

        @rule(src=path_st, dst=path_st)
        def link(self, src, dst):
            self.both(lambda root: os.link(os.path.join(root, src), os.path.join(root, dst)))

        @rule(path=path_st)
        def mkfifo(self, path):
            self.both_path(os.mkfifo, path)

        @rule(path=path_st)
        def mknod_char(self, path):
            self.both_path(lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)), path)

        @rule(path=path_st, data=st.binary(min_size=1, max_size=100))
        def create_in_dir_moves_its_times(self, path, data):
            """A new entry changes its directory's mtime and ctime (when native's do)."""
            def create(root):
                d = os.path.dirname(os.path.join(root, path))
                before = os.stat(d)
                time.sleep(0.002)
                do_write(root, path, 0, data)
                after = os.stat(d)
                return after.st_mtime_ns > before.st_mtime_ns, after.st_ctime_ns > before.st_ctime_ns
            self.both(create)

        @rule(path=path_st)
        def read(self, path):
            self.both(do_read, path)

        @rule(path=path_st)
        def unlink(self, path):
            self.both_path(os.unlink, path)

        @rule(path=path_st)
        def mkdir(self, path):
            self.both_path(os.mkdir, path)

        @rule(path=path_st)
        def rmdir(self, path):
            self.both_path(os.rmdir, path)

        @rule(src=path_st, dst=path_st)
        def rename(self, src, dst):
            self.both(lambda root: os.rename(os.path.join(root, src), os.path.join(root, dst)))

        @rule(path=path_st, mode=st.sampled_from([0o644, 0o600, 0o755, 0o700, 0o640]))
        def chmod(self, path, mode):
            self.both_path(os.chmod, path, mode)

        @rule(path=path_st, dest=st.sampled_from(["a", "b/c", "../a", "nowhere"]))
        def symlink(self, path, dest):
            self.both_path(lambda p: os.symlink(dest, p), path)

        @rule(path=path_st)
        def readlink(self, path):
            self.both_path(os.readlink, path)

        @rule(path=path_st)
        def listdir(self, path):
            self.both_path(lambda p: sorted(os.listdir(p)), path)

        @rule(path=path_st, mtime=st.integers(0, 2_000_000_000 * 10**9))
        def utime(self, path, mtime):
            self.both_path(os.utime, path, None)  # errno only; times differ by design
            self.both_path(lambda p: (os.utime(p, ns=(mtime, mtime)), os.stat(p).st_mtime_ns)[1], path)

        @invariant()
        def same_tree(self):
            assert tree(self.roots[0]) == tree(self.roots[1])

        @invariant()
        def same_links_and_stable_inodes(self):
            mount, native = inodes(self.roots[0]), inodes(self.roots[1])
            assert mount.keys() == native.keys()
            live = set(native.values())
            self.ino_map = {n: m for n, m in self.ino_map.items() if n in live}
            for rel, n in native.items():  # the same names share an inode, for good
                assert self.ino_map.setdefault(n, mount[rel]) == mount[rel], rel
            assert len(set(self.ino_map.values())) == len(self.ino_map)

    return MountVsNative


def test_mount_matches_native_directory(mnt, tmp_path):
    native = tmp_path / "native"
    native.mkdir()
    cls = machine(mnt.path, str(native))
    cls.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                     suppress_health_check=list(HealthCheck))
    before = next(_steps)
    try:
        cls.TestCase().runTest()
        assert next(_steps) - before > 200  # it really ran many operations
    finally:
        shutil.rmtree(native, ignore_errors=True)
