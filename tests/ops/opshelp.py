"""Helpers for the operator-experience tests (issue 17): the CLI as a person meets it.

They reuse the FUSE tests' helpers (real cluster, real mount, always
unmounted in `finally`): importing this module puts tests/fuse on sys.path.
(No conftest.py here: other directories import theirs as `conftest`.)
"""

from __future__ import annotations

import os
import subprocess
import sys

FUSE_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuse")
if FUSE_TESTS not in sys.path:
    sys.path.insert(0, FUSE_TESTS)


def clean_env(home: str, **extra: str) -> dict[str, str]:
    """The environment of a fresh user: HOME of its own, no R2FS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("R2FS_")}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def r2fs(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
         **kw) -> subprocess.CompletedProcess:
    """`python -m r2fs ARGS` as text, never raising on a non-zero exit."""
    return subprocess.run([sys.executable, "-m", "r2fs", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


REPO = os.path.dirname(os.path.dirname(FUSE_TESTS))
#: what `make install` links
INSTALLED = ("/usr/local/bin/r2fs", "/sbin/mount.fuse.r2fs")


class installed_links:
    """`make install` for a test (or, with fresh=True, no install at all, as on a new
    machine), and the links found before put back after it (other checkouts on the
    same machine may have installed theirs)."""

    def __init__(self, fresh: bool = False) -> None:
        self.fresh = fresh

    def __enter__(self) -> None:
        self.before = {ln: os.readlink(ln) if os.path.islink(ln) else None for ln in INSTALLED}
        if self.fresh:
            for link in INSTALLED:
                if os.path.islink(link):
                    os.unlink(link)
            return
        out = subprocess.run(["make", "-s", "install"], cwd=REPO, capture_output=True, text=True,
                             timeout=300)
        if out.returncode != 0:
            self.__exit__()
            raise AssertionError(f"make install failed: {out.stdout}{out.stderr}")

    def __exit__(self, *exc: object) -> None:
        for link, target in self.before.items():
            if os.path.lexists(link):
                os.unlink(link)
            if target is not None:
                os.symlink(target, link)
