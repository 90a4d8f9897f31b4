"""Mount: big file, small files, rsync and untar through a real FUSE mount beside a native directory.

Everything goes through a real `r2fs mount` of a fresh cluster made on the
disk being measured (--dir), beside the same work in a native directory of
that disk, in the same run; each figure is the median of --runs runs:

* one big file (default 1 GiB) written with fsync, then read cold (page
  cache dropped; the mount's in-memory chunk cache is smaller than the file);
* N small files (default 2,000 x 16 KiB): written, read, stat'ed, deleted
  (files/s);
* `rsync -a` of a source tree (default: this interpreter's standard library
  without site-packages and __pycache__) in, and a no-op `rsync -a` again;
* untar of the same tree.

Targets on the 2-core reference machine: big write >= 35%, cold big read >=
40% of native MB/s; small-file write >= 10%, stat >= 20% of native files/s;
rsync in <= 6x and untar <= 8x the native time. The mount daemon's peak RSS
is printed too (the design bounds it for any file size).

With --floor the small-file, rsync and untar parts also run on nullfs.py, an
in-memory pyfuse3 filesystem that does no work at all: its figure is the
best any pyfuse3 + trio mount can reach on this machine, so the rows marked
"[pyfuse3 floor]" show how much of r2fs's gap is the FUSE binding itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

from benchlib import (KiB, MiB, DataStream, Table, describe_machine, drop_caches, filesystem_of,
                      mb_per_s, median_runs, native_read, native_write, parse_size, progress,
                      temp_dir)

BUCKET = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="big file size (default 1GiB)")
    parser.add_argument("--files", type=int, default=2000, help="small files (default 2000)")
    parser.add_argument("--file-size", type=parse_size, default=16 * KiB,
                        help="small file size (default 16KiB)")
    parser.add_argument("--tree", default=os.path.dirname(os.__file__),
                        help="source tree for rsync and untar (default: the standard library)")
    parser.add_argument("--only", choices=("big", "small", "rsync", "untar"), action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("-o", dest="options", default=None, help="mount options (r2fs mount -o)")
    parser.add_argument("--floor", action="store_true",
                        help="also run the small-file, rsync and untar parts on nullfs.py "
                             "(in-memory pyfuse3 filesystem: the floor of the FUSE binding)")


def r2fs(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "r2fs.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"r2fs {' '.join(args)} failed: {proc.stderr.strip()}")


class Mounted:
    """A fresh cluster + bucket mounted at a temporary directory (always unmounted)."""

    def __init__(self, base: str, options: str | None) -> None:
        self.cluster = os.path.join(base, "cluster")
        self.path = os.path.join(base, "mnt")
        self.options = options

    def __enter__(self) -> "Mounted":
        import trio
        from r2fs.engine.store import Cluster

        async def make() -> None:
            c = Cluster.init(self.cluster)
            try:
                await c.create_bucket(BUCKET)
            finally:
                c.close()
        trio.run(make)
        os.mkdir(self.path)
        args = ["--cluster", self.cluster, "mount", BUCKET, self.path]
        r2fs(*(args + (["-o", self.options] if self.options else [])))
        return self

    def __exit__(self, *exc: object) -> None:
        if subprocess.run([sys.executable, "-m", "r2fs.cli", "umount", self.path],
                          capture_output=True).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", self.path], capture_output=True)

    def peak_rss_mib(self) -> float | None:
        from r2fs.cli.fuse_cmds import daemon_pid
        pid = daemon_pid(self.path)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, TypeError):
            pass
        return None


class NullMounted:
    """tools/nullfs.py mounted at a temporary directory (always unmounted)."""

    def __init__(self, base: str, writeback: bool) -> None:
        self.path = os.path.join(base, "nullfs")
        self.writeback = writeback
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> "NullMounted":
        os.mkdir(self.path)
        self.proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                                   "nullfs.py"), self.path,
                                      *(["--writeback"] if self.writeback else [])],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise SystemExit("nullfs.py did not mount")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["fusermount3", "-u", "-z", self.path], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _add(table: Table, label: str, figures: dict[str, float], unit: str,
         higher_is_better: bool = True) -> None:
    """The r2fs row, and the pyfuse3-floor row when the floor ran."""
    table.add(label, figures["r2fs"], figures["native"], unit, higher_is_better)
    if "floor" in figures:
        table.add(f"{label} [pyfuse3 floor]", figures["floor"], figures["native"], unit,
                  higher_is_better)


def _writeback(options: str | None) -> bool:
    """Whether r2fs runs with the FUSE writeback cache (the floor then does too)."""
    from r2fs.fuse.mount import parse_options
    return parse_options(options)[0].writeback


def _fresh(root: str, name: str) -> str:
    path = os.path.join(root, name)
    os.makedirs(path)
    return path


# --- parts ---------------------------------------------------------------------------------

def big(args: argparse.Namespace, roots: dict[str, str], table: Table) -> None:
    for what in ("write", "read"):
        figures = {}
        for side, root in roots.items():
            def once(i: int, side: str = side, root: str = root) -> float:
                path = os.path.join(root, f"big{i}")
                if what == "write":
                    progress(f"{side}: writing {args.size // MiB} MiB (run {i + 1})")
                    return mb_per_s(args.size, native_write(path, DataStream(args.size, seed=i)))
                drop_caches()
                progress(f"{side}: reading {args.size // MiB} MiB cold (run {i + 1})")
                seconds, n = native_read(path)
                assert n == args.size
                return mb_per_s(n, seconds)
            figures[side], _ = median_runs(once, args.runs)
        table.add(f"big file {what}" + (" (fsync)" if what == "write" else " (cold)"),
                  figures["r2fs"], figures["native"], "MB/s")
    for side, root in roots.items():
        for i in range(args.runs):
            os.unlink(os.path.join(root, f"big{i}"))


def small(args: argparse.Namespace, roots: dict[str, str], table: Table) -> None:
    payload = os.urandom(args.file_size)
    phases = ("write", "read", "stat", "delete")
    results: dict[str, dict[str, list[float]]] = {p: {s: [] for s in roots} for p in phases}
    for i in range(args.runs):
        for side, root in roots.items():
            d = _fresh(root, f"small{i}")
            names = [os.path.join(d, f"f{j:05d}") for j in range(args.files)]
            progress(f"{side}: {args.files} small files (run {i + 1})")
            t = time.perf_counter()
            for j, p in enumerate(names):
                with open(p, "wb") as f:
                    f.write(payload[:16] + j.to_bytes(8, "little") + payload[24:])
            results["write"][side].append(args.files / (time.perf_counter() - t))
            drop_caches()
            t = time.perf_counter()
            for p in names:
                with open(p, "rb") as f:
                    f.read()
            results["read"][side].append(args.files / (time.perf_counter() - t))
            t = time.perf_counter()
            for p in names:
                os.stat(p)
            results["stat"][side].append(args.files / (time.perf_counter() - t))
            t = time.perf_counter()
            for p in names:
                os.unlink(p)
            results["delete"][side].append(args.files / (time.perf_counter() - t))
            os.rmdir(d)
    import statistics
    for p in phases:
        _add(table, f"{args.files} x {args.file_size // KiB} KiB files: {p}",
             {side: statistics.median(results[p][side]) for side in roots}, "files/s")


def _tree_excludes() -> list[str]:
    return ["--exclude=__pycache__", "--exclude=site-packages"]


def _timed_cmd(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[:500]}")
    return time.perf_counter() - t


def rsync(args: argparse.Namespace, roots: dict[str, str], table: Table) -> None:
    src = args.tree.rstrip("/") + "/"
    for label, noop in (("rsync -a in", False), ("rsync -a again (no-op)", True)):
        figures = {}
        for side, root in roots.items():
            def once(i: int, side: str = side, root: str = root) -> float:
                dst = os.path.join(root, f"rsync{i}") + "/"
                progress(f"{side}: {label} (run {i + 1})")
                return _timed_cmd(["rsync", "-a", *_tree_excludes(), src, dst])
            figures[side], _ = median_runs(once, args.runs)
        _add(table, label, figures, "s", higher_is_better=False)


def untar(args: argparse.Namespace, roots: dict[str, str], table: Table, scratch: str) -> None:
    archive = os.path.join(scratch, "tree.tar")
    _timed_cmd(["tar", "-C", args.tree, *_tree_excludes(), "-cf", archive, "."])
    figures = {}
    for side, root in roots.items():
        def once(i: int, side: str = side, root: str = root) -> float:
            dst = _fresh(root, f"untar{i}")
            progress(f"{side}: untar (run {i + 1})")
            return _timed_cmd(["tar", "-C", dst, "-xf", archive])
        figures[side], _ = median_runs(once, args.runs)
    _add(table, "untar", figures, "s", higher_is_better=False)


def run(args: argparse.Namespace) -> None:
    parts = args.only or ["big", "small", "rsync", "untar"]
    with temp_dir(args.dir, "r2fs-bench-mount-") as base:
        native = _fresh(base, "native")
        with Mounted(base, args.options) as m, contextlib.ExitStack() as stack:
            roots = {"r2fs": m.path, "native": native}
            small_roots = dict(roots)
            if args.floor:
                small_roots["floor"] = stack.enter_context(NullMounted(base, _writeback(args.options))).path
            table = Table(f"mount workload (median of {args.runs}; ratio = r2fs/native for rates, "
                          f"native/r2fs for times)")
            if "big" in parts:
                big(args, roots, table)
            if "small" in parts:
                small(args, small_roots, table)
            if "rsync" in parts:
                rsync(args, small_roots, table)
            if "untar" in parts:
                untar(args, small_roots, table, base)
            rss = m.peak_rss_mib()
        table.note(describe_machine())
        table.note(f"disk: {filesystem_of(base)}")
        if rss is not None:
            table.note(f"mount daemon peak RSS: {rss:.0f} MiB")
        if not drop_caches():
            table.note("page cache NOT dropped before reads (needs root)")
        table.print()
