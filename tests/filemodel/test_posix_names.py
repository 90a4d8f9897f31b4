"""NAME_MAX (255) and PATH_MAX (4096) through every call that takes a name: native directory
vs r2fs mount (tests/posixsweep.py)."""

from __future__ import annotations

import os

from posixsweep import NAME_MAX, PATH_MAX, Sweep, check, mkfile, opened, parametrize, sides  # noqa: F401

CALLS = {
    "open O_CREAT": opened(os.O_CREAT | os.O_WRONLY),
    "mkdir": os.mkdir,
    "mkfifo": os.mkfifo,
    "symlink": lambda p: os.symlink("t", p),
    "stat": os.lstat,
    "chmod": lambda p: os.chmod(p, 0o600),
    "chown": lambda p: os.lchown(p, 1, 1),
    "truncate": lambda p: os.truncate(p, 1),
    "unlink": os.unlink,
}


def name_max(s: Sweep) -> None:
    s.quiet(mkfile, "src")
    for n in (NAME_MAX, NAME_MAX + 1):
        for label, fn in CALLS.items():
            name = label[0] * n
            s.do(f"{label} name {n}", fn, name)
            if label in ("mkdir", "mkfifo", "symlink"):
                s.do(f"{label} name {n} rm", lambda p: os.rmdir(p) if label == "mkdir" else os.unlink(p),
                     name)
        s.do(f"link to name {n}", os.link, "src", "L" * n)
        s.do(f"rename to name {n}", os.rename, "src", "R" * n)
        s.do(f"rename back {n}", os.rename, "R" * n, "src")
    s.do("multibyte name 255 bytes", opened(os.O_CREAT | os.O_WRONLY), "é" * 127 + "x")
    s.do("multibyte name 256 bytes", opened(os.O_CREAT | os.O_WRONLY), "é" * 128)
    s.do("listdir", lambda p: sorted(len(os.fsencode(n)) for n in os.listdir(p)), "")


def _of_length(n: int) -> tuple[str, str]:
    """(directory, file) relative names whose joined length is n: 250-byte directories."""
    parts = []
    while n > NAME_MAX:
        k = min(250, n - 2)
        parts.append("d" * k)
        n -= k + 1
    return "/".join(parts), "f" * n


def path_max(s: Sweep) -> None:
    base = len(os.fsencode(s.root)) + 1
    deepest = ""
    for label, total in (("well under", PATH_MAX - 300), ("exactly PATH_MAX-1", PATH_MAX - 1),
                         ("PATH_MAX (with the NUL: one too long)", PATH_MAX)):
        d, f = _of_length(total - base)
        os.makedirs(s.p(d), exist_ok=True)
        last = os.path.join(d, f)
        s.value(f"length {label}", base + len(last))
        s.do(f"create at {label}", opened(os.O_CREAT | os.O_WRONLY), last)
        s.do(f"stat at {label}", os.lstat, last)
        s.do(f"rename from {label}", os.rename, last, os.path.join(d, "r"))
        s.do(f"rename to {label}", os.rename, os.path.join(d, "r"), last)
        s.do(f"unlink at {label}", os.unlink, last)
        s.do(f"mkdir at {label}", os.mkdir, last)
        s.do(f"rmdir at {label}", os.rmdir, last)
        deepest = max(deepest, d, key=len)
    s.do("relative path from a deep cwd", _deep_relative, deepest)


def _deep_relative(p: str) -> int:
    # a cwd deep down, then a relative name: the kernel's path limit is per call
    fd = os.open(".", os.O_RDONLY)
    try:
        os.chdir(p)
        mkfile("rel")
        return os.lstat("rel").st_size
    finally:
        os.fchdir(fd)
        os.close(fd)


CASES = [name_max, path_max]


@parametrize(CASES)
def test_names(sides, case, known):
    check(sides, case, known)
