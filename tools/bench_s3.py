"""S3 gateway: boto3 small-object ops/s and 1 GiB up/down, beside moto's server and native file I/O.

(a) Small objects: N PUTs then N GETs of 4 KiB objects from 16 client threads
    (one boto3 client each, default settings), in ops/s, against the r2fs
    gateway (`r2fs serve`) and against moto's S3 server (`moto_server`, a
    Python S3 implementation keeping objects in memory) started in the same
    run on 127.0.0.1. Target: r2fs >= 3x moto.
(b) One large object (default 1 GiB): up with boto3's transfer manager
    (multipart, as tools upload big files) and down as one streamed GET,
    in MB/s, beside the same bytes written to / read from a plain file
    (fsync; page cache dropped before reads when root) and beside moto.
    Target: r2fs GET >= 40% of the native read.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from benchlib import (KiB, MiB, DataStream, Table, describe_machine, drop_caches, filesystem_of,
                      mb_per_s, median_runs, native_read, native_write, parse_size, progress, temp_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--objects", type=int, default=1000, help="small objects per run (default 1000)")
    parser.add_argument("--object-size", type=parse_size, default=4 * KiB, help="small object size (4KiB)")
    parser.add_argument("--threads", type=int, default=16, help="client threads for small objects (16)")
    parser.add_argument("--client-procs", type=int, default=4,
                        help="processes the client threads are spread over, so that boto3's own CPU "
                             "cost under one GIL does not cap the figure (default 4)")
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="large object (1GiB)")
    parser.add_argument("--no-moto", action="store_true", help="skip the moto comparison")
    parser.add_argument("--no-large", action="store_true", help="skip the large-object figures")
    parser.add_argument("--no-small", action="store_true", help="skip the small-object figures")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench s3: {what} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench s3: {what} did not start listening")


class Server:
    """A server subprocess on 127.0.0.1 plus a boto3 client factory for it."""

    def __init__(self, name: str, argv: list[str], port: int, key_id: str, secret: str,
                 region: str = "auto") -> None:
        self.name, self.port, self.key_id, self.secret, self.region = name, port, key_id, secret, region
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(port, self.proc, name)

    def client(self, pool: int = 10):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.port}", region_name=self.region,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
                            config=Config(s3={"addressing_style": "path"}, max_pool_connections=pool,
                                          retries={"max_attempts": 1}))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_r2fs(base: str) -> Server:
    cluster = os.path.join(base, "cluster")
    r2fs = [sys.executable, "-m", "r2fs", "--cluster", cluster]
    subprocess.run([*r2fs, "init"], check=True, capture_output=True)
    out = subprocess.run([*r2fs, "keys", "create"], check=True, capture_output=True, text=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    port = _free_port()
    return Server("r2fs", [*r2fs, "serve", "--listen", f"127.0.0.1:{port}"], port,
                  env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


def start_moto() -> Server:
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(exe):
        sys.exit("bench s3: moto_server not found; pip install 'moto[server]' (or use --no-moto)")
    return Server("moto", [exe, "-H", "127.0.0.1", "-p", str(port)], port, "testing", "testing",
                  region="us-east-1")  # moto has no region "auto"


def _client_worker(job: tuple) -> tuple[float, float]:
    """In a client process: run `op` on keys [lo, hi) from `threads` threads;
    returns (wall seconds, CPU seconds of this client process) of the timed part."""
    endpoint, region, key_id, secret, bucket, op, lo, hi, threads, size = job
    import boto3
    from botocore.config import Config
    clients = [boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=key_id,
                            aws_secret_access_key=secret,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
               for _ in range(threads)]
    payload = os.urandom(size)

    def one(i: int) -> None:
        c = clients[i % threads]
        if op == "put":
            c.put_object(Bucket=bucket, Key=f"o/{i:06d}", Body=payload)
        elif len(c.get_object(Bucket=bucket, Key=f"o/{i:06d}")["Body"].read()) != size:
            raise RuntimeError(f"short object o/{i:06d}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(lo, lo + threads)))  # warm-up: connections, first requests
        start, cpu = time.perf_counter(), time.process_time()
        list(pool.map(one, range(lo, hi)))
        return time.perf_counter() - start, time.process_time() - cpu


#: An ASGI app on the same HTTP server as the gateway that answers every PUT with
#: 200 and every GET with 4 KiB, doing nothing else: the ceiling the HTTP server
#: and the boto3 clients leave on this machine, whatever the gateway does.
NULL_APP = """
import sys, trio
from hypercorn.config import Config
from hypercorn.trio import serve
BODY = b"x" * int(sys.argv[2])
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = BODY if scope["method"] == "GET" else b""
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-length", str(len(body)).encode()), (b"etag", b'"0"')]})
    await send({"type": "http.response.body", "body": body})
cfg = Config(); cfg.bind = ["127.0.0.1:" + sys.argv[1]]; cfg.accesslog = None; cfg.errorlog = None
trio.run(serve, app, cfg)
"""


def start_null(object_size: int) -> Server:
    port = _free_port()
    return Server("http-ceiling", [sys.executable, "-c", NULL_APP, str(port), str(object_size)], port, "x", "y")


def _cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of process `pid` and of its live descendants (server workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, cpu seconds)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo.extend(child for child, (parent, _) in stats.items() if parent == p)
    return total


@dataclass
class Small:
    """One small-object phase: throughput and CPU milliseconds per operation."""
    ops: float
    server_ms: float
    client_ms: float


def small_objects(server: Server, args: argparse.Namespace, run: int, pool) -> dict[str, Small]:
    """{"put": Small, "get": Small} for one run; the clock is the slowest client process's."""
    bucket = f"small-{run}"
    server.client().create_bucket(Bucket=bucket)
    procs = max(1, min(args.client_procs, args.threads))
    per = args.threads // procs
    out = {}
    for op in ("put", "get"):
        jobs = [(f"http://127.0.0.1:{server.port}", server.region, server.key_id, server.secret, bucket, op,
                 i * args.objects // procs, (i + 1) * args.objects // procs, per, args.object_size)
                for i in range(procs)]
        # The server's CPU includes the clients' warm-up requests (procs x per of them).
        before = _cpu_seconds(server.proc.pid)
        results = pool.map(_client_worker, jobs)
        server_cpu = _cpu_seconds(server.proc.pid) - before
        seconds = max(r[0] for r in results)
        out[op] = Small(args.objects / seconds, 1000 * server_cpu / (args.objects + procs * per),
                        1000 * sum(r[1] for r in results) / args.objects)
    return out


def large_object(server: Server, path: str, size: int, run: int) -> tuple[float, float]:
    """(upload MB/s, streamed GET MB/s) of the file at `path`."""
    from boto3.s3.transfer import TransferConfig
    s3 = server.client()
    bucket = f"large-{run}"
    s3.create_bucket(Bucket=bucket)
    cfg = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4)
    start = time.perf_counter()
    s3.upload_file(path, bucket, "large", Config=cfg)
    up = mb_per_s(size, time.perf_counter() - start)
    drop_caches()
    start = time.perf_counter()
    got = 0
    for piece in s3.get_object(Bucket=bucket, Key="large")["Body"].iter_chunks(MiB):
        got += len(piece)
    down = mb_per_s(size, time.perf_counter() - start)
    if got != size:
        raise RuntimeError(f"{server.name}: GET returned {got} bytes, expected {size}")
    s3.delete_object(Bucket=bucket, Key="large")
    return up, down


def run(args: argparse.Namespace) -> None:
    with temp_dir(args.dir, "r2fs-bench-s3-") as base:
        progress(f"machine: {describe_machine()}; disk {filesystem_of(base)}")
        servers: list[Server] = []
        ceiling = None
        try:
            r2fs = start_r2fs(base)
            servers.append(r2fs)
            moto = None if args.no_moto else start_moto()
            if moto:
                servers.append(moto)
            ceiling = start_null(args.object_size)
            table = Table(f"s3: boto3 {boto3_version()} against the r2fs gateway "
                          f"({'moto ' + moto_version() if moto else 'no moto'} in the 'native' column "
                          "for small objects)")
            figures: dict[str, dict[str, Small]] = {}
            with multiprocessing.get_context("spawn").Pool(max(1, min(args.client_procs, args.threads))) as pool:
                for srv in [] if args.no_small else [*servers, ceiling]:
                    results = []
                    for i in range(args.runs):
                        progress(f"{srv.name}: {args.objects} x {args.object_size} B puts/gets, run {i + 1}")
                        results.append(small_objects(srv, args, i, pool))
                    figures[srv.name] = {op: Small(*(statistics.median(getattr(r[op], f) for r in results)
                                                     for f in ("ops", "server_ms", "client_ms")))
                                         for op in ("put", "get")}
            if figures:
                m = figures.get("moto")
                threads = f"{args.threads} threads in {max(1, min(args.client_procs, args.threads))} procs"
                for op in ("put", "get"):
                    table.add(f"{op.upper()} {args.object_size // KiB} KiB, {threads}", figures["r2fs"][op].ops,
                              m[op].ops if m else None, unit="ops/s")
                table.note("small objects: the comparison column is moto's server, not a native directory")
                c = figures["http-ceiling"]
                table.note(f"HTTP ceiling, same clients against an empty ASGI app on hypercorn: "
                           f"PUT {c['put'].ops:.0f} ops/s, GET {c['get'].ops:.0f} ops/s")
                for name, f in figures.items():
                    table.note(f"CPU ms/op, {name}: server PUT {f['put'].server_ms:.2f} GET {f['get'].server_ms:.2f}; "
                               f"boto3 clients PUT {f['put'].client_ms:.2f} GET {f['get'].client_ms:.2f}")
            ceiling.stop()
            if not args.no_large:
                path = os.path.join(base, "large.bin")
                stream = DataStream(args.size, seed=7)
                native_w, _ = median_runs(lambda i: mb_per_s(args.size, native_write(path, stream)), args.runs)

                def native_r(i: int) -> float:
                    drop_caches()
                    seconds, n = native_read(path)
                    return mb_per_s(n, seconds)
                native_rd, _ = median_runs(native_r, args.runs)
                large = {}
                for srv in servers:
                    results = []
                    for i in range(args.runs):
                        progress(f"{srv.name}: {args.size // MiB} MiB up and down, run {i + 1}")
                        results.append(large_object(srv, path, args.size, i))
                    large[srv.name] = (sorted(r[0] for r in results)[len(results) // 2],
                                       sorted(r[1] for r in results)[len(results) // 2])
                size = f"{args.size // MiB} MiB"
                table.add(f"upload {size} (multipart 64 MiB x4) vs native write", large["r2fs"][0], native_w)
                table.add(f"GET {size} (one stream) vs native read", large["r2fs"][1], native_rd)
                if "moto" in large:
                    table.note(f"moto, same run: upload {large['moto'][0]:.0f} MB/s, "
                               f"GET {large['moto'][1]:.0f} MB/s")
                if not drop_caches():
                    table.note("page cache NOT dropped before reads (needs root)")
            table.note(f"median of {args.runs} runs; client and server share this machine's CPUs; "
                       f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            table.print()
        finally:
            for srv in [*servers, ceiling]:
                if srv is not None:
                    srv.stop()


def boto3_version() -> str:
    import boto3
    return boto3.__version__


def moto_version() -> str:
    try:
        import moto
        return moto.__version__
    except ImportError:
        return "?"
