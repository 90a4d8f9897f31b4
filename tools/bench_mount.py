"""Mount: r2fs vs gocryptfs vs a native directory, big files, small files and trees, in one run.

Every round runs the same workloads on a native directory of the disk being
measured (--dir), a gocryptfs mount (a Go FUSE filesystem encrypting every
file; Debian's package, `make bench` installs it) and a real `r2fs mount` of
a fresh cluster, rotating the order each round; each figure is the median
of --runs rounds:

* one big file (default 1 GiB) written with fsync, then read cold;
* N small files (default 2,000 x 16 KiB): written, read, stat'ed (caches
  dropped before each), deleted;
* `rsync -a` of a source tree (default: this interpreter's standard
  library without site-packages and __pycache__) in, then a no-op `rsync -a`;
* untar of the same tree, then `tar c` of the result;
* `cp -a` of the untarred tree, then `rm -rf` of both trees.

Printed: the three figures, the speed ratios r2fs / gocryptfs and
r2fs / native (> 1: r2fs is faster), the r2fs daemon's CPU per FUSE request
for each workload (its own request count), and its peak RSS over the run.
Targets: every small-file and tree row >= 1.0 x gocryptfs, cold big read
>= 1.0, big write >= 0.8; peak RSS <= 300 MiB.

With --floor the small-file and tree workloads also run on tools/nullfs.py,
an in-memory filesystem on r2fs's own FUSE loop that answers everything from
memory in the request thread: its CPU per request is the loop's own cost
(target <= 15 us).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Iterator

from benchlib import (KiB, MiB, DataStream, describe_machine, drop_caches, filesystem_of,
                      mb_per_s, native_read, native_write, parse_size, progress, temp_dir)

BUCKET = "bench"
#: metric -> (unit, higher is better)
METRICS = {
    "big write (fsync)": ("MB/s", True), "big read (cold)": ("MB/s", True),
    "small write": ("files/s", True), "small read": ("files/s", True),
    "small stat": ("files/s", True), "small delete": ("files/s", True),
    "rsync -a in": ("s", False), "rsync -a again (no-op)": ("s", False),
    "untar": ("s", False), "tar c": ("s", False), "cp -a": ("s", False), "rm -rf": ("s", False),
}
SYSTEMS = ("native", "gocryptfs", "r2fs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="big file size (default 1GiB)")
    parser.add_argument("--files", type=int, default=2000, help="small files (default 2000)")
    parser.add_argument("--file-size", type=parse_size, default=16 * KiB,
                        help="small file size (default 16KiB)")
    parser.add_argument("--tree", default=os.path.dirname(os.__file__),
                        help="source tree for rsync and untar (default: the standard library)")
    parser.add_argument("--only", choices=("big", "small", "tree"), action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("-o", dest="options", default=None, help="mount options (r2fs mount -o)")
    parser.add_argument("--no-peer", action="store_true", help="skip gocryptfs")
    parser.add_argument("--floor", action="store_true",
                        help="also run the small-file and tree parts on nullfs.py (the FUSE "
                             "loop's own cost per request)")


def r2fs(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "r2fs.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"r2fs {' '.join(args)} failed: {proc.stderr.strip()}")


class Mounted:
    """A fresh cluster + bucket mounted at a temporary directory (always unmounted)."""

    def __init__(self, base: str, options: str | None, *, meta_url: str | None = None) -> None:
        self.cluster = os.path.join(base, "cluster")
        self.path = os.path.join(base, "mnt")
        self.options = options
        self.meta_url = meta_url  # metadata in this PostgreSQL database (tools/bench_meta.py)

    def __enter__(self) -> "Mounted":
        import trio
        from r2fs.engine.store import Cluster

        async def make() -> None:
            c = Cluster.init(self.cluster, meta_url=self.meta_url)
            try:
                await c.create_bucket(BUCKET)
            finally:
                c.close()
        trio.run(make)
        os.makedirs(self.path)
        args = ["--cluster", self.cluster, "mount", BUCKET, self.path]
        r2fs(*(args + (["-o", self.options] if self.options else [])))
        return self

    def __exit__(self, *exc: object) -> None:
        if subprocess.run([sys.executable, "-m", "r2fs.cli", "umount", self.path],
                          capture_output=True).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", self.path], capture_output=True)

    def pid(self) -> int | None:
        from r2fs.cli.fuse_cmds import daemon_pid
        return daemon_pid(self.path)

    def requests(self) -> int | None:
        """FUSE requests the daemon has read so far (its stats file, r2fs/fuse/mount.py)."""
        try:
            with open(os.path.join(self.cluster, "cache", f"fuse-stats-{self.pid()}.json")) as f:
                return int(json.load(f)["requests"])
        except (OSError, ValueError, KeyError):
            return None

    def peak_rss_mib(self) -> float | None:
        try:
            with open(f"/proc/{self.pid()}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, TypeError):
            pass
        return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of process `pid` (all its threads) so far."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def gocryptfs(base: str) -> Iterator[str]:
    from bench_sqlite import gocryptfs as mount_gocryptfs
    with mount_gocryptfs(base) as path:
        yield path


class NullMounted:
    """tools/nullfs.py mounted at a temporary directory (always unmounted)."""

    def __init__(self, base: str, writeback: bool) -> None:
        self.path = os.path.join(base, "nullfs")
        self.writeback = writeback
        self.proc: subprocess.Popen[str] | None = None
        self.requests = 0
        self.cpu = 0.0

    def __enter__(self) -> "NullMounted":
        os.mkdir(self.path)
        self.proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                                   "nullfs.py"), self.path,
                                      *(["--writeback"] if self.writeback else [])],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise SystemExit("nullfs.py did not mount")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            try:
                self.cpu = cpu_seconds(self.proc.pid)
            except OSError:
                pass
        subprocess.run(["fusermount3", "-u", "-z", self.path], capture_output=True)
        if self.proc is not None:
            try:
                _, err = self.proc.communicate(timeout=60)
                for line in err.splitlines():
                    if line.startswith("requests: "):
                        self.requests = int(line.split()[1])
            except subprocess.TimeoutExpired:
                self.proc.kill()
                progress("nullfs.py did not exit within 60 s of its unmount: no floor figure")


def _writeback(options: str | None) -> bool:
    """Whether r2fs runs with the FUSE writeback cache (the floor then does too)."""
    from r2fs.fuse.mount import parse_options
    return parse_options(options)[0].writeback


def _fresh(root: str, name: str) -> str:
    path = os.path.join(root, name)
    os.makedirs(path)
    return path


def _timed_cmd(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[:500]}")
    return time.perf_counter() - t


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


_EXCLUDES = ["--exclude=__pycache__", "--exclude=site-packages"]


# --- workloads: each yields (metric, figure) one phase at a time ------------------------

def big(args: argparse.Namespace, root: str, i: int) -> Iterator[tuple[str, float]]:
    path = os.path.join(root, f"big{i}")
    yield "big write (fsync)", mb_per_s(args.size, native_write(path, DataStream(args.size, seed=i)))
    drop_caches()
    seconds, n = native_read(path)
    assert n == args.size
    yield "big read (cold)", mb_per_s(n, seconds)
    os.unlink(path)


def small(args: argparse.Namespace, root: str, i: int) -> Iterator[tuple[str, float]]:
    payload = os.urandom(args.file_size)
    d = _fresh(root, f"small{i}")
    names = [os.path.join(d, f"f{j:05d}") for j in range(args.files)]

    def write() -> None:
        for j, p in enumerate(names):
            with open(p, "wb") as f:
                f.write(payload[:16] + j.to_bytes(8, "little") + payload[24:])

    def read() -> None:
        for p in names:
            with open(p, "rb") as f:
                f.read()

    yield "small write", args.files / _timed(write)
    drop_caches()
    yield "small read", args.files / _timed(read)
    drop_caches()
    yield "small stat", args.files / _timed(lambda: [os.stat(p) for p in names])
    yield "small delete", args.files / _timed(lambda: [os.unlink(p) for p in names])
    os.rmdir(d)


def tree(args: argparse.Namespace, root: str, i: int, archive: str) -> Iterator[tuple[str, float]]:
    src = args.tree.rstrip("/") + "/"
    dst = os.path.join(root, f"rsync{i}")
    yield "rsync -a in", _timed_cmd(["rsync", "-a", *_EXCLUDES, src, dst + "/"])
    yield "rsync -a again (no-op)", _timed_cmd(["rsync", "-a", *_EXCLUDES, src, dst + "/"])
    untarred = _fresh(root, f"untar{i}")
    yield "untar", _timed_cmd(["tar", "-C", untarred, "-xf", archive])
    drop_caches()
    yield "tar c", _timed_cmd(["tar", "-C", untarred, "-cf", "/dev/null", "."])
    copy = os.path.join(root, f"cpa{i}")
    yield "cp -a", _timed_cmd(["cp", "-a", untarred, copy])
    yield "rm -rf", _timed_cmd(["rm", "-rf", dst, untarred, copy])


# --- the run ----------------------------------------------------------------------------------

def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    text = f"{v:,.2f}" if v < 10 else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    return f"{text} {unit}".rstrip()


def run(args: argparse.Namespace) -> None:
    parts = args.only or ["big", "small", "tree"]
    systems = [s for s in SYSTEMS if not (s == "gocryptfs" and args.no_peer)]
    with temp_dir(args.dir, "r2fs-bench-mount-") as base, contextlib.ExitStack() as stack:
        archive = os.path.join(base, "tree.tar")
        _timed_cmd(["tar", "-C", args.tree, *_EXCLUDES, "-cf", archive, "."])
        m = stack.enter_context(Mounted(base, args.options))
        roots = {"native": _fresh(base, "native"), "r2fs": m.path}
        if "gocryptfs" in systems:
            roots["gocryptfs"] = stack.enter_context(gocryptfs(base))
        floor = None
        if args.floor:
            floor = stack.enter_context(NullMounted(base, _writeback(args.options)))
            roots["floor"] = floor.path
            systems.append("floor")
        figures: dict[str, dict[str, list[float]]] = {s: {} for s in systems}
        cost: dict[str, list[float]] = {}  # r2fs: metric -> CPU µs per request
        pid = m.pid()
        for r in range(args.runs):
            order = systems[r % len(systems):] + systems[:r % len(systems)]
            for side in order:
                progress(f"round {r + 1}: {side}")
                work = []
                if "big" in parts and side != "floor":
                    work.append(big(args, roots[side], r))
                if "small" in parts:
                    work.append(small(args, roots[side], r))
                if "tree" in parts:
                    work.append(tree(args, roots[side], r, archive))
                for phases in work:
                    while True:
                        if side == "r2fs":
                            c0, q0 = cpu_seconds(pid), m.requests()
                        try:
                            metric, value = next(phases)
                        except StopIteration:
                            break
                        figures[side].setdefault(metric, []).append(value)
                        if side == "r2fs":
                            time.sleep(0.6)  # deferred publication finishes; stats file is fresh
                            c1, q1 = cpu_seconds(pid), m.requests()
                            if q0 is not None and q1 is not None and q1 > q0:
                                cost.setdefault(metric, []).append((c1 - c0) / (q1 - q0) * 1e6)
        rss = m.peak_rss_mib()
        stack.close()
        med = {s: {k: statistics.median(v) for k, v in figures[s].items()} for s in systems}
        head = ["metric", *systems]
        if "gocryptfs" in systems:
            head.append("r2fs/gocryptfs")
        head += ["r2fs/native", "r2fs CPU/req"]
        lines = []
        for metric, (unit, higher) in METRICS.items():
            if metric not in med["r2fs"]:
                continue
            row = [f"{metric} ({unit})"] + [_fmt(med[s].get(metric)) for s in systems]

            def speed(other: str) -> str:
                a, b = med["r2fs"][metric], med[other].get(metric)
                return "-" if not b else f"{(a / b if higher else b / a):.2f}"
            if "gocryptfs" in systems:
                row.append(speed("gocryptfs"))
            row.append(speed("native"))
            row.append(_fmt(statistics.median(cost[metric]), "µs") if metric in cost else "-")
            lines.append(row)
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
        fmt = lambda cells: " | ".join(  # noqa: E731
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        print(f"mount workloads, median of {args.runs} rounds (ratios: speed, > 1 = r2fs faster)")
        print(fmt(head))
        print("-+-".join("-" * w for w in widths))
        for row in lines:
            print(fmt(row))
        print(f"  note: {describe_machine()}")
        print(f"  note: disk: {filesystem_of(base)}; r2fs -o {args.options or '(defaults)'}")
        if rss is not None:
            print(f"  note: r2fs mount daemon peak RSS over the run: {rss:.0f} MiB (target <= 300)")
        if floor is not None and floor.requests:
            print(f"  note: FUSE loop's own cost (nullfs.py, small + tree work): "
                  f"{floor.cpu / floor.requests * 1e6:.1f} µs CPU per request over "
                  f"{floor.requests:,} requests (target <= 15)")
        if not drop_caches():
            print("  note: page cache NOT dropped before reads (needs root)")
        sys.stdout.flush()
