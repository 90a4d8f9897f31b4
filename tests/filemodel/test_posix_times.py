"""Which times every operation moves (mtime/ctime of the file and of its directories), one
row per operation: native directory vs r2fs mount (tests/posixsweep.py)."""

from __future__ import annotations

import os

from posixsweep import NOBODY, Sweep, check, mkfile, parametrize, sides, utimensat, with_fd  # noqa: F401


def _write_at(off: int, data: bytes):
    return with_fd(os.O_WRONLY, lambda fd: os.pwrite(fd, data, off))


#: (label, fn(path...) , paths relative to the case dir); before each: d/ with f (3 bytes),
#: link h -> f, symlink l -> f, subdir d/s, fifo d/p, and an empty directory e/.
OPS = [
    ("write", _write_at(1, b"Z"), ("d/f",)),
    ("write at end", _write_at(3, b"more"), ("d/f",)),
    ("zero-length write", _write_at(0, b""), ("d/f",)),
    ("append", lambda p: _append(p), ("d/f",)),
    ("truncate shrink", lambda p: os.truncate(p, 1), ("d/f",)),
    ("truncate same size", lambda p: os.truncate(p, 3), ("d/f",)),
    ("ftruncate grow", with_fd(os.O_RDWR, lambda fd: os.ftruncate(fd, 9)), ("d/f",)),
    ("chmod", lambda p: os.chmod(p, 0o600), ("d/f",)),
    ("chmod same mode", lambda p: os.chmod(p, 0o644), ("d/f",)),
    ("chown", lambda p: os.chown(p, NOBODY, NOBODY), ("d/f",)),
    ("chown same owner", lambda p: os.chown(p, 0, 0), ("d/f",)),
    ("utimes", lambda p: utimensat(p, (1, 0), (2, 0)), ("d/f",)),
    ("setxattr", lambda p: os.setxattr(p, "user.k", b"v"), ("d/f",)),
    ("link", os.link, ("d/f", "d/s/f2")),
    ("unlink a link", os.unlink, ("d/h",)),
    ("rename within dir", os.rename, ("d/f", "d/g")),
    ("rename to subdir", os.rename, ("d/f", "d/s/g")),
    ("rename over link", os.rename, ("d/l", "d/h")),
    ("rename dir", os.rename, ("d/s", "d/t")),
    ("rename dir to other parent", os.rename, ("d/s", "e/s")),
    ("symlink", lambda p: os.symlink("f", p), ("d/new",)),
    ("mkdir", os.mkdir, ("d/new",)),
    ("rmdir", os.rmdir, ("e",)),
    ("mkfifo", os.mkfifo, ("d/new",)),
    ("create", lambda p: mkfile(p), ("d/new",)),
    ("open O_TRUNC", lambda p: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)), ("d/f",)),
    ("open O_RDONLY", lambda p: os.close(os.open(p, os.O_RDONLY)), ("d/f",)),
    ("read", lambda p: open(p, "rb").read(), ("d/f",)),
    ("readdir", lambda p: sorted(os.listdir(p)), ("d",)),
    ("write to fifo", lambda p: _fifo_write(p), ("d/p",)),
    ("chmod dir", lambda p: os.chmod(p, 0o700), ("d/s",)),
    ("failed unlink (ENOENT)", os.unlink, ("d/none",)),
    ("failed mkdir (EEXIST)", os.mkdir, ("d/s",)),
    ("failed rename (ENOTEMPTY)", os.rename, ("e", "d")),
]
WATCH = ("", "d", "d/f", "d/s", "e")


def _append(p: str) -> None:
    with open(p, "ab") as f:
        f.write(b"!")


def _fifo_write(p: str) -> None:
    r = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(p, os.O_WRONLY)
    os.write(w, b"x")
    os.read(r, 1)
    os.close(w)
    os.close(r)


def _setup(s: Sweep, row: str) -> None:
    s.quiet(os.mkdir, row)
    for rel, fn in (("d", os.mkdir), ("d/f", lambda p: mkfile(p, data=b"abc")), ("d/s", os.mkdir),
                    ("d/p", os.mkfifo), ("e", os.mkdir)):
        s.quiet(fn, f"{row}/{rel}")
    s.quiet(os.link, f"{row}/d/f", f"{row}/d/h")
    s.quiet(lambda p: os.symlink("f", p), f"{row}/d/l")


def _case(label: str, fn, paths: tuple[str, ...]):
    def case(s: Sweep) -> None:
        _setup(s, "x")
        watch = [f"x/{w}".rstrip("/") for w in WATCH]
        snap = s.times(*watch)
        s.do(label, fn, *[f"x/{p}" for p in paths])
        alive = {w: snap[w] for w in watch if os.path.lexists(s.p(w))}
        s.changed(f"{label}: times", alive)
    case.__name__ = "times_" + "".join(c if c.isalnum() else "_" for c in label)
    return case


#: the other names of a hard-linked file: their ctime moves only if the mount knows them
KNOWN = {"unlink a link": "sometimes: the mount may not know the other names (docs/semantics.md)",
         "rename over link": "sometimes: the mount may not know the other names (docs/semantics.md)"}
CASES = [(_case(*row), {f"{row[0]}: times": KNOWN[row[0]]} if row[0] in KNOWN else {})
         for row in OPS]


@parametrize(CASES)
def test_times(sides, case, known):
    check(sides, case, known)
