"""Engine: pipeline stages on 4 MiB chunks, and put/get of a 1 GiB stream beside a plain file.

(a) Each stage of the data path alone, in MB/s of chunk plaintext: keyed
    BLAKE2b (chunk id), AES-256-GCM seal and open, RS encode, RS decode with
    all data shards and with 2 shards lost, shard files written (k+m files,
    O_DIRECT + fsync each) and read back (verify + decode) from disk (cold)
    and from the page cache (hot). Stages have no native counterpart; they
    show where a put or get spends its time.
(c) small objects (`--small`, on by default): N concurrent writers each put
    4 KiB objects (inlined in the manifest: one LMDB commit per put, batched
    by group commit), then get them back, in objects/s, beside the same
    number of concurrent threads writing 4 KiB plain files with fsync (and
    reading them back). Not an issue target: a guard against regressing the
    group-commit figure while tuning the big-put path.
(b) `bucket.put` of an N-byte async stream and `bucket.get` of it through the
    store API, beside the native baseline from the same run: the same bytes
    written to one plain file on the same disk with fsync, and read back,
    with the page cache dropped before every read (root only). Targets on
    the 2-core reference machine: put >= 40%, get >= 50% of native.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import tempfile
import time
from typing import Iterator

import trio
import xxhash

from benchlib import (MiB, DataStream, Table, describe_machine, drop_caches, filesystem_of,
                      mb_per_s, median_runs, native_read, native_write, parse_size, progress,
                      temp_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                        help="bytes put and got through the store (default 1GiB)")
    parser.add_argument("--piece", type=parse_size, default=MiB,
                        help="size of the pieces the put stream yields (default 1MiB)")
    parser.add_argument("--chunk", type=parse_size, default=4 * MiB,
                        help="chunk size for the stage figures (default 4MiB)")
    parser.add_argument("--stage-bytes", type=parse_size, default=parse_size("256MiB"),
                        help="bytes pushed through each stage per run (default 256MiB)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--m", type=int, default=2)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--stages-only", action="store_true", help="only the stage figures")
    what.add_argument("--store-only", action="store_true", help="only put/get through the store")
    what.add_argument("--small-only", action="store_true", help="only the small-object figures")
    parser.add_argument("--small-count", type=int, default=2000,
                        help="small objects per run (default 2000)")
    parser.add_argument("--small-size", type=parse_size, default=4096,
                        help="small object size (default 4KiB)")
    parser.add_argument("--small-writers", type=int, default=16,
                        help="concurrent small-object writers (default 16)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the (untimed) check that get returned the bytes put")


# --- (a) stages -----------------------------------------------------------------------------

def run_stages(args: argparse.Namespace) -> Table:
    from r2fs.engine.chunks import ChunkStore
    from r2fs.engine.crypto import open_chunk, seal_chunk
    from r2fs.engine.erasure import Erasure
    from r2fs.engine.keys import MasterKey
    from r2fs.engine.nodes import LocalNode, place

    k, m, size = args.k, args.m, args.chunk
    iterations = max(1, args.stage_bytes // size)
    master = MasterKey.from_bytes(os.urandom(32))
    plain = os.urandom(size)
    cid = master.chunk_id(plain)
    sealed = seal_chunk(master, cid, plain)
    ec = Erasure(k, m)
    payloads = dict(enumerate(ec.encode(sealed)))
    all_data = {i: p for i, p in payloads.items() if i < k}
    lost_two = {i: p for i, p in payloads.items() if i >= min(2, m)}  # shards 0 and 1 lost
    table = Table(f"engine stages: {size // MiB} MiB chunks, RS({k},{m}), "
                  f"{iterations} chunks per run, median of {args.runs}")

    def stage(name: str, fn, n_iter: int = iterations, nbytes: int = size,
              prepare=lambda: None) -> None:
        def one(_: int) -> float:
            prepare()
            start = time.perf_counter()
            for _ in range(n_iter):
                fn()
            return mb_per_s(n_iter * nbytes, time.perf_counter() - start)

        fn()  # warm up (allocator, key schedules)
        med, _ = median_runs(one, args.runs)
        table.add(name, med)
        progress(f"{name}: {med:,.0f} MB/s")

    stage("hash: keyed BLAKE2b-256", lambda: master.chunk_id(plain))
    stage("seal: AES-256-GCM", lambda: seal_chunk(master, cid, plain))
    stage("open: AES-256-GCM", lambda: open_chunk(master, cid, sealed))
    stage(f"RS encode ({k}+{m} shards)", lambda: ec.encode_parts(sealed))
    stage("RS decode, all data shards", lambda: ec.decode(all_data, len(sealed)))
    stage(f"RS decode, {min(2, m)} shards lost", lambda: ec.decode(lost_two, len(sealed)))

    with temp_dir(args.dir, "r2fs-bench-stages-") as base:
        nodes = {}
        for i in range(k + m):
            os.mkdir(os.path.join(base, f"n{i}"))
            nodes[f"n{i}"] = LocalNode(f"n{i}", os.path.join(base, f"n{i}"))
        store = ChunkStore(master, nodes, k, m)
        placement = place(cid, list(nodes), k + m)
        io_iter = max(1, iterations // 4)
        counter = iter(range(1, 1 << 30))

        def write() -> None:
            store.write_shards(cid, next(counter), sealed, placement)

        stage(f"shard files: encode + write {k + m} (O_DIRECT, fsync)", write, io_iter)
        gens = list(range(1, next(counter)))
        files = [os.path.join(nodes[node_id].path, store.shard_names(cid, gen)[i])
                 for gen in gens for i, node_id in enumerate(placement)]

        def read() -> None:
            gen = gens.pop()
            gens.insert(0, gen)
            store.read_sealed(cid, gen, placement, len(sealed))

        def evict() -> None:
            for path in files:
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)

        def warm() -> None:
            for path in files:
                with open(path, "rb") as f:
                    f.read()

        stage("shard files: read + verify + decode, cold", read, io_iter, prepare=evict)
        stage("shard files: read + verify + decode, hot", read, io_iter, prepare=warm)
        stage("chunk read (shards + open), hot",
              lambda: store.read(cid, gens[-1], placement, len(sealed)), io_iter, prepare=warm)
    table.note(describe_machine())
    return table


# --- (b) put / get through the store ---------------------------------------------------------

async def _store_runs(args: argparse.Namespace, base: str, table: Table) -> None:
    from r2fs.engine.store import Cluster

    cluster = Cluster.init(os.path.join(base, "cluster"), k=args.k, m=args.m,
                           nodes=max(6, args.k + args.m))
    try:
        await cluster.create_bucket("bench")
        bucket = cluster.bucket("bench")
        puts, gets, nwrites, nreads = [], [], [], []
        cpu = {"put": 0.0, "get": 0.0, "native write": 0.0, "native read": 0.0}
        dropped = True
        for run in range(args.runs):
            stream = DataStream(args.size, seed=run + 1, piece=args.piece)
            native_path = os.path.join(base, f"native-{run}")

            drop_caches()
            with cpu_time(cpu, "native write"):
                nwrites.append(mb_per_s(args.size, native_write(native_path, stream)))
            drop_caches()
            start = time.perf_counter()
            with cpu_time(cpu, "put"):
                await bucket.put(f"obj-{run}", stream.apieces())
            puts.append(mb_per_s(args.size, time.perf_counter() - start))

            dropped &= drop_caches()
            with cpu_time(cpu, "native read"):
                seconds, nbytes = native_read(native_path)
            nreads.append(mb_per_s(nbytes, seconds))
            dropped &= drop_caches()
            start = time.perf_counter()
            got = 0
            with cpu_time(cpu, "get"):
                body = await bucket.get(f"obj-{run}")
                async for piece in body:
                    got += len(piece)
            gets.append(mb_per_s(got, time.perf_counter() - start))
            if got != args.size:
                raise SystemExit(f"get returned {got} bytes, put {args.size}")
            os.unlink(native_path)
            progress(f"run {run + 1}: put {puts[-1]:,.0f} MB/s (native {nwrites[-1]:,.0f}), "
                     f"get {gets[-1]:,.0f} MB/s (native {nreads[-1]:,.0f})")

        median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        table.add("put (stream -> shards, fsync)", median(puts), median(nwrites))
        table.add("get (shards -> stream)", median(gets), median(nreads))
        table.note("runs: put " + ", ".join(f"{x:,.0f}" for x in puts)
                   + " | native write " + ", ".join(f"{x:,.0f}" for x in nwrites)
                   + " | get " + ", ".join(f"{x:,.0f}" for x in gets)
                   + " | native read " + ", ".join(f"{x:,.0f}" for x in nreads) + " (MB/s)")
        gib = args.size * args.runs / (1 << 30)
        table.note("process CPU seconds per GiB (user+sys, all threads; robust to a busy "
                   "machine): " + ", ".join(f"{k} {v / gib:.2f}" for k, v in cpu.items()))
        if not dropped:
            table.note("page cache NOT dropped before reads (needs root): reads may be cached")
        else:
            table.note("page cache dropped before every read")
        if not args.no_verify:
            want = xxhash.xxh3_128()
            for piece in DataStream(args.size, seed=1, piece=args.piece).pieces():
                want.update(piece)
            have = xxhash.xxh3_128()
            async for piece in await bucket.get("obj-0"):
                have.update(piece)
            ok = want.digest() == have.digest()
            table.note("verified: get returned exactly the bytes put" if ok
                       else "VERIFY FAILED: get returned different bytes")
        table.note(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
    finally:
        cluster.close()


@contextlib.contextmanager
def cpu_time(acc: dict[str, float], key: str) -> Iterator[None]:
    """Add the process's CPU time (user + system, all threads) spent inside to acc[key]."""
    before = os.times()
    try:
        yield
    finally:
        after = os.times()
        acc[key] += (after.user - before.user) + (after.system - before.system)


def run_store(args: argparse.Namespace) -> Table:
    table = Table(f"engine put/get: {args.size / MiB:,.0f} MiB stream in {args.piece // 1024} KiB "
                  f"pieces, RS({args.k},{args.m}), median of {args.runs}")
    with temp_dir(args.dir, "r2fs-bench-engine-") as base:
        table.note(f"disk: {filesystem_of(base)} ({base}); {describe_machine()}")
        trio.run(_store_runs, args, base, table)
    return table


# --- (c) small objects, concurrent ---------------------------------------------------------

async def _small_runs(args: argparse.Namespace, base: str) -> tuple[list[float], list[float],
                                                                       float]:
    from r2fs.engine.store import Cluster

    cluster = Cluster.init(os.path.join(base, "cluster"), k=args.k, m=args.m,
                           nodes=max(6, args.k + args.m))
    puts, gets = [], []
    cpu = 0.0
    try:
        await cluster.create_bucket("bench")
        bucket = cluster.bucket("bench")
        n, writers = args.small_count, args.small_writers
        for run in range(args.runs):
            bodies = [p for p in DataStream(n * args.small_size, 1000 + run,
                                            args.small_size).pieces()]

            async def put_some(w: int) -> None:
                for i in range(w, n, writers):
                    await bucket.put(f"r{run}/o{i:06d}", bodies[i])

            async def get_some(w: int) -> None:
                for i in range(w, n, writers):
                    data = await (await bucket.get(f"r{run}/o{i:06d}")).read()
                    if data != bodies[i]:
                        raise SystemExit(f"small get r{run}/o{i} returned different bytes")

            for fn, out in ((put_some, puts), (get_some, gets)):
                before = os.times()
                start = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for w in range(writers):
                        nursery.start_soon(fn, w)
                out.append(n / (time.perf_counter() - start))
                after = os.times()
                if fn is put_some:
                    cpu += (after.user - before.user) + (after.system - before.system)
            progress(f"small run {run + 1}: put {puts[-1]:,.0f}/s, get {gets[-1]:,.0f}/s")
    finally:
        cluster.close()
    return puts, gets, cpu / (args.small_count * args.runs)


def _native_small(args: argparse.Namespace, base: str, run: int) -> tuple[float, float]:
    """(files/s written with fsync, files/s read) by `small_writers` threads."""
    from concurrent.futures import ThreadPoolExecutor

    n, writers = args.small_count, args.small_writers
    bodies = list(DataStream(n * args.small_size, 1000 + run, args.small_size).pieces())
    d = os.path.join(base, f"native-small-{run}")
    os.mkdir(d)

    def write_some(w: int) -> None:
        for i in range(w, n, writers):
            fd = os.open(os.path.join(d, f"o{i:06d}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, bodies[i])
                os.fsync(fd)
            finally:
                os.close(fd)

    def read_some(w: int) -> None:
        for i in range(w, n, writers):
            with open(os.path.join(d, f"o{i:06d}"), "rb") as f:
                f.read()

    rates = []
    for fn in (write_some, read_some):
        start = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(fn, range(writers)))
        rates.append(n / (time.perf_counter() - start))
    return rates[0], rates[1]


def run_small(args: argparse.Namespace) -> Table:
    table = Table(f"engine small objects: {args.small_count} x {args.small_size // 1024} KiB, "
                  f"{args.small_writers} concurrent, median of {args.runs}")
    with temp_dir(args.dir, "r2fs-bench-small-") as base:
        puts, gets, cpu = trio.run(_small_runs, args, base)
        natives = [_native_small(args, base, run) for run in range(args.runs)]
        median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        table.add("small put", median(puts), median([w for w, _ in natives]), "obj/s")
        table.add("small get", median(gets), median([r for _, r in natives]), "obj/s")
        table.note("native = plain files written with fsync (read back from the page cache, as "
                   "r2fs gets from its LMDB pages) by as many threads")
        table.note(f"process CPU per small put: {cpu * 1000:.2f} ms; {describe_machine()}")
    return table


def run(args: argparse.Namespace) -> None:
    if args.dir is None:
        args.dir = tempfile.gettempdir()
    tables = []
    if args.small_only:
        tables.append(run_small(args))
    else:
        if not args.store_only:
            tables.append(run_stages(args))
        if not args.stages_only:
            tables.append(run_store(args))
        if not args.stages_only and not args.store_only:
            tables.append(run_small(args))
    for t in tables:
        print()
        t.print()
