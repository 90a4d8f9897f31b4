"""open(2): native directory vs r2fs mount (tests/posixsweep.py)."""

from __future__ import annotations

import os

from posixsweep import (KINDS, NOBODY, OTHER, Sweep, check, make, mkfile, opened,  # noqa: F401
                        parametrize, sides)

R, W, RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
C, X, T = os.O_CREAT, os.O_EXCL, os.O_TRUNC


def open_create(s: Sweep) -> None:
    old = os.umask(0o022)
    try:
        for mode in (0o755, 0o600, 0o7777, 0o0):
            n = f"f{mode:o}"
            snap = s.times("")
            s.do(f"O_CREAT {mode:o}", opened(C | W, mode), n)
            s.stat(f"stat {n}", n)
            s.changed(f"parent {n}", snap)
        snap = s.times("", "f755")
        s.do("O_CREAT on existing", opened(C | W, 0o600), "f755")
        s.stat("existing keeps mode", "f755")
        s.changed("O_CREAT on existing: no times", snap)
        s.do("O_CREAT|O_EXCL on existing", opened(C | X | W), "f755")
        for kind in KINDS:
            s.quiet(make(kind), "e-" + kind)
            s.do(f"O_CREAT|O_EXCL on {kind}", opened(C | X | W), "e-" + kind)
        s.do("O_CREAT on dir", opened(C | W), "e-dir")
        s.do("O_CREAT on dir rdonly", opened(C | R), "e-dir")
        s.do("O_CREAT through dangling symlink", opened(C | W), "e-lnk")
        s.stat("made through the symlink", "nowhere")
        s.do("O_CREAT|O_EXCL via symlink", opened(C | X | W), "e-lnk")
    finally:
        os.umask(old)


def open_trunc(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, data=b"x" * 5000), "f")
    snap = s.times("f", "")
    s.do("O_TRUNC", opened(W | T), "f")
    s.stat("truncated", "f")
    s.changed("times after O_TRUNC", snap)
    snap = s.times("f")
    s.do("O_TRUNC of empty file", opened(W | T), "f")
    s.changed("times after O_TRUNC of empty", snap)
    s.quiet(lambda p: mkfile(p, data=b"abc"), "g")
    snap = s.times("g")
    s.do("O_RDONLY|O_TRUNC", opened(R | T), "g")
    s.stat("rdonly trunc", "g")
    s.changed("times rdonly trunc", snap)
    s.quiet(lambda p: mkfile(p, data=b"abc"), "s")
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "s")
    s.quiet(lambda p: os.chmod(p, 0o6777), "s")
    s.do("O_TRUNC by other user", opened(W | T), "s", uid=OTHER)
    s.stat("set-id bits after O_TRUNC", "s")


def open_permissions(s: Sweep) -> None:
    for mode in (0o000, 0o400, 0o200, 0o600, 0o040, 0o020, 0o004, 0o002, 0o066, 0o606):
        n = f"f{mode:03o}"
        s.quiet(lambda p: mkfile(p, mode), n)
        s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), n)
        s.quiet(lambda p: os.chmod(p, mode), n)
        for who, kw in (("owner", dict(uid=NOBODY, gid=NOBODY)), ("group", dict(uid=OTHER, gid=NOBODY)),
                        ("other", dict(uid=OTHER, gid=OTHER)), ("root", {})):
            s.do_all([(f"{n} {who} {fname}", opened(flags), (n,))
                      for fname, flags in (("R", R), ("W", W), ("RW", RW), ("R|T", R | T))], **kw)
    s.quiet(lambda p: os.mkdir(p, 0o700), "private")
    s.quiet(mkfile, "private/f")
    s.quiet(lambda p: os.mkdir(p, 0o755), "ro")
    s.do("EACCES search", opened(R), "private/f", uid=NOBODY)
    s.do("EACCES create in unwritable", opened(C | W), "ro/new", uid=NOBODY)
    s.do("create as root in 0755 dir", opened(C | W), "ro/new")
    s.do("root exec-less dir search", opened(R), "private/f")


def open_dirs_and_links(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(os.mkdir, "d")
    s.quiet(lambda p: os.symlink("f", p), "lf")
    s.quiet(lambda p: os.symlink("d", p), "ld")
    s.quiet(lambda p: os.symlink("loop2", p), "loop1")
    s.quiet(lambda p: os.symlink("loop1", p), "loop2")
    D, NF = os.O_DIRECTORY, os.O_NOFOLLOW
    s.do("dir O_RDONLY", opened(R), "d")
    s.do("dir O_WRONLY EISDIR", opened(W), "d")
    s.do("dir O_RDWR EISDIR", opened(RW), "d")
    s.do("dir O_TRUNC EISDIR", opened(W | T), "d")
    s.do("O_DIRECTORY dir", opened(R | D), "d")
    s.do("O_DIRECTORY file ENOTDIR", opened(R | D), "f")
    s.do("O_DIRECTORY via link to dir", opened(R | D), "ld")
    s.do("O_DIRECTORY|O_NOFOLLOW link", opened(R | D | NF), "ld")
    s.do("O_NOFOLLOW symlink ELOOP", opened(R | NF), "lf")
    s.do("O_NOFOLLOW file", opened(R | NF), "f")
    s.do("O_NOFOLLOW in a middle component", opened(R | NF), "ld/../f")
    s.do("ELOOP", opened(R), "loop1")
    s.do("ELOOP create", opened(C | W), "loop1")
    s.do("ENOTDIR", opened(R), "f/x")
    s.do("ENOTDIR create", opened(C | W), "f/x")
    s.do("ENOENT", opened(R), "none")
    s.do("ENOENT in dir", opened(C | W), "none/x")
    s.do("ENAMETOOLONG", opened(C | W), "x" * 256)
    s.do("O_PATH|O_NOFOLLOW symlink", opened(os.O_PATH | NF), "lf")
    s.do("O_CREAT|O_DIRECTORY EINVAL", opened(C | D | W), "newdir")


def open_special_files(s: Sweep) -> None:
    s.quiet(os.mkfifo, "fifo")
    s.quiet(make("chr"), "null")
    NB = os.O_NONBLOCK
    s.do("fifo O_WRONLY|O_NONBLOCK no reader ENXIO", opened(W | NB), "fifo")
    s.do("fifo O_RDONLY|O_NONBLOCK", opened(R | NB), "fifo")
    s.do("fifo O_RDWR", opened(RW), "fifo")
    s.do("chr dev 1,3 write", lambda p: _write(p, b"gone"), "null")
    s.do("fifo pipe round trip", _fifo_roundtrip, "fifo")


def _write(p: str, data: bytes) -> int:
    fd = os.open(p, W)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def _fifo_roundtrip(p: str) -> bytes:
    r = os.open(p, R | os.O_NONBLOCK)
    w = os.open(p, W)
    try:
        os.write(w, b"through the pipe")
        return os.read(r, 100)
    finally:
        os.close(w)
        os.close(r)


def open_write_times(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, data=b"abc"), "f")
    snap = s.times("f", "")
    s.do("write", lambda p: _write(p, b"xyz"), "f")
    s.changed("times after write", snap)
    s.stat("stat after write", "f")
    snap = s.times("f")
    s.do("open and close only", opened(RW), "f")
    s.changed("times after open+close", snap)
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "f")
    s.quiet(lambda p: os.chmod(p, 0o6777), "f")
    s.do("write by other user", lambda p: _write(p, b"q"), "f", uid=OTHER)
    s.stat("set-id bits after write", "f", ("mode",))
    for mode in (0o6777, 0o6767, 0o4777, 0o2777):
        s.quiet(lambda p: os.chmod(p, mode), "f")
        s.do(f"write by owner {mode:o}", lambda p: _write(p, b"o"), "f", uid=NOBODY, gid=NOBODY)
        s.stat(f"set-id bits after owner's write {mode:o}", "f", ("mode",))
        s.quiet(lambda p: os.chmod(p, mode), "f")
        s.do(f"write by root {mode:o}", lambda p: _write(p, b"r"), "f")
        s.stat(f"set-id bits after root's write {mode:o}", "f", ("mode",))


CASES = [open_create, open_trunc, open_permissions, open_dirs_and_links, open_special_files,
         open_write_times]


@parametrize(CASES)
def test_open(sides, case, known):
    check(sides, case, known)
