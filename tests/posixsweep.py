"""A pjdfstest-style conformance sweep: the same syscalls on a native directory and on a
real r2fs mount, with identical results asserted (errno, the stat fields that matter,
which times changed).

A *case* is a function `case(s: Sweep)` that calls `s.do(...)`, `s.stat(...)` and
`s.times(...)`/`s.changed(...)` with paths relative to a fresh directory. Every call
appends one observation (one "check") to `s.log`. `run_case` runs the case in a fresh
directory on each side and returns both logs; `assert_same` compares them. Calls can run
as another user (`uid=`/`gid=`): the syscall then runs in a forked child that drops to
that uid/gid (so the kernel's `default_permissions` checks and r2fs see a real
non-root caller).

Why not the public suite itself: it cannot be fetched here; this is the same style of
check, table-driven, so one comparison covers every area (tests/filemodel/test_posix_*.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import pickle
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

NOBODY = 65534  # uid and gid of an unprivileged user (nobody / nogroup)
OTHER = 65533  # a second unprivileged uid/gid
NAME_MAX = 255
PATH_MAX = 4096
#: Pause after a time snapshot: ext4's clock is coarse (a jiffy), so a change made
#: right after the snapshot must land in a later tick to be visible.
TICK = 0.012

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: str, atime: tuple[int, int] | int, mtime: tuple[int, int] | int,
              flags: int = 0) -> None:
    """utimensat(2) with UTIME_NOW / UTIME_OMIT (os.utime cannot express them).

    A time is (seconds, nanoseconds) or one of UTIME_NOW / UTIME_OMIT."""
    def ts(t):
        return _Timespec(0, t) if isinstance(t, int) else _Timespec(*t)
    times = (_Timespec * 2)(ts(atime), ts(mtime))
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)


def utimensat_null(path: str) -> None:
    """utimensat(path, NULL): both times to now (the "touch" permission rule)."""
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), None, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "sock"), (stat.S_ISCHR, "chr"),
                       (stat.S_ISBLK, "blk")):
        if test(mode):
            return name
    return "?"


def describe(st: os.stat_result, fields: tuple[str, ...]) -> dict[str, Any]:
    """The stat fields of `st` that are comparable between two file systems.

    A directory's size is the file system's own business (ext4 4096, tmpfs counts
    entries), so it is left out; so is its nlink unless `dir_nlink` is asked for (r2fs
    reports 1, docs/semantics.md -- test_posix_mkdir checks that on its own)."""
    out: dict[str, Any] = {}
    is_dir = stat.S_ISDIR(st.st_mode)
    for f in fields:
        if is_dir and (f == "size" or (f == "nlink" and "dir_nlink" not in fields)):
            continue
        if f == "dir_nlink":
            if is_dir:
                out["nlink"] = st.st_nlink
        elif f == "type":
            out[f] = _kind(st.st_mode)
        elif f == "mode":
            out[f] = oct(stat.S_IMODE(st.st_mode))
        elif f == "rdev":
            out[f] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        else:
            out[f] = getattr(st, "st_" + f)
    return out


def outcome(fn: Callable[[], Any]) -> Any:
    """What a call did: its (plain) result, or the errno's name."""
    try:
        r = fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else repr(e)
    if isinstance(r, os.stat_result):
        return describe(r, ("type", "mode", "uid", "gid", "nlink", "size"))
    return "ok" if r is None else r


def as_user(fn: Callable[[], Any], uid: int, gid: int | None = None,
            groups: tuple[int, ...] = ()) -> Any:
    """outcome(fn) run in a forked child with real and effective uid/gid dropped."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setgid(uid if gid is None else gid)
            os.setuid(uid)
            data = pickle.dumps(outcome(fn))
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            data = pickle.dumps(f"child failed: {e!r}")
        os.write(w, data)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


@dataclass
class Sweep:
    """One side (native or mount) of one case: a fresh directory and the log of checks."""

    root: str
    log: list[tuple[str, Any]] = field(default_factory=list)

    def p(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def do(self, label: str, fn: Callable[..., Any], *paths: str, uid: int | None = None,
           gid: int | None = None, groups: tuple[int, ...] = ()) -> Any:
        """Record the outcome of fn(*absolute paths) (as `uid`/`gid` if given)."""
        call = lambda: fn(*[self.p(x) for x in paths])  # noqa: E731
        got = outcome(call) if uid is None else as_user(call, uid, gid, groups)
        self.log.append((label, got))
        return got

    def do_all(self, calls: list[tuple[str, Callable[..., Any], tuple[str, ...]]],
               uid: int | None = None, gid: int | None = None,
               groups: tuple[int, ...] = ()) -> None:
        """Record several calls (label, fn, paths) made as one user: one forked child for
        all of them (forks are what a permission sweep spends its time on)."""
        def run() -> list:
            return [outcome(lambda: fn(*[self.p(x) for x in paths])) for _, fn, paths in calls]
        got = run() if uid is None else as_user(run, uid, gid, groups)
        if not isinstance(got, list):  # the child failed before running them
            got = [got] * len(calls)
        self.log.extend((label, g) for (label, _, _), g in zip(calls, got))

    def quiet(self, fn: Callable[..., Any], *paths: str) -> None:
        """Setup as root; must succeed on both sides and is not a check."""
        fn(*[self.p(x) for x in paths])

    def stat(self, label: str, rel: str, fields: tuple[str, ...] = ("type", "mode", "uid", "gid",
                                                                      "nlink", "size")) -> None:
        self.log.append((label, outcome(lambda: describe(os.lstat(self.p(rel)), fields))))

    def times(self, *rels: str) -> dict[str, tuple[int, int, int]]:
        """A snapshot of (atime, mtime, ctime) of `rels`, then a clock tick."""
        snap = {}
        for rel in rels:
            s = os.lstat(self.p(rel))
            snap[rel] = (s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns)
        time.sleep(TICK)
        return snap

    def changed(self, label: str, snap: dict[str, tuple[int, int, int]], which: str = "mc") -> None:
        """Record, per path of the snapshot, whether its mtime (m) / ctime (c) / atime (a)
        moved since."""
        got = {}
        for rel, before in snap.items():
            s = os.lstat(self.p(rel))
            now = (s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns)
            got[rel] = "".join(k for i, k in enumerate("amc") if k in which and now[i] != before[i])
        self.log.append((label, got))

    def value(self, label: str, v: Any) -> None:
        """Record a derived observation (computed on each side the same way)."""
        self.log.append((label, v))


Case = Callable[[Sweep], None]

# --- making things (each returns fn(path) for Sweep.do / Sweep.quiet) --------------------
KINDS = ("reg", "dir", "fifo", "chr", "blk", "sock", "lnk")


def mkfile(path: str, mode: int = 0o644, data: bytes = b"") -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _bind(path: str) -> None:
    import socket
    with socket.socket(socket.AF_UNIX) as sk:
        sk.bind(path)


def make(kind: str, mode: int = 0o644) -> Callable[[str], None]:
    """fn(path) creating a `kind` (see KINDS) with permission bits `mode`."""
    if kind == "reg":
        return lambda p: mkfile(p, mode)
    if kind == "dir":
        return lambda p: os.mkdir(p, mode)
    if kind == "fifo":
        return lambda p: os.mkfifo(p, mode)
    if kind == "chr":
        return lambda p: os.mknod(p, stat.S_IFCHR | mode, os.makedev(1, 3))
    if kind == "blk":
        return lambda p: os.mknod(p, stat.S_IFBLK | mode, os.makedev(7, 99))
    if kind == "sock":
        return _bind
    if kind == "lnk":
        return lambda p: os.symlink("nowhere", p)
    raise ValueError(kind)


def opened(flags: int, mode: int = 0o644) -> Callable[[str], None]:
    """fn(path): open(path, flags, mode) and close it (O_NONBLOCK added for FIFOs' sake
    by callers that want it)."""
    def fn(p: str) -> None:
        os.close(os.open(p, flags, mode))
    return fn


def with_fd(flags: int, then: Callable[[int], Any]) -> Callable[[str], Any]:
    """fn(path): open with `flags`, run then(fd), close; returns then's result."""
    def fn(p: str) -> Any:
        fd = os.open(p, flags)
        try:
            return then(fd)
        finally:
            os.close(fd)
    return fn


@dataclass
class Sides:
    native: str
    mount: str
    made: int = 0

    def fresh(self, name: str) -> tuple[str, str]:
        """A new empty directory (0755, root's) on each side for one case."""
        self.made += 1
        out = []
        for base in (self.native, self.mount):
            d = os.path.join(base, f"{self.made:03d}-{name}"[:40])  # sockets: sun_path is 108
            os.mkdir(d)
            os.chmod(d, 0o755)
            out.append(d)
        return out[0], out[1]


def run_case(sides: Sides, case: Case) -> tuple[list, list]:
    """Both logs of `case`: (native, mount)."""
    native, mount = sides.fresh(case.__name__)
    logs = []
    for root in (native, mount):
        s = Sweep(root)
        case(s)
        logs.append(s.log)
    return logs[0], logs[1]


def tally(name: str, native: list, mount: list) -> tuple[int, list[tuple[str, str]]]:
    """(checks that agree, (label, description) of those that differ); also appended to
    $R2FS_POSIX_TALLY (one JSON line per case) for the sweep's summary figures."""
    diffs = []
    agree = 0
    for (label, a), (label2, b) in zip(native, mount):
        assert label == label2, (label, label2)
        if a == b:
            agree += 1
        else:
            diffs.append((label, f"{label}: native {a!r} != r2fs {b!r}"))
    assert len(native) == len(mount)
    out = os.environ.get("R2FS_POSIX_TALLY")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"case": name, "checks": len(native), "agree": agree,
                                "diffs": [d for _, d in diffs]}) + "\n")
    return agree, diffs


#: A known difference whose reason starts so shows only now and then (a race in r2fs,
#: docs/semantics.md): the check may agree or differ.
SOMETIMES = "sometimes:"


def check(sides: Sides, case: Case, known: dict[str, str] | None = None) -> None:
    """Run `case` on both sides; every check must agree, except the labels in `known`
    (documented differences, docs/semantics.md), which must still differ (unless their
    reason starts with SOMETIMES)."""
    native, mount = run_case(sides, case)
    assert native, "a case that checks nothing"
    _, diffs = tally(case.__name__, native, mount)
    known = known or {}
    unexpected = [d for label, d in diffs if label not in known]
    assert not unexpected, "\n".join(unexpected)
    fixed = {k for k, why in known.items() if not why.startswith(SOMETIMES)} - {
        label for label, _ in diffs}
    assert not fixed, f"documented differences no longer differ: {sorted(fixed)}"


def parametrize(cases: list) -> Any:
    """pytest parametrisation of a table of cases: `case` or `(case, {label: reason})`."""
    import pytest
    rows = [c if isinstance(c, tuple) else (c, {}) for c in cases]
    return pytest.mark.parametrize("case,known", rows, ids=[c.__name__ for c, _ in rows])


def snapshot(root: str) -> dict[str, tuple]:
    """Every entry under `root` with what must survive a remount: type, mode, owner,
    size, nlink, inode number, mtime and ctime (directories: no size, nlink, and -- a
    known gap, docs/semantics.md -- no times: an entry change racing a deferred commit
    can still leave a directory's committed times a few ms behind what the mount showed)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            d = stat.S_ISDIR(st.st_mode)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid, None if d else st.st_size,
                                             None if d else st.st_nlink, st.st_ino,
                                             None if d else st.st_mtime_ns,
                                             None if d else st.st_ctime_ns)
    return out


@contextmanager
def sides_for_module(options: str = "allow_other") -> Iterator[Sides]:
    """A native ext4/tmpfs directory and a real r2fs mount (allow_other, so other uids
    reach it), both under a 0755 temp dir other users can traverse. Always unmounted."""
    from fusehelp import BUCKET, Mount, make_cluster  # tests/fuse (on sys.path via conftest)

    base = tempfile.mkdtemp(prefix="r2fs-posix-", dir="/tmp")
    os.chmod(base, 0o755)
    native, mnt = os.path.join(base, "native"), os.path.join(base, "mnt")
    os.mkdir(native)
    os.mkdir(mnt)
    m = None
    try:
        make_cluster(os.path.join(base, "cluster"))
        m = Mount(os.path.join(base, "cluster"), BUCKET, mnt, options)
        m.start()
        os.chmod(mnt, 0o755)
        yield Sides(native, mnt)
        before = snapshot(mnt)
        m.stop()
        m.start()
        after = snapshot(mnt)
        lost = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
        assert not lost, f"changed by a remount (path: (before, after)): {lost}"
    finally:
        if m is not None:
            m.stop()
        shutil.rmtree(base, ignore_errors=True)


def _sides_fixture():
    import pytest

    @pytest.fixture(scope="module")
    def sides() -> Iterator[Sides]:
        """One native directory and one mount for the whole module."""
        with sides_for_module() as s:
            yield s
    return sides


sides = _sides_fixture()
