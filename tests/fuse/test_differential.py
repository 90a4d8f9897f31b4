"""Differential test: the mount behaves like a native directory.

A Hypothesis state machine applies the same random operations to a
directory in the mount and to a native directory, and asserts the same
results (values or errnos) and, after every step, the same tree (types,
contents, permission bits, symlink targets). JuiceFS tests its mount this way.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

NAMES = ("a", "b", "c")
PATHS = [n for n in NAMES] + [f"{x}/{y}" for x in NAMES for y in NAMES]
path_st = st.sampled_from(PATHS)
_run = itertools.count()
_steps = itertools.count()


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except OSError as exc:
        return ("err", exc.errno)


def do_write(root: str, path: str, offset: int, data: bytes):
    fd = os.open(os.path.join(root, path), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def do_append(root: str, path: str, data: bytes):
    with open(os.path.join(root, path), "ab") as f:
        return f.write(data)


def do_read(root: str, path: str):
    with open(os.path.join(root, path), "rb") as f:
        return f.read()


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
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st_.st_mode), st_.st_size, f.read())
    return out


def machine(mount_root: str, native_root: str):
    class MountVsNative(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            n = next(_run)
            self.roots = [os.path.join(mount_root, f"run{n}"), os.path.join(native_root, f"run{n}")]
            for r in self.roots:
                os.mkdir(r)

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

        @rule(path=path_st, size=st.integers(0, 80_000))
        def truncate(self, path, size):
            self.both_path(os.truncate, path, size)

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
