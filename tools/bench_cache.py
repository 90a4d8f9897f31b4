"""Read cache: a 1 GiB object read cold from the nodes, warm from L1, from a peer's L2, read-ahead on/off.

Every figure is a sequential read of the file through a real `r2fs mount`
(mounted afresh for every run with the flags of the case), as the cache issue
names it -- or, with --api, a streamed `bucket.get` through the store API (the
path the S3 gateway serves GETs on) -- each run beside a native cold read of the same bytes from one
plain file on the same disk, the page cache dropped before every read (root
only):

(a) cold: L1 on and empty, so the read goes to the nodes (and fills L1);
(b) L1: the same object again, every chunk a local L1 hit (sealed file read
    + AES-GCM open);
(c) L2: this process's L1 emptied before each run, the chunks fetched from a
    peer process (a real peer server on 127.0.0.1) whose L1 holds them;
(d) cold sequential read with read-ahead on and off (no L1, so only
    read-ahead differs). r2fs's read-ahead for a sequential reader of a mount
    has two parts: the engine prefetches the next chunks, and the mount
    enlarges the kernel's read-ahead window (4 MiB, so several requests are
    in flight). "read-ahead off" is `--no-readahead`, which switches off
    both (the kernel window stays at the kernel's default, 128 KiB); a third
    row, "engine prefetch off", keeps the enlarged window
    (`--no-readahead -o read_ahead_kb=4096`), and both ratios are printed:
    the whole read-ahead on/off and the engine prefetch alone on/off.
    (--api: the engine prefetch only; the store API has no kernel window.)

Targets on the 2-core reference machine: L1 >= 60% and L2 >= 40% of the
native read; read-ahead >= 1.5x the cold read without it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from benchlib import (GiB, MiB, DataStream, Table, describe_machine, drop_caches, filesystem_of,
                      mb_per_s, native_read, native_write, parse_size, progress, temp_dir)

PEER_PROGRAM = """
import sys
from r2fs.engine.store import Cluster
c = Cluster.open(sys.argv[1])
c.reader.configure(cache_dir=sys.argv[2], cache_size=int(sys.argv[3]),
                   peer_listen="127.0.0.1:0", snapshots=False)
print(c.reader.self_url, flush=True)
sys.stdin.read()
c.reader.close()
c.close()
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=GiB,
                        help="object size (default 1GiB)")
    parser.add_argument("--chunk", type=parse_size, default=4 * MiB,
                        help="cluster chunk size (default 4MiB)")
    parser.add_argument("--api", dest="mount", action="store_false",
                        help="read with the store API (bucket.get) instead of through a mount")


async def _put(cluster: Any, size: int) -> Any:
    await cluster.create_bucket("bench")
    bucket = cluster.bucket("bench")
    await bucket.put("obj", DataStream(size, seed=7).apieces())
    return bucket


async def _get(bucket: Any) -> tuple[float, int]:
    start = time.perf_counter()
    total = 0
    async for piece in await bucket.get("obj"):
        total += len(piece)
    return time.perf_counter() - start, total


def _read(cluster: Any, bucket: Any, size: int) -> float:
    seconds, total = trio.run(_get, bucket)
    if total != size:
        raise SystemExit(f"bench cache: read {total} bytes, expected {size}")
    return mb_per_s(total, seconds)


def _pair(label: str, native_path: str, size: int, prepare: Any, measure: Any, runs: int,
          state: dict) -> tuple[float, float]:
    """Median r2fs and native MB/s: each run a native cold read then an r2fs read."""
    import statistics

    ours, native = [], []
    for i in range(runs):
        state["dropped"] &= drop_caches()
        seconds, total = native_read(native_path)
        native.append(mb_per_s(total, seconds))
        prepare()
        state["dropped"] &= drop_caches()
        ours.append(measure())
        progress(f"{label} run {i + 1}: {ours[-1]:,.0f} MB/s (native {native[-1]:,.0f} MB/s)")
    return statistics.median(ours), statistics.median(native)


def _r2fs(*argv: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "r2fs.cli", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench cache: r2fs {' '.join(argv)} failed: {proc.stderr.strip()}")


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _kernel_window(mnt: str) -> int | None:
    """The kernel read-ahead window (KiB) of the mount at `mnt`, as sysfs shows it."""
    from r2fs.fuse.mount import read_ahead_knob
    try:
        knob = read_ahead_knob(mnt)
        if knob is not None:
            with open(knob) as f:
                return int(f.read())
    except (OSError, ValueError):
        pass
    return None


def _mount_read(cluster_path: str, mnt: str, flags: list[str], size: int, state: dict,
                cpu: list[float] | None = None, peer_pid: int | None = None,
                label: str = "") -> float:
    """MB/s of one cold sequential read of the object through a fresh mount with `flags`;
    appends the CPU seconds per GiB of the mount daemon (+ the peer process) to `cpu`.

    Why CPU too: on a shared 2-core machine the wall-clock ratio moves with
    the other load; CPU seconds per GiB are what the read path costs.
    """
    from r2fs.cli.fuse_cmds import daemon_pid

    os.makedirs(mnt, exist_ok=True)
    _r2fs("--cluster", cluster_path, "mount", "bench", mnt, *flags)
    try:
        state["dropped"] &= drop_caches()
        pid = daemon_pid(mnt)
        if label:
            state.setdefault("windows", {}).setdefault(label, set()).add(_kernel_window(mnt))
        before = _cpu_seconds(pid) + _cpu_seconds(peer_pid)
        seconds, total = native_read(os.path.join(mnt, "obj"))
        used = _cpu_seconds(pid) + _cpu_seconds(peer_pid) - before
        if cpu is not None and pid is not None:
            cpu.append(used / (total / GiB) if total else 0.0)
    finally:
        if subprocess.run([sys.executable, "-m", "r2fs.cli", "umount", mnt],
                          capture_output=True).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
    if total != size:
        raise SystemExit(f"bench cache: read {total} bytes through the mount, expected {size}")
    return mb_per_s(total, seconds)


def _start_peer(cluster_path: str, cache_dir: str, cache_size: int) -> tuple[Any, str]:
    peer = subprocess.Popen([sys.executable, "-c", PEER_PROGRAM, cluster_path, cache_dir,
                             str(cache_size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    url = peer.stdout.readline().strip()
    if not url.startswith("http://"):
        peer.kill()
        raise SystemExit("bench cache: the peer process did not start")
    return peer, url


def _stop_peer(peer: Any) -> None:
    peer.stdin.close()
    try:
        peer.wait(20)
    except subprocess.TimeoutExpired:
        peer.kill()
        peer.wait()


def run_mount(args: argparse.Namespace, table: Table, cluster: Any, work: str, native_path: str,
              cache_size: int, state: dict) -> tuple[float, float]:
    """The four cases through `r2fs mount`; (read-ahead off, on) MB/s."""
    import statistics

    from r2fs.fuse.context import MountOptions

    size = args.size
    mnt = os.path.join(work, "mnt")
    cpu: dict[str, list[float]] = {}
    peer_pid: list[int | None] = [None]

    def read(flags: list[str], label: str = "") -> Any:
        return lambda: _mount_read(cluster.path, mnt, flags, size, state,
                                   cpu.setdefault(label, []) if label else None, peer_pid[0],
                                   label)
    fresh = iter(range(1000))
    new_dir = lambda: os.path.join(work, f"l1-{next(fresh)}")  # noqa: E731
    cache = ["--cache-size", str(cache_size)]
    kernel_window = f"read_ahead_kb={MountOptions().read_ahead_kb}"
    for label, flags in (("cold, read-ahead off", ["--cache-size", "0", "--no-readahead"]),
                         ("cold, engine prefetch off", ["--cache-size", "0", "--no-readahead",
                                                        "-o", kernel_window]),
                         ("cold, read-ahead on", ["--cache-size", "0"])):
        r, n = _pair(label, native_path, size, lambda: None, read(flags, label), args.runs, state)
        table.add(f"{label} (nodes)", r, n)
    off, prefetch_off, on = (row.r2fs for row in table.rows[-3:])
    table.note(f"engine prefetch alone on / off (kernel window {kernel_window} in both): "
               f"{on / prefetch_off:.2f}x")
    runs = {"flags": []}

    def fresh_l1() -> None:
        runs["flags"] = ["--cache-dir", new_dir(), *cache]
    r, n = _pair("cold, L1 filling", native_path, size, fresh_l1,
                 lambda: read(runs["flags"], "(a)")(), args.runs, state)
    table.add("(a) cold from the nodes, filling L1", r, n)
    warm = ["--cache-dir", os.path.join(work, "l1-warm"), *cache]
    progress("filling the L1 of the warm case")
    _mount_read(cluster.path, mnt, warm, size, state)
    r, n = _pair("L1 hits", native_path, size, lambda: None, read(warm, "(b)"), args.runs, state)
    table.add("(b) warm: L1 hits (remounted)", r, n)
    peer, url = _start_peer(cluster.path, os.path.join(work, "peer-l1"), cache_size)
    try:
        peer_pid[0] = peer.pid
        progress("warming the peer's L1")
        _mount_read(cluster.path, mnt, ["--cache-dir", new_dir(), *cache, "--peer", url], size,
                    state)

        def fresh_l1_with_peer() -> None:
            runs["flags"] = ["--cache-dir", new_dir(), *cache, "--peer", url]
        r, n = _pair("L2 hits", native_path, size, fresh_l1_with_peer,
                     lambda: read(runs["flags"], "(c) incl. the peer")(), args.runs, state)
        table.add("(c) L2: a peer's L1, own L1 empty", r, n)
    finally:
        _stop_peer(peer)
    table.note("kernel read-ahead window seen (KiB): " + ", ".join(
        f"{k} {'/'.join(str(w) for w in sorted(v, key=str))}"
        for k, v in state.get("windows", {}).items()))
    table.note("CPU-s per GiB read (mount daemon; median): " + ", ".join(
        f"{k} {statistics.median(v):.2f}" for k, v in cpu.items() if v))
    return off, on


def run(args: argparse.Namespace) -> None:
    from r2fs.engine.store import Cluster

    base = args.dir or tempfile.gettempdir()
    size = args.size
    cache_size = size + size // 4 + 64 * MiB
    state = {"dropped": True}
    how = "read through r2fs mount" if args.mount else "streamed bucket.get"
    table = Table(f"read cache: {size / MiB:,.0f} MiB object, {args.chunk // MiB} MiB chunks, "
                  f"RS(4,2), {how}, median of {args.runs}")
    l1_hits = l2_hits = node_reads = None
    with temp_dir(base, "r2fs-bench-cache-") as work:
        cluster = Cluster.init(os.path.join(work, "cluster"), chunk_size=args.chunk)
        peer = None
        try:
            progress(f"storing {size / MiB:,.0f} MiB")
            bucket = trio.run(_put, cluster, size)
            native_path = os.path.join(work, "native.bin")
            native_write(native_path, DataStream(size, seed=7))
            reader = cluster.reader
            if args.mount:
                off, on = run_mount(args, table, cluster, work, native_path, cache_size, state)
                return _finish(table, args, off, on, None, None, None, state, base)

            # (d) read-ahead on/off, no L1: the nodes every time
            for label, on in (("cold, read-ahead off", False), ("cold, read-ahead on", True)):
                reader.configure(cache_size=0, readahead=on, snapshots=False)
                r, n = _pair(label, native_path, size, lambda: None,
                             lambda: _read(cluster, bucket, size), args.runs, state)
                table.add(f"{label} (nodes)", r, n)
            off, on = table.rows[-2].r2fs, table.rows[-1].r2fs

            # (a) cold through an empty L1, (b) warm L1
            reader.configure(cache_dir=os.path.join(work, "l1"), cache_size=cache_size,
                             snapshots=False)
            r, n = _pair("cold, L1 filling", native_path, size, lambda: reader.l1.clear(),
                         lambda: _read(cluster, bucket, size), args.runs, state)
            table.add("(a) cold from the nodes, filling L1", r, n)
            r, n = _pair("L1 hits", native_path, size, lambda: None,
                         lambda: _read(cluster, bucket, size), args.runs, state)
            table.add("(b) warm: L1 hits", r, n)
            l1_hits = reader.figures()["tiers"]["l1"]["hits"]

            # (c) a peer process's L1 (warmed by the first run), this process's L1 emptied
            peer, url = _start_peer(cluster.path, os.path.join(work, "peer-l1"), cache_size)
            reader.configure(cache_dir=os.path.join(work, "l1"), cache_size=cache_size,
                             peers=[url], snapshots=False)
            reader.l1.clear()
            progress("warming the peer's L1")
            _read(cluster, bucket, size)
            before = reader.figures()["tiers"]
            r, n = _pair("L2 hits", native_path, size, lambda: reader.l1.clear(),
                         lambda: _read(cluster, bucket, size), args.runs, state)
            table.add("(c) L2: a peer's L1, own L1 empty", r, n)
            after = reader.figures()["tiers"]
            l2_hits = after["l2"]["hits"] - before["l2"]["hits"]
            node_reads = after["nodes"]["hits"] - before["nodes"]["hits"]
        finally:
            if peer is not None:
                _stop_peer(peer)
            cluster.reader.close()
            cluster.close()
    _finish(table, args, off, on, l1_hits, l2_hits, node_reads, state, base)


def _finish(table: Table, args: argparse.Namespace, off: float, on: float, l1_hits: Any,
            l2_hits: Any, node_reads: Any, state: dict, base: str) -> None:
    chunks = -(-args.size // args.chunk)
    what = "whole read-ahead (engine prefetch + kernel window)" if args.mount else "read-ahead"
    table.note(f"{what} on / off: {on / off:.2f}x (target >= 1.5x)")
    table.note("targets: (b) >= 60% of native, (c) >= 40% of native")
    if l1_hits is not None:
        table.note(f"(b) served {l1_hits} L1 hits over {args.runs} runs ({chunks} chunks per "
                   f"read); (c) {l2_hits} L2 hits and {node_reads} node reads over {args.runs} runs")
    table.note("page cache dropped before every read" if state["dropped"] else
               "page cache NOT dropped before reads (needs root): reads may be cached")
    table.note(f"{describe_machine()}; disk {filesystem_of(base)}")
    print()
    table.print()
