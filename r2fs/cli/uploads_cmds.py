"""Local uploads on the command line: `r2fs replicate`, `r2fs sync [BUCKET]`.

Plus the write flags shared by `mount` and `serve` (`--region`,
`--write-mode`): `add_write_arguments(parser)` declares them and
`apply_write_arguments(cluster, args)` configures the cluster's writer, so
both commands speak the same words and check them the same way.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from . import UsageError, cluster_path
from .progress import format_size

if TYPE_CHECKING:
    from ..engine.replicator import Backlog
    from ..engine.store import Cluster

EXIT_STUCK = 1


def add_write_arguments(parser: argparse.ArgumentParser) -> None:
    """`--region` and `--write-mode`, for `mount` and `serve`."""
    parser.add_argument("--region", metavar="REGION", default=None,
                        help="the region this process runs in (default: the bucket's home)")
    parser.add_argument("--write-mode", type=_write_mode, metavar="sync|local", default=None,
                        help="sync: acknowledge once all shards are on the nodes; local: once "
                             "the chunk is durable in local staging, replicated in the "
                             "background (default: sync at the bucket's home region, local "
                             "elsewhere)")


def _write_mode(text: str) -> str:
    from ..engine.writer import WRITE_MODES

    if text not in WRITE_MODES:
        raise argparse.ArgumentTypeError(f"invalid write mode {text!r}: use {' or '.join(WRITE_MODES)}")
    return text


def apply_write_arguments(cluster: Cluster, args: argparse.Namespace) -> None:
    """Configure `cluster.writer` from the flags (UsageError for an unknown region).

    The process should also run `r2fs.engine.replicator.run_replicator` for
    as long as it serves, so local writes (its own and others') drain.
    """
    region = getattr(args, "region", None)
    mode = getattr(args, "write_mode", None)
    regions = cluster.writer.regions
    if region is not None and region not in regions:
        raise UsageError(f"--region {region!r} is not a region of this cluster "
                         f"(regions: {', '.join(sorted(regions))})")
    cluster.writer.configure(mode=mode, region=region)


# --- r2fs replicate ---------------------------------------------------------------------------

def cmd_replicate(args: argparse.Namespace) -> int:
    import trio

    from ..engine.store import Cluster

    with Cluster.open(cluster_path(args)) as cluster:
        return trio.run(_replicate, cluster, args)


async def _replicate(cluster: Cluster, args: argparse.Namespace) -> int:
    import trio

    from ..engine.replicator import backlog, replicate_all

    before = await trio.to_thread.run_sync(backlog, cluster, args.bucket)
    if before.chunks == 0:
        print("nothing to replicate: the backlog is empty")
        return 0
    started = time.monotonic()
    report = await replicate_all(cluster, bucket=args.bucket)
    after = await trio.to_thread.run_sync(backlog, cluster, args.bucket)
    print(f"replicated {report.replicated} chunk(s) in {time.monotonic() - started:.2f} s; "
          f"{after.chunks} left ({format_size(after.bytes)})")
    if report.busy:
        print(f"{report.busy} chunk(s) are being replicated by another running process")
    if report.failed:
        print(f"{report.failed} chunk(s) failed and will be retried:", file=sys.stderr)
        for line in report.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_STUCK
    return 0


# --- r2fs sync ----------------------------------------------------------------------------------

def cmd_sync(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds (got {args.timeout:g})")
    import trio

    from ..engine.store import Cluster

    with Cluster.open(cluster_path(args)) as cluster:
        if args.bucket is not None:
            trio.run(cluster.head_bucket, args.bucket)  # NoSuchBucket: one line, exit 1
        return trio.run(_sync, cluster, args)


async def _sync(cluster: Cluster, args: argparse.Namespace) -> int:
    """Wait for the backlog to drain; replicate here when no running process does."""
    import trio

    from ..engine.replicator import Replicator, backlog, live_replicators, replicate_all

    what = f"bucket {args.bucket}" if args.bucket else "the cluster"
    rep = Replicator(cluster)
    current = await trio.to_thread.run_sync(backlog, cluster, args.bucket)
    if current.chunks:
        print(f"waiting for {current.chunks} chunk(s) ({format_size(current.bytes)}) of {what} "
              "to reach the nodes", file=sys.stderr)
    best = current.chunks
    progress_at = time.monotonic()
    first_pass = True
    while current.chunks:
        others = [r for r in await trio.to_thread.run_sync(live_replicators, cluster)
                  if r.get("owner") != rep.owner]
        if not others:
            # nobody else is working (crashed writers, a one-shot client): do it here
            await replicate_all(cluster, bucket=args.bucket, force=first_pass, replicator=rep)
            first_pass = False
        else:
            await trio.sleep(0.2)
        current = await trio.to_thread.run_sync(backlog, cluster, args.bucket)
        if current.chunks < best:
            best, progress_at = current.chunks, time.monotonic()
        elif time.monotonic() - progress_at > args.timeout:
            _report_stuck(current, others, what, args.timeout)
            return EXIT_STUCK
        if current.chunks:
            await trio.sleep(0.2)
    print(f"{what}: every acknowledged write is on the nodes (backlog empty)")
    return 0


def _report_stuck(b: Backlog, others: list[dict], what: str, timeout: float) -> None:
    err = sys.stderr
    print(f"r2fs: {what}: {b.chunks} chunk(s) ({format_size(b.bytes)}) not replicated after "
          f"{timeout:g} s without progress; oldest waiting {b.oldest_age:.0f} s", file=err)
    if others:
        print(f"  replicating: {len(others)} running process(es) "
              f"({', '.join(str(o.get('pid')) for o in others)})", file=err)
    if not b.stuck:
        print("  no replication attempt has failed yet (are the replicators overloaded?)", file=err)
    for s in sorted(b.stuck, key=lambda s: -s.age)[:10]:
        where = f"{s.bucket}: " if s.bucket else ""
        print(f"  {where}chunk {s.chunk[:16]}: {s.attempts} attempt(s), next in "
              f"{s.next_attempt_in:.0f} s, last error: {s.error}", file=err)
    if len(b.stuck) > 10:
        print(f"  ... and {len(b.stuck) - 10} more", file=err)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replicate", help="replicate locally staged writes to the nodes, once",
        description="One pass of the background replicator, for a cluster with no mount or "
                    "gateway running: every chunk acknowledged from local staging is "
                    "erasure-coded onto its home nodes. Exit status 1 if some failed.")
    p.add_argument("--bucket", default=None, help="only chunks written to this bucket")
    p.set_defaults(func=cmd_replicate)

    p = subparsers.add_parser(
        "sync", help="wait until every locally staged write has reached the nodes",
        description="Wait until the replication backlog (of BUCKET, or of the whole cluster) is "
                    "empty, replicating here when no running process does; if it makes no "
                    "progress for --timeout seconds, report what is stuck and why (exit 1).")
    p.add_argument("bucket", nargs="?", default=None, metavar="BUCKET")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="give up after this long without progress (default 60)")
    p.set_defaults(func=cmd_sync)
