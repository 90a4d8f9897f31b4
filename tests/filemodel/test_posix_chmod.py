"""chmod(2)/lchmod: native directory vs r2fs mount (tests/posixsweep.py)."""

from __future__ import annotations

import os

from posixsweep import KINDS, NOBODY, Sweep, check, make, mkfile, parametrize, sides  # noqa: F401


def chmod_every_kind(s: Sweep) -> None:
    for kind in KINDS:
        if kind in ("lnk", "sock"):
            continue
        s.quiet(make(kind), kind)
        snap = s.times(kind, "")
        s.do(f"chmod {kind}", lambda p: os.chmod(p, 0o751), kind)
        s.stat(f"stat {kind}", kind)
        s.changed(f"times {kind}", snap)


def chmod_follows_symlinks(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.symlink("f", p), "l")
    snap = s.times("f", "l")
    s.do("chmod via link", lambda p: os.chmod(p, 0o600), "l")
    s.stat("target", "f")
    s.stat("link", "l", ("type",))
    s.changed("times", snap)


def chmod_special_bits(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.mkdir(p), "d")
    for mode in (0o4755, 0o2755, 0o1755, 0o7777, 0o0):
        s.do(f"chmod f {mode:o}", lambda p: os.chmod(p, mode), "f")
        s.stat(f"stat f {mode:o}", "f", ("mode",))
        s.do(f"chmod d {mode:o}", lambda p: os.chmod(p, mode), "d")
        s.stat(f"stat d {mode:o}", "d", ("mode",))


def chmod_as_owner_and_not(s: Sweep) -> None:
    s.quiet(lambda p: mkfile(p, 0o644), "mine")
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "mine")
    s.quiet(lambda p: mkfile(p, 0o666), "roots")
    snap = s.times("mine", "roots")
    s.do("owner chmod", lambda p: os.chmod(p, 0o600), "mine", uid=NOBODY)
    s.do("other chmod", lambda p: os.chmod(p, 0o600), "roots", uid=NOBODY)  # EPERM
    s.stat("mine", "mine")
    s.stat("roots", "roots")
    s.changed("times", snap)  # a refused chmod changes no ctime


def chmod_setgid_outside_group(s: Sweep) -> None:
    # an owner not in the file's group cannot set S_ISGID: Linux clears it silently
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.chown(p, NOBODY, 0), "f")
    s.do("owner sets g+s", lambda p: os.chmod(p, 0o2755), "f", uid=NOBODY, gid=NOBODY)
    s.stat("mode", "f", ("mode",))
    s.quiet(lambda p: os.chown(p, NOBODY, NOBODY), "f")
    s.do("owner in group sets g+s", lambda p: os.chmod(p, 0o2755), "f", uid=NOBODY, gid=NOBODY)
    s.stat("mode in group", "f", ("mode",))
    s.do("owner sets u+s", lambda p: os.chmod(p, 0o4755), "f", uid=NOBODY, gid=NOBODY)
    s.stat("mode u+s", "f", ("mode",))


def chmod_errors(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    s.quiet(lambda p: os.mkdir(p, 0o700), "private")
    s.quiet(mkfile, "private/f")
    s.quiet(lambda p: os.symlink("loop2", p), "loop1")
    s.quiet(lambda p: os.symlink("loop1", p), "loop2")
    s.do("ENOTDIR", lambda p: os.chmod(p, 0o644), "f/x")
    s.do("ENOENT", lambda p: os.chmod(p, 0o644), "none")
    s.do("ENOENT in dir", lambda p: os.chmod(p, 0o644), "none/x")
    s.do("ELOOP", lambda p: os.chmod(p, 0o644), "loop1")
    s.do("ENAMETOOLONG", lambda p: os.chmod(p, 0o644), "x" * 256)
    s.do("EACCES search", lambda p: os.chmod(p, 0o644), "private/f", uid=NOBODY)


def chmod_ctime_of_open_file(s: Sweep) -> None:
    # fchmod of an open descriptor, then the stat through the name
    s.quiet(mkfile, "f")
    snap = s.times("f")
    s.do("fchmod", lambda p: _fchmod(p, 0o640), "f")
    s.stat("mode", "f", ("mode",))
    s.changed("times", snap)


def chmod_dir_then_entries_inside(s: Sweep) -> None:
    # a directory's chmod is committed a moment later (docs/semantics.md); an entry made
    # inside meanwhile must not bring the old mode back
    import time
    for i, delay in enumerate(range(0, 100, 8)):
        s.quiet(os.mkdir, f"d{i}")
        s.do(f"chmod d{i}", lambda p: os.chmod(p, 0o700), f"d{i}")
        time.sleep(delay / 1000)
        s.do(f"mkdir inside d{i}", os.mkdir, f"d{i}/sub")
        s.stat(f"mode d{i} after {delay} ms", f"d{i}", ("mode",))


def _fchmod(p: str, mode: int) -> None:
    fd = os.open(p, os.O_RDWR)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


CASES = [chmod_every_kind, chmod_follows_symlinks, chmod_special_bits, chmod_as_owner_and_not,
         chmod_setgid_outside_group, chmod_errors, chmod_ctime_of_open_file,
         chmod_dir_then_entries_inside]


@parametrize(CASES)
def test_chmod(sides, case, known):
    check(sides, case, known)
