"""symlink(2) and readlink(2): native directory vs r2fs mount (tests/posixsweep.py)."""

from __future__ import annotations

import os

from posixsweep import (KINDS, NOBODY, PATH_MAX, Sweep, check, make, mkfile,  # noqa: F401
                        parametrize, sides)


def sym(target: str):
    """fn(path): symlink(target, path) -- the target is text, not a path of the sweep."""
    return lambda p: os.symlink(target, p)


def symlink_basics(s: Sweep) -> None:
    s.quiet(mkfile, "f")
    snap = s.times("")
    s.do("symlink", sym("f"), "l")
    s.changed("parent times", snap)
    s.stat("lstat", "l", ("type", "mode", "uid", "gid", "nlink", "size"))
    s.stat("stat follows", "l")  # (describe of lstat; follow below)
    s.do("stat via link", os.stat, "l")
    s.do("readlink", os.readlink, "l")
    s.do("readlink of file EINVAL", os.readlink, "f")
    s.do("readlink ENOENT", os.readlink, "none")
    s.do("dangling", sym("no/such/thing"), "dangling")
    s.do("stat dangling ENOENT", os.stat, "dangling")
    s.do("readlink dangling", os.readlink, "dangling")
    s.do("absolute target", sym("/etc/hostname"), "abs")
    s.do("readlink absolute", os.readlink, "abs")
    s.do("empty target ENOENT", sym(""), "empty")
    s.do("symlink as nobody in root's dir", sym("f"), "l2", uid=NOBODY)


def symlink_lengths(s: Sweep) -> None:
    for n in (255, 256, 1023, 1025, PATH_MAX - 1, PATH_MAX, PATH_MAX + 1):
        s.do(f"target of {n} bytes", sym("t" * n), f"l{n}")
        s.do(f"readlink {n}", lambda p: len(os.readlink(p)), f"l{n}")
        s.stat(f"lstat size {n}", f"l{n}", ("type", "size"))
    deep = "/".join(["a" * 200] * 20)[: PATH_MAX - 1]
    s.do("deep target", sym(deep), "deep")
    s.do("readlink deep", lambda p: os.readlink(p) == deep, "deep")
    s.do("name 255", sym("f"), "n" * 255)
    s.do("name 256", sym("f"), "n" * 256)


def symlink_loops_and_exists(s: Sweep) -> None:
    s.do("self loop", sym("self"), "self")
    s.do("stat self loop ELOOP", os.stat, "self")
    s.do("open self loop ELOOP", lambda p: os.close(os.open(p, os.O_RDONLY)), "self")
    chain = [f"c{i}" for i in range(45)]
    s.quiet(mkfile, "end")
    for i, name in enumerate(chain):
        s.quiet(lambda p: os.symlink(chain[i + 1] if i + 1 < len(chain) else "end", p), name)
    s.do("stat chain of 45 ELOOP", os.stat, chain[0])
    s.do("stat chain of 40", os.stat, chain[5])
    s.do("stat chain of 41", os.stat, chain[4])
    for kind in KINDS:
        s.quiet(make(kind), "e-" + kind)
        s.do(f"EEXIST {kind}", sym("x"), "e-" + kind)
    s.quiet(mkfile, "f")
    s.do("ENOTDIR", sym("x"), "f/x")
    s.do("ENOENT", sym("x"), "none/x")
    s.do("ELOOP in path", sym("x"), "self/x")
    s.quiet(lambda p: os.mkdir(p, 0o755), "ro")
    s.do("EACCES", sym("x"), "ro/x", uid=NOBODY)
    s.quiet(os.mkdir, "d")
    s.quiet(lambda p: os.symlink("d", p), "ld")
    s.do("through symlinked dir", sym("../f"), "ld/up")
    s.do("resolve relative through it", os.stat, "d/up")


CASES = [symlink_basics, symlink_lengths, symlink_loops_and_exists]


@parametrize(CASES)
def test_symlink(sides, case, known):
    check(sides, case, known)
