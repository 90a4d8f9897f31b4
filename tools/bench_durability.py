"""Durability: scrub and rebuild-one-lost-node throughput beside the disk's sequential read rate.

A throw-away cluster on the disk being measured holds `--size` bytes of
incompressible objects (RS(k, m), 4 MiB chunks). Three figures, each the
median of `--runs`, with the page cache dropped before every run (root only):

* native: a plain file of the same size written with fsync and read back
  sequentially in 4 MiB reads -- the disk's sequential read rate, this run;
* scrub: `scrub()` over every chunk (every shard read with O_DIRECT and its
  header and checksum verified), in MB/s of logical (plaintext) data;
* rebuild: node n0's directory deleted, `node replace` onto a new directory
  (`rebuild_node`: k good shards read per chunk, decoded, the lost shard
  re-encoded and written with fsync), in MB/s of logical data rebuilt.

Targets: scrub >= 50% and rebuild >= 30% of the sequential read rate. The
CPU seconds this process spent per GiB of logical data are shown too.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import trio

from benchlib import (MiB, DataStream, Table, describe_machine, drop_caches, filesystem_of,
                      mb_per_s, median_runs, native_read, native_write, parse_size, progress,
                      temp_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=parse_size("512MiB"),
                        help="bytes of objects in the cluster (default 512MiB)")
    parser.add_argument("--object-size", type=parse_size, default=parse_size("64MiB"),
                        help="size of each object (default 64MiB)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--m", type=int, default=2)
    parser.add_argument("--window", type=int, default=None,
                        help="chunks in flight in scrub and rebuild (default: the engine's)")


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _fill(cluster, size: int, object_size: int) -> int:
    await cluster.create_bucket("bench")
    b = cluster.bucket("bench")
    done = i = 0
    while done < size:
        n = min(object_size, size - done)
        await b.put(f"obj{i}", DataStream(n, seed=1000 + i).apieces())
        done += n
        i += 1
    return done


def _raw_read(cluster_path: str, threads: int) -> tuple[float, int]:
    """(seconds, bytes) to read every shard file once with O_DIRECT in `threads` threads:
    the I/O a scrub does, without any verification (its floor on this disk)."""
    files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(cluster_path, "nodes"))
             for f in names]
    buf_size = 8 * MiB

    def read_some(part: list[str]) -> int:
        buf = mmap.mmap(-1, buf_size)
        total = 0
        for f in part:
            fd = os.open(f, os.O_RDONLY | os.O_DIRECT)
            try:
                total += os.preadv(fd, [buf], 0)
            finally:
                os.close(fd)
        return total

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(read_some, [files[i::threads] for i in range(threads)]))
    return time.perf_counter() - start, total


def run(args: argparse.Namespace) -> None:
    from r2fs.engine import nodeops
    from r2fs.engine.rebalance import rebuild_node
    from r2fs.engine.scrub import scrub
    from r2fs.engine.store import Cluster

    window = {} if args.window is None else {"window": args.window}
    table = Table(f"durability: scrub and rebuild of {args.size / MiB:.0f} MiB, RS({args.k},"
                  f"{args.m}), window {args.window or 'default'} -- {describe_machine()}")
    with temp_dir(args.dir, "r2fs-bench-durability-") as base:
        table.note(f"disk: {filesystem_of(base)}")
        native = os.path.join(base, "native.bin")
        progress(f"native: writing {args.size / MiB:.0f} MiB")
        native_write(native, DataStream(args.size, seed=7))
        dropped = True

        def native_run(_: int) -> float:
            nonlocal dropped
            dropped &= drop_caches()
            seconds, nbytes = native_read(native)
            return mb_per_s(nbytes, seconds)

        seq, seqs = median_runs(native_run, args.runs)
        os.unlink(native)
        progress(f"sequential read {seq:.0f} MB/s ({', '.join(f'{x:.0f}' for x in seqs)})")

        path = os.path.join(base, "cluster")
        cluster = Cluster.init(path, nodes=args.k + args.m, k=args.k, m=args.m)
        try:
            progress("filling the cluster")
            logical = trio.run(_fill, cluster, args.size, args.object_size)
            cpu: dict[str, list[float]] = {"scrub": [], "rebuild": []}

            def scrub_run(_: int) -> float:
                nonlocal dropped
                dropped &= drop_caches()
                before = _cpu()
                report = scrub(cluster, fresh=True, **window)
                cpu["scrub"].append((_cpu() - before) / (report.bytes / 2**30))
                assert report.ok and report.chunks, report
                return mb_per_s(report.bytes, report.seconds)

            progress("scrub")
            sc, scs = median_runs(scrub_run, args.runs)

            def raw_run(_: int) -> float:
                nonlocal dropped
                dropped &= drop_caches()
                seconds, nbytes = _raw_read(path, args.window or 16)
                return mb_per_s(nbytes * args.k // (args.k + args.m), seconds)

            progress("raw parallel read of the shard files")
            raw, raws = median_runs(raw_run, args.runs)

            new = os.path.join(base, "n0-new")

            def rebuild_run(i: int) -> float:
                nonlocal dropped
                shutil.rmtree(cluster.nodes["n0"].path)  # the dead disk
                nodeops.replace_node(cluster, "n0", new)
                dropped &= drop_caches()
                before = _cpu()
                report = rebuild_node(cluster, "n0", **window)
                cpu["rebuild"].append((_cpu() - before) / (report.bytes / 2**30))
                assert report.failed == 0 and report.shards_rebuilt, report
                return mb_per_s(report.bytes, report.seconds)

            progress("rebuild of one lost node")
            rb, rbs = median_runs(rebuild_run, args.runs)
            assert scrub(cluster, fresh=True).ok
        finally:
            cluster.close()
    table.add("disk sequential read (native, 4 MiB reads)", seq, seq)
    table.add("raw O_DIRECT read of the shard files, scrub's parallelism (MB/s of logical)", raw, seq)
    table.add("scrub (MB/s of logical data)", sc, seq)
    table.add("rebuild one lost node (MB/s of logical data)", rb, seq)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    table.note(f"runs: native {', '.join(f'{x:.0f}' for x in seqs)}; scrub "
               f"{', '.join(f'{x:.0f}' for x in scs)}; raw {', '.join(f'{x:.0f}' for x in raws)}; rebuild {', '.join(f'{x:.0f}' for x in rbs)}")
    table.note(f"CPU per GiB of logical data (this process): scrub {med(cpu['scrub']):.2f} s, "
               f"rebuild {med(cpu['rebuild']):.2f} s")
    table.note(f"{logical / MiB:.0f} MiB logical; scrub reads {(args.k + args.m) / args.k:.2f}x "
               f"that in shards, rebuild reads 1x and writes {1 / args.k:.2f}x")
    table.note("targets: scrub >= 50%, rebuild >= 30% of the sequential read rate")
    table.note("the VM disk has a host-side cache: a file read again soon reads 2-3x faster "
               "(see the native runs); every figure here is from data written in this run")
    if not dropped:
        table.note("the page cache could NOT be dropped (not root): reads may be cached")
    table.print()
