"""chown(2)/lchown/fchown: native directory vs r2fs mount (tests/posixsweep.py)."""

from __future__ import annotations

import os

from posixsweep import (KINDS, NOBODY, OTHER, Sweep, check, make, mkfile, parametrize,  # noqa: F401
                        sides, with_fd)


def chown_every_kind_as_root(s: Sweep) -> None:
    for kind in KINDS:
        s.quiet(make(kind), kind)
        snap = s.times(kind, "")
        s.do(f"lchown {kind}", lambda p: os.lchown(p, NOBODY, OTHER), kind)
        s.stat(f"stat {kind}", kind)
        s.changed(f"times {kind}", snap)


def chown_follows_symlinks(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.symlink("f", p), "l")
    snap = s.times("f", "l")
    s.do("chown via link", lambda p: os.chown(p, NOBODY, NOBODY), "l")
    s.stat("target", "f")
    s.stat("link", "l", ("type", "uid", "gid"))
    s.changed("times", snap)
    s.do("lchown link", lambda p: os.lchown(p, OTHER, OTHER), "l")
    s.stat("target after lchown", "f", ("uid", "gid"))
    s.stat("link after lchown", "l", ("uid", "gid"))


def chown_minus_one(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "f")
    snap = s.times("f")
    s.do("chown -1 -1", lambda p: os.chown(p, -1, -1), "f")
    s.changed("times -1 -1", snap)
    s.do("chown uid only", lambda p: os.chown(p, OTHER, -1), "f")
    s.do("chown gid only", lambda p: os.chown(p, -1, OTHER), "f")
    s.stat("stat", "f")


def chown_as_non_root(s: Sweep) -> None:
    s.quiet(lambda p: os.chmod(p, 0o777), "")
    s.quiet(mkfile, "mine")
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "mine")
    s.quiet(mkfile, "roots")
    snap = s.times("mine", "roots")
    kw = dict(uid=NOBODY, gid=NOBODY)
    s.do("owner gives away", lambda p: os.chown(p, OTHER, -1), "mine", **kw)  # EPERM
    s.do("owner to foreign group", lambda p: os.chown(p, -1, OTHER), "mine", **kw)  # EPERM
    s.do("owner to own uid", lambda p: os.chown(p, NOBODY, -1), "mine", **kw)
    s.do("owner to member group", lambda p: os.chown(p, -1, OTHER), "mine", uid=NOBODY,
         gid=NOBODY, groups=(OTHER,))
    s.do("non-owner chown", lambda p: os.chown(p, NOBODY, NOBODY), "roots", **kw)  # EPERM
    s.do("non-owner chown -1 -1", lambda p: os.chown(p, -1, -1), "roots", **kw)
    s.stat("mine", "mine")
    s.stat("roots", "roots")
    s.changed("times", snap)


def chown_clears_setid(s: Sweep) -> None:
    for mode in (0o6755, 0o6744, 0o4755, 0o2755, 0o2745):
        name = f"f{mode:o}"
        s.quiet(mkfile, name)
        s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), name)
        s.quiet(lambda p: os.chmod(p, mode), name)
        s.do(f"root chown {mode:o}", lambda p: os.chown(p, OTHER, OTHER), name)
        s.stat(f"mode after root chown {mode:o}", name, ("mode", "uid", "gid"))
        s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), name)
        s.quiet(lambda p: os.chmod(p, mode), name)
        s.do(f"owner chgrp {mode:o}", lambda p: os.chown(p, -1, OTHER), name, uid=NOBODY,
             gid=NOBODY, groups=(OTHER,))
        s.stat(f"mode after owner chgrp {mode:o}", name, ("mode", "uid", "gid"))
        s.quiet(lambda p: os.chmod(p, mode), name)
        s.do(f"root chown -1 -1 {mode:o}", lambda p: os.chown(p, -1, -1), name)
        s.stat(f"mode after chown -1 -1 {mode:o}", name, ("mode",))
    s.quiet(lambda p: os.mkdir(p), "d")
    s.quiet(lambda p: os.chmod(p, 0o6755), "d")
    s.do("root chown dir", lambda p: os.chown(p, NOBODY, NOBODY), "d")
    s.stat("dir keeps set-id", "d", ("mode",))


def fchown_open_file(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, data=b"abc"), "f")
    snap = s.times("f")
    s.do("fchown", with_fd(os.O_RDONLY, lambda fd: os.fchown(fd, NOBODY, OTHER)), "f")
    s.stat("stat", "f")
    s.changed("times", snap)


def chown_errors(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.mkdir(p, 0o700), "private")
    s.quiet(mkfile, "private/f")
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "private/f")
    s.quiet(lambda p: os.symlink("loop2", p), "loop1")
    s.quiet(lambda p: os.symlink("loop1", p), "loop2")
    s.do("ENOTDIR", lambda p: os.chown(p, 1, 1), "f/x")
    s.do("ENOENT", lambda p: os.chown(p, 1, 1), "none")
    s.do("ELOOP", lambda p: os.chown(p, 1, 1), "loop1")
    s.do("lchown of loop ok", lambda p: os.lchown(p, 1, 1), "loop1")
    s.do("ENAMETOOLONG", lambda p: os.chown(p, 1, 1), "x" * 256)
    s.do("EACCES search", lambda p: os.chown(p, NOBODY, NOBODY), "private/f", uid=NOBODY)


CASES = [chown_every_kind_as_root, chown_follows_symlinks, chown_minus_one, chown_as_non_root,
         chown_clears_setid, fchown_open_file, chown_errors]


@parametrize(CASES)
def test_chown(sides, case, known):
    check(sides, case, known)
