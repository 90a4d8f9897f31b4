"""Metadata engines: create/stat/rename/list/delete of N small objects on LMDB and PostgreSQL, and the mount's small files on both.

In one run, on a fresh LMDB cluster and a fresh PostgreSQL cluster:

* through the store API, one operation at a time (the latency a client
  sees): create (put of a small inline object), stat (head: the store keeps
  no metadata cache, so every head is uncached), rename, list (pages of
  1,000; per object listed) and delete of --objects objects (default 10,000);
  µs/op and ops/s, with the CPU of this process and of the PostgreSQL server
  per operation;
* the mount's small-file workload (tools/bench_mount.py's `small` part) on
  a mounted PostgreSQL cluster beside a mounted LMDB one.

Without --meta it starts a PostgreSQL of its own (Debian's postgresql-15,
initdb in a temp dir, on loopback, fsync ON as in production) and removes
it afterwards. Anchors (JuiceFS, networked engines, µs): create 570 (Redis) /
1,570 (MySQL) / 1,209 (TiKV); getattr 87 / 530 / 306; rename 728 / 2,735 /
1,419. Targets: create <= 1,000 µs, uncached stat <= 300 µs, mount small-file
write >= 50% of its LMDB figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

from benchlib import KiB, Table, describe_machine, parse_size, progress, temp_dir

HERE = os.path.dirname(os.path.abspath(__file__))
BUCKET = "bench"
OPS = ("create", "stat", "rename", "list", "delete")
_TICK = os.sysconf("SC_CLK_TCK")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meta", default=None, metavar="URL",
                        help="an EMPTY PostgreSQL database to use (default: start one)")
    parser.add_argument("--objects", type=int, default=10_000, help="objects (default 10000)")
    parser.add_argument("--no-mount", action="store_true", help="skip the mount part")
    parser.add_argument("--no-engine", action="store_true", help="skip the store API part")
    parser.add_argument("--files", type=int, default=2000, help="mount: small files (default 2000)")
    parser.add_argument("--file-size", type=parse_size, default=16 * KiB,
                        help="mount: small file size (default 16KiB)")
    parser.add_argument("-o", dest="options", default=None, help="mount options")


def _group_cpu(postmaster: int | None) -> float:
    """CPU seconds (user + system) of the server: the postmaster and its children
    (live ones, plus what exited children left in the postmaster's cutime/cstime)."""
    if postmaster is None:
        return 0.0
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == postmaster:
            total += sum(int(x) for x in fields[11:15])
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


async def _engine_run(cluster: Any, n: int, run: int, pgid: int | None) -> dict[str, tuple]:
    """{op: (µs/op, own CPU µs/op, server CPU µs/op)} for one run of n objects."""
    b = cluster.bucket(BUCKET)
    keys = [f"r{run}/d{i // 1000:03d}/f{i:06d}" for i in range(n)]
    out: dict[str, tuple] = {}

    async def measure(op: str, fn: Callable[[], Any], count: int) -> None:
        progress(f"{cluster.meta.url_scheme}: {op} x {count} (run {run + 1})")
        c0, s0, t0 = time.process_time(), _group_cpu(pgid), time.perf_counter()
        await fn()
        t1, c1, s1 = time.perf_counter(), time.process_time(), _group_cpu(pgid)
        out[op] = ((t1 - t0) / count * 1e6, (c1 - c0) / count * 1e6, (s1 - s0) / count * 1e6)

    async def create():
        for k in keys:
            await b.put(k, b"x" * 100)

    async def stat():
        for k in keys:
            await b.head(k)

    async def rename():
        for k in keys:
            await b.rename(k, k + ".r")

    async def listing():
        cursor = None
        listed = 0
        while True:
            page = await b.list(prefix=f"r{run}/", limit=1000, cursor=cursor)
            listed += len(page.objects)
            if not page.truncated:
                break
            cursor = page.cursor
        assert listed == n, listed

    async def delete():
        for k in keys:
            await b.delete(k + ".r")

    await measure("create", create, n)
    await measure("stat", stat, n)
    await measure("rename", rename, n)
    await measure("list", listing, n)
    await measure("delete", delete, n)
    return out


def engine_part(args: argparse.Namespace, base: str, url: str, pgid: int | None) -> None:
    import trio
    from r2fs.engine.store import Cluster

    results: dict[str, list[dict[str, tuple]]] = {"lmdb": [], "postgresql": []}
    clusters = {"lmdb": Cluster.init(os.path.join(base, "lmdb")),
                "postgresql": Cluster.init(os.path.join(base, "pg"), meta_url=url)}
    try:
        async def main():
            for c in clusters.values():
                await c.create_bucket(BUCKET)
            for run in range(args.runs):
                for name, c in clusters.items():
                    results[name].append(await _engine_run(c, args.objects, run,
                                                           pgid if name == "postgresql" else None))
        trio.run(main)
    finally:
        for c in clusters.values():
            c.close()

    def med(name: str, op: str, i: int) -> float:
        return statistics.median(r[op][i] for r in results[name])

    print(f"\nmetadata engines, {args.objects} objects, one operation at a time "
          f"(median of {args.runs}; CPU = this process / PostgreSQL server, per op)")
    head = (f"{'op':<7} | {'LMDB µs/op':>10} | {'LMDB ops/s':>10} | {'PG µs/op':>9} | "
            f"{'PG ops/s':>9} | {'PG/LMDB':>7} | {'PG CPU client+server µs/op':>27}")
    print(head)
    print("-" * len(head))
    for op in OPS:
        lm, pg = med("lmdb", op, 0), med("postgresql", op, 0)
        cpu = f"{med('postgresql', op, 1):.0f} + {med('postgresql', op, 2):.0f}"
        print(f"{op:<7} | {lm:>10,.0f} | {1e6 / lm:>10,.0f} | {pg:>9,.0f} | {1e6 / pg:>9,.0f} | "
              f"{pg / lm:>6.1f}x | {cpu:>27}")
    print("  anchors (JuiceFS, µs): create 570/1,570/1,209, getattr 87/530/306, rename "
          "728/2,735/1,419 (Redis/MySQL/TiKV); targets: create <= 1,000, stat <= 300")


def mount_part(args: argparse.Namespace, base: str, url: str) -> None:
    import bench_mount

    table = Table(f"mount small files, {args.files} x {args.file_size // KiB} KiB (median of "
                  f"{args.runs}): PostgreSQL cluster (column r2fs) beside LMDB cluster (column "
                  "native); ratio = PG/LMDB")
    figures: dict[str, dict[str, list[float]]] = {}
    with bench_mount.Mounted(os.path.join(base, "mpg"), args.options, meta_url=url) as pg, \
            bench_mount.Mounted(os.path.join(base, "mlmdb"), args.options) as lm:
        for i in range(args.runs):
            for side, root in (("pg", pg.path), ("lmdb", lm.path)):
                progress(f"mount on {side}: {args.files} small files (run {i + 1})")
                for metric, value in bench_mount.small(args, root, i):
                    figures.setdefault(metric, {}).setdefault(side, []).append(value)
    for metric, sides in figures.items():
        table.add(metric, statistics.median(sides["pg"]), statistics.median(sides["lmdb"]),
                  "files/s")
    table.note("target: small-file write >= 50% of LMDB")
    table.note(describe_machine())
    table.print()


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    server = None
    with temp_dir(args.dir, "r2fs-bench-meta-") as base:
        try:
            if args.meta:
                urls = [args.meta, args.meta]
                if not args.no_mount:
                    raise SystemExit("with --meta give --no-mount too (the mount part needs a "
                                     "second empty database)")
                pgid = None
            else:
                from pgserver import PgServer
                progress("starting PostgreSQL (fsync on)")
                server = PgServer(fsync=True)
                urls = [server.new_database(), server.new_database()]
                with open(os.path.join(server.data, "postmaster.pid")) as f:
                    pgid = int(f.readline())
            if not args.no_engine:
                engine_part(args, base, urls[0], pgid)
            if not args.no_mount:
                mount_part(args, base, urls[1])
        finally:
            if server is not None:
                server.close()
