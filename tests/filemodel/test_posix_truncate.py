"""truncate(2), ftruncate(2), posix_fallocate(3): native directory vs r2fs mount
(tests/posixsweep.py)."""

from __future__ import annotations

import os

from posixsweep import (NOBODY, OTHER, Sweep, check, make, mkfile, parametrize,  # noqa: F401
                        sides, with_fd)

TIB = 1 << 40


def truncate_sizes_and_times(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, data=b"0123456789"), "f")
    for size in (20, 5, 5, 0, 1 << 20, 3):
        snap = s.times("f", "")
        s.do(f"truncate {size}", lambda p: os.truncate(p, size), "f")
        s.stat(f"stat {size}", "f")
        s.changed(f"times {size}", snap)
    s.do("content", lambda p: open(p, "rb").read(), "f")
    s.do("truncate 5 TiB", lambda p: os.truncate(p, 5 * TIB), "f")
    s.stat("stat 5 TiB", "f")
    s.do("read past data in hole", lambda p: _pread(p, 4, 5 * TIB - 4), "f")
    s.do("truncate back", lambda p: os.truncate(p, 2), "f")
    s.do("content after", lambda p: open(p, "rb").read(), "f")


def _pread(p: str, n: int, off: int) -> bytes:
    fd = os.open(p, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def ftruncate_cases(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, data=b"abcdef"), "f")
    snap = s.times("f")
    s.do("ftruncate grow", with_fd(os.O_RDWR, lambda fd: os.ftruncate(fd, 100)), "f")
    s.stat("grown", "f")
    s.changed("times ftruncate", snap)
    s.do("ftruncate O_RDONLY fd", with_fd(os.O_RDONLY, lambda fd: os.ftruncate(fd, 1)), "f")
    s.do("ftruncate O_WRONLY fd", with_fd(os.O_WRONLY, lambda fd: os.ftruncate(fd, 2)), "f")
    s.do("ftruncate negative", with_fd(os.O_RDWR, lambda fd: os.ftruncate(fd, -1)), "f")
    s.do("fstat size after writes past", with_fd(os.O_RDWR, _write_then_truncate), "f")
    s.stat("final", "f")
    s.quiet(lambda p: mkfile(p, 0o644), "ro")
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "ro")
    s.do("ftruncate of fd opened before chmod 0", lambda p: _open_chmod_truncate(p), "ro")
    s.do("same, by the owner", lambda p: _open_chmod_truncate(p), "ro", uid=NOBODY, gid=NOBODY)
    s.do("truncate by name after chmod 0, owner", lambda p: os.truncate(p, 1), "ro", uid=NOBODY)


def _write_then_truncate(fd: int) -> int:
    os.pwrite(fd, b"xyz", 200)
    os.ftruncate(fd, 150)
    os.pwrite(fd, b"end", 160)
    return os.fstat(fd).st_size


def _open_chmod_truncate(p: str) -> int:
    fd = os.open(p, os.O_RDWR)
    try:
        os.chmod(p, 0)
        os.ftruncate(fd, 7)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def truncate_errors(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(os.mkdir, "d")
    s.quiet(os.mkfifo, "fifo")
    s.quiet(lambda p: os.symlink("f", p), "l")
    s.quiet(lambda p: os.symlink("loop2", p), "loop1")
    s.quiet(lambda p: os.symlink("loop1", p), "loop2")
    s.quiet(lambda p: mkfile(p, 0o644), "ro")
    s.do("EISDIR", lambda p: os.truncate(p, 0), "d")
    s.do("EINVAL negative", lambda p: os.truncate(p, -1), "f")
    s.do("EFBIG beyond the maximum", lambda p: os.truncate(p, 1 << 62), "f")
    s.do("EFBIG/EINVAL 2^63-1", lambda p: os.truncate(p, (1 << 63) - 1), "f")
    s.do("through symlink", lambda p: os.truncate(p, 3), "l")
    s.stat("target size", "f")
    s.do("ENOENT", lambda p: os.truncate(p, 0), "none")
    s.do("ENOTDIR", lambda p: os.truncate(p, 0), "f/x")
    s.do("ELOOP", lambda p: os.truncate(p, 0), "loop1")
    s.do("ENAMETOOLONG", lambda p: os.truncate(p, 0), "x" * 256)
    s.do("EACCES no write permission", lambda p: os.truncate(p, 0), "ro", uid=NOBODY)
    s.do("fifo", lambda p: os.truncate(p, 0), "fifo")


def truncate_clears_setid(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, data=b"data"), "f")
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "f")
    s.quiet(lambda p: os.chmod(p, 0o6777), "f")
    s.do("truncate by other user", lambda p: os.truncate(p, 1), "f", uid=OTHER, gid=OTHER)
    s.stat("mode after", "f", ("mode", "size"))
    s.quiet(lambda p: os.chmod(p, 0o6777), "f")
    s.do("truncate by root", lambda p: os.truncate(p, 2), "f")
    s.stat("mode after root", "f", ("mode", "size"))


def fallocate_cases(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, data=b"abc"), "f")
    snap = s.times("f")
    s.do("posix_fallocate extends", with_fd(os.O_RDWR, lambda fd: os.posix_fallocate(fd, 0, 10000)), "f")
    s.stat("size", "f")
    s.changed("times", snap)
    s.do("content kept", lambda p: open(p, "rb").read(3), "f")
    s.do("inside the file", with_fd(os.O_RDWR, lambda fd: os.posix_fallocate(fd, 10, 20)), "f")
    s.stat("size unchanged", "f")
    s.do("O_RDONLY EBADF", with_fd(os.O_RDONLY, lambda fd: os.posix_fallocate(fd, 0, 20000)), "f")
    s.do("len 0 EINVAL", with_fd(os.O_RDWR, lambda fd: os.posix_fallocate(fd, 0, 0)), "f")
    s.do("negative offset EINVAL", with_fd(os.O_RDWR, lambda fd: os.posix_fallocate(fd, -1, 10)), "f")
    s.quiet(os.mkfifo, "fifo")
    s.do("fifo ESPIPE", with_fd(os.O_RDWR, lambda fd: os.posix_fallocate(fd, 0, 10)), "fifo")
    s.do("fallocate KEEP_SIZE", with_fd(os.O_RDWR, _keep_size), "f")
    s.stat("size after KEEP_SIZE", "f")


def _keep_size(fd: int) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(1 << 20)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


CASES = [truncate_sizes_and_times, ftruncate_cases, truncate_errors, truncate_clears_setid,
         (fallocate_cases, {'fallocate KEEP_SIZE': 'r2fs: fallocate modes other than 0 -> ENOTSUP'})]


@parametrize(CASES)
def test_truncate(sides, case, known):
    check(sides, case, known)
