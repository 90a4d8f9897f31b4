"""utimensat(2) (UTIME_NOW, UTIME_OMIT, permissions): native directory vs r2fs mount
(tests/posixsweep.py)."""

from __future__ import annotations

import os
import time

from posixsweep import (AT_SYMLINK_NOFOLLOW, KINDS, NOBODY, OTHER, UTIME_NOW, UTIME_OMIT,  # noqa: F401
                        Sweep, check, make, mkfile, parametrize, sides, utimensat, utimensat_null)

A = (1_000_000_000, 123_456_789)
M = (1_500_000_000, 987_654_321)


def _times(s: Sweep, label: str, rel: str) -> None:
    st = os.lstat(s.p(rel))
    s.value(label, (st.st_atime_ns, st.st_mtime_ns))


def _recent(s: Sweep, label: str, rel: str) -> None:
    """Which of atime/mtime are "now" (within 5 s) and whether mtime == ctime."""
    st = os.lstat(s.p(rel))
    now = time.time_ns()
    s.value(label, (abs(now - st.st_atime_ns) < 5e9, abs(now - st.st_mtime_ns) < 5e9))


def explicit_times_every_kind(s: Sweep) -> None:
    for kind in KINDS:
        s.quiet(make(kind), kind)
        snap = s.times(kind)
        s.do(f"set {kind}", lambda p: utimensat(p, A, M, AT_SYMLINK_NOFOLLOW), kind)
        _times(s, f"times {kind}", kind)
        s.changed(f"ctime {kind}", snap, "c")


def now_and_omit(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: utimensat(p, A, M), "f")
    s.do("UTIME_OMIT atime", lambda p: utimensat(p, UTIME_OMIT, (2_000_000_000, 5)), "f")
    _times(s, "after omit atime", "f")
    s.do("UTIME_OMIT mtime", lambda p: utimensat(p, (1_200_000_000, 7), UTIME_OMIT), "f")
    _times(s, "after omit mtime", "f")
    snap = s.times("f")
    s.do("both UTIME_OMIT", lambda p: utimensat(p, UTIME_OMIT, UTIME_OMIT), "f")
    s.changed("ctime after both omit", snap, "c")
    s.do("UTIME_NOW atime", lambda p: utimensat(p, UTIME_NOW, UTIME_OMIT), "f")
    _recent(s, "after now atime", "f")
    s.do("UTIME_NOW both", lambda p: utimensat(p, UTIME_NOW, UTIME_NOW), "f")
    _recent(s, "after now both", "f")
    s.quiet(lambda p: utimensat(p, A, M), "f")
    s.do("NULL times", utimensat_null, "f")
    _recent(s, "after NULL", "f")
    s.do("negative time", lambda p: utimensat(p, (-1, 0), (-100, 5)), "f")
    _times(s, "negative", "f")
    # (ext4 stores times up to the year 2446: 15032385535 s)
    s.do("far future", lambda p: utimensat(p, (1 << 33, 0), (15_000_000_000, 1)), "f")
    _times(s, "far future", "f")
    s.do("tv_nsec 1e9 EINVAL", lambda p: utimensat(p, (0, 1_000_000_000), UTIME_OMIT), "f")
    s.do("tv_nsec -1 EINVAL", lambda p: utimensat(p, UTIME_OMIT, (0, -1)), "f")


def symlink_follow_or_not(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.symlink("f", p), "l")
    s.quiet(lambda p: utimensat(p, A, A, AT_SYMLINK_NOFOLLOW), "l")
    s.do("follows", lambda p: utimensat(p, M, M), "l")
    _times(s, "target", "f")
    s.value("link's mtime untouched", os.lstat(s.p("l")).st_mtime_ns)  # (reading it: atime)
    s.do("nofollow", lambda p: utimensat(p, A, M, AT_SYMLINK_NOFOLLOW), "l")
    _times(s, "link", "l")
    _times(s, "target untouched", "f")


def permissions(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, 0o644), "owned")
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "owned")
    s.quiet(lambda p: mkfile(p, 0o666), "writable")
    s.quiet(lambda p: mkfile(p, 0o644), "readonly")
    for name in ("owned", "writable", "readonly"):
        s.quiet(lambda p: utimensat(p, A, M), name)
    kw = dict(uid=NOBODY, gid=NOBODY)
    for name in ("owned", "writable", "readonly"):
        s.do(f"{name}: explicit", lambda p: utimensat(p, M, A), name, **kw)
        s.do(f"{name}: UTIME_NOW both", lambda p: utimensat(p, UTIME_NOW, UTIME_NOW), name, **kw)
        s.do(f"{name}: NULL", utimensat_null, name, **kw)
        s.do(f"{name}: UTIME_NOW + OMIT", lambda p: utimensat(p, UTIME_NOW, UTIME_OMIT), name, **kw)
        s.do(f"{name}: OMIT both", lambda p: utimensat(p, UTIME_OMIT, UTIME_OMIT), name, **kw)
        s.do(f"{name}: explicit + NOW", lambda p: utimensat(p, A, UTIME_NOW), name, **kw)
        _recent(s, f"{name}: recent", name)
    s.quiet(lambda p: os.mkdir(p, 0o700), "private")
    s.quiet(mkfile, "private/f")
    s.do("EACCES search", lambda p: utimensat(p, A, A), "private/f", uid=NOBODY)
    s.do("ENOENT", lambda p: utimensat(p, A, A), "none")
    s.do("ENOTDIR", lambda p: utimensat(p, A, A), "owned/x")


def dir_times(s: Sweep) -> None:
    s.quiet(os.mkdir, "d")
    s.do("set dir", lambda p: utimensat(p, A, M), "d")
    _times(s, "dir times", "d")
    s.quiet(mkfile, "d/f")
    _recent(s, "dir times after create inside", "d")


CASES = [explicit_times_every_kind, now_and_omit, symlink_follow_or_not, permissions, dir_times]


@parametrize(CASES)
def test_utimensat(sides, case, known):
    check(sides, case, known)
