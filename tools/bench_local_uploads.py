"""Local uploads: acknowledged-write latency in sync vs local mode, home region simulated far away.

A cluster with two regions (east: 6 nodes, west: 6 nodes); the bucket's home
is west, and every west node is made `--latency` ms away with the fault
injection layer ([nodes.ID.simulate] latency_ms, for benchmarks only). The
client runs in east and puts `--count` objects of `--size` bytes in each
mode, one at a time, alternating between `sync` (acknowledged once all k+m
shards are durable on the far nodes) and `local` (acknowledged once the chunk
is durable in local staging), so both modes see the same machine load; the
background replicator runs in the same process throughout, as in a mount or
gateway (it yields to the writes, within bounds: see replicator.py). Reported: p50/p99 acknowledged-write latency of
both modes, the reduction of the local p50 against the sync p50 (target: at
least 75%, R2's published claim), the time for the backlog to drain after the
last acknowledgement, and objects lost (every object is read back and
compared after the drain). The native baseline is the same bytes written to a
plain file with fsync on the same disk, per object, in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time

import trio

from benchlib import (MiB, DataStream, Table, describe_machine, filesystem_of, parse_size, progress,
                      temp_dir, write_fully)

REGIONS = {"east": 6, "west": 6}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=200, help="objects per mode (default 200)")
    parser.add_argument("--size", type=parse_size, default=MiB, help="object size (default 1MiB)")
    parser.add_argument("--latency", type=float, default=80.0,
                        help="simulated distance of the home region, ms per node access (default 80)")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def native_latencies(directory: str, stream: DataStream) -> list[float]:
    """Seconds per object to write it to a plain file and fsync it."""
    out = []
    for i, piece in enumerate(stream.pieces()):
        path = os.path.join(directory, f"native-{i}")
        start = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_fully(fd, piece)
            os.fsync(fd)
        finally:
            os.close(fd)
        out.append(time.perf_counter() - start)
        os.unlink(path)
    return out


async def _timed_put(c, bucket, mode: str, key: str, piece: bytes,
                     digests: dict[str, bytes]) -> float:
    digests[key] = hashlib.blake2b(piece, digest_size=16).digest()
    c.writer.configure(mode=mode, region="east")
    start = time.perf_counter()
    await bucket.put(key, piece)
    return time.perf_counter() - start


async def one_run(path: str, args: argparse.Namespace, run: int) -> dict[str, float]:
    from r2fs.engine.replicator import backlog, run_replicator
    from r2fs.engine.simulate import set_simulation
    from r2fs.engine.store import Cluster

    Cluster.init(path, nodes=sum(REGIONS.values()), regions=REGIONS).close()
    with Cluster.open(path) as probe:
        far = probe.writer.regions["west"]
    for nid in far:
        set_simulation(path, nid, latency_ms=args.latency)
    figures: dict[str, float] = {}
    digests: dict[str, bytes] = {}
    with Cluster.open(path) as c:
        await c.create_bucket("bench", location="west")
        bucket = c.bucket("bench")
        total = args.count * args.size

        progress(f"run {run + 1}: {args.count} puts in each mode, alternating")
        sync: list[float] = []
        local: list[float] = []
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_replicator, c, stop)
            pairs = zip(DataStream(total, 100 + 2 * run, args.size).pieces(),
                        DataStream(total, 101 + 2 * run, args.size).pieces())
            for i, (a, b) in enumerate(pairs):
                sync.append(await _timed_put(c, bucket, "sync", f"sync/{i:05d}", a, digests))
                local.append(await _timed_put(c, bucket, "local", f"local/{i:05d}", b, digests))
            last_ack = time.perf_counter()
            while (await trio.to_thread.run_sync(backlog, c)).chunks:
                await trio.sleep(0.02)
            figures["drain"] = time.perf_counter() - last_ack
            stop.set()

        progress(f"run {run + 1}: reading every object back")
        staged_left = sum(len(files) for _, _, files in os.walk(os.path.join(path, "staging")))
        lost = 0
        for key, digest in digests.items():
            data = await (await bucket.get(key)).read()
            lost += hashlib.blake2b(data, digest_size=16).digest() != digest
        figures["lost"] = float(lost)
        figures["staged_left"] = float(staged_left)
    for name, values in (("sync", sync), ("local", local)):
        figures[f"{name}_p50"] = percentile(values, 50) * 1000
        figures[f"{name}_p99"] = percentile(values, 99) * 1000
    return figures


def run(args: argparse.Namespace) -> None:
    if args.count < 1 or args.size < 1:
        raise SystemExit("tools/bench local_uploads: --count and --size must be positive")
    results = []
    natives = []
    with temp_dir(args.dir, "r2fs-bench-uploads-") as base:
        for i in range(args.runs):
            path = os.path.join(base, f"cluster{i}")
            results.append(trio.run(one_run, path, args, i))
            progress(f"run {i + 1}: native baseline")
            lat = native_latencies(base, DataStream(args.count * args.size, 100 + 2 * i, args.size))
            natives.append({"p50": percentile(lat, 50) * 1000, "p99": percentile(lat, 99) * 1000})
        fs = filesystem_of(base)

    def med(key: str, rows: list[dict[str, float]]) -> float:
        return statistics.median(r[key] for r in rows)

    n50, n99 = med("p50", natives), med("p99", natives)
    table = Table(f"local uploads: {args.count} x {args.size // 1024} KiB puts, home region "
                  f"+{args.latency:g} ms (simulated), RS(4,2), median of {args.runs} runs "
                  f"[{describe_machine()}; {fs}]")
    table.add("sync  ack p50", med("sync_p50", results), n50, "ms", higher_is_better=False)
    table.add("sync  ack p99", med("sync_p99", results), n99, "ms", higher_is_better=False)
    table.add("local ack p50", med("local_p50", results), n50, "ms", higher_is_better=False)
    table.add("local ack p99", med("local_p99", results), n99, "ms", higher_is_better=False)
    reductions = [100 * (1 - r["local_p50"] / r["sync_p50"]) for r in results]
    table.add("local p50 lower than sync p50 by", statistics.median(reductions), None, "%")
    table.add("backlog drain after last ack", med("drain", results), None, "s",
              higher_is_better=False)
    table.add("objects lost", med("lost", results), None, "", higher_is_better=False)
    reduction = statistics.median(reductions)
    table.note(f"target: local p50 >= 75% lower than sync p50 -> "
               f"{'MET' if reduction >= 75 else 'NOT MET'} ({reduction:.1f}%)")
    lost = max(r["lost"] for r in results)
    left = max(r["staged_left"] for r in results)
    table.note(f"data check: {'no object lost' if lost == 0 else f'{lost:.0f} OBJECTS LOST'} "
               f"in any run; staging files left after the drain: {left:.0f}")
    table.note("native = the same bytes written to a plain file + fsync on the same disk; "
               "ratio = native / r2fs latency")
    table.print()
