"""Durability commands: scrub, node add/drain/remove/replace, rebalance, meta compact.

    r2fs scrub [--repair] [--bucket B] [--rate MB/s] [--restart]
    r2fs node list
    r2fs node add PATH [--region R] [--no-rebalance] [--rate MB/s]
    r2fs node drain ID [--rate MB/s]
    r2fs node remove ID
    r2fs node replace ID PATH [--rate MB/s]
    r2fs rebalance [--rate MB/s]
    r2fs meta compact

Long operations draw a progress bar with ETA on a terminal (stderr), always
print a summary line, and can be killed and rerun: they continue where they
stopped. Exit status: 0 when the data is healthy (or was repaired / moved),
1 otherwise. The logic is in `r2fs.engine` (scrub, rebalance, nodeops,
metacompact); this module parses, calls and prints.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable

from . import cluster_path
from .engine_cmds import BadArgument
from .progress import Progress, format_size

if TYPE_CHECKING:  # engine modules load inside the commands (fast `r2fs --help`)
    from ..engine.chunkwalk import WalkProgress
    from ..engine.rebalance import MoveReport
    from ..engine.store import Cluster


def _rate(text: str) -> float:
    """--rate in MB/s (10^6 bytes) of logical data -> bytes/s."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise BadArgument(f"invalid rate {text!r}: MB/s, a number > 0")
    return value * 1e6


def _open(args: argparse.Namespace) -> "Cluster":
    from ..engine.store import Cluster
    return Cluster.open(cluster_path(args))


class _Bar:
    """A Progress bar fed by a walk's cumulative figures (created on the first report)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Progress | None = None

    def __call__(self, prog: "WalkProgress") -> None:
        if self.bar is None:
            done = prog.done_bytes if prog.done_chunks else 0
            self.bar = Progress(self.label, prog.total_bytes, done=done, eta=True)
        self.bar.update(prog.done_bytes - self.bar.done)

    def close(self, finished: bool) -> None:
        if self.bar is not None:
            self.bar.close(finished=finished)


def _with_bar(label: str, fn: Callable[[Callable[["WalkProgress"], None]], object]) -> object:
    bar = _Bar(label)
    try:
        result = fn(bar)
    except BaseException:
        bar.close(False)
        raise
    bar.close(True)
    return result


def _rebalance_line(what: str, r: "MoveReport") -> str:
    rate = r.bytes / r.seconds / 1e6 if r.seconds > 0 else 0.0
    return (f"{what}: {r.chunks_moved} chunks changed placement, {r.shards_moved} shards moved "
            f"({format_size(r.shard_bytes)}), {r.shards_rebuilt} rebuilt from parity, "
            f"{r.failed} failed, {r.seconds:.1f} s ({rate:.1f} MB/s of data)"
            + (" (resumed)" if r.resumed else ""))


def cmd_scrub(args: argparse.Namespace) -> int:
    from ..engine.scrub import scrub
    with _open(args) as c:
        report = _with_bar("scrub", lambda bar: scrub(
            c, repair=args.repair, bucket=args.bucket, rate=args.rate, fresh=args.restart,
            progress=bar))
    for p in report.problems:
        print(f"  {p}")
    rate = report.bytes / report.seconds / 1e6 if report.seconds > 0 else 0.0
    state = "healthy" if report.damaged_chunks == 0 else (
        "repaired" if report.ok else "DAMAGED")
    print(f"scrub {state}: {report.chunks} chunks ({format_size(report.bytes)}) checked"
          f"{' (resumed)' if report.resumed else ''}, {report.damaged_chunks} damaged "
          f"({report.damaged_shards} shards), {report.repaired_chunks} repaired "
          f"({report.repaired_shards} shards), {report.unrepaired_chunks} not repaired, "
          f"{report.lost_chunks} lost; {report.seconds:.1f} s, {rate:.1f} MB/s")
    return 0 if report.ok else 1


def cmd_node_list(args: argparse.Namespace) -> int:
    with _open(args) as c:
        print(f"{'ID':<6} {'REGION':<10} {'STATE':<9} {'UP':<4} PATH")
        for n in c.config.nodes:
            up = "yes" if c.nodes[n.id].available() else "NO"
            print(f"{n.id:<6} {n.region:<10} {n.state:<9} {up:<4} {n.path}")
    return 0


def _run_rebalance(c: "Cluster", args: argparse.Namespace, what: str) -> int:
    from ..engine import rebalance
    report = _with_bar("rebalance", lambda bar: rebalance.rebalance(c, rate=args.rate, progress=bar))
    print(_rebalance_line(what, report))
    return 0 if report.failed == 0 else 1


def cmd_node_add(args: argparse.Namespace) -> int:
    from ..engine import nodeops
    with _open(args) as c:
        nid = nodeops.add_node(c, args.path, args.region)
        print(f"added node {nid} at {args.path}" + (f" (region {args.region})" if args.region else ""))
        if args.no_rebalance:
            print("run `r2fs rebalance` to move shards onto it")
            return 0
        return _run_rebalance(c, args, f"rebalanced onto {nid}")


def cmd_node_drain(args: argparse.Namespace) -> int:
    from ..engine import metasnap, nodeops
    with _open(args) as c:
        nodeops.drain_node(c, args.id)
        status = _run_rebalance(c, args, f"drained {args.id}")
        left = nodeops.shards_on(c, args.id)
        if not left and metasnap.list_snapshots(c).snapshots:
            # a fresh snapshot on the remaining nodes: the newest one must not need the node
            info = metasnap.take_snapshot(c)
            if info is not None:
                print(f"metadata snapshot {info.id} taken on {', '.join(info.placement)}")
    if left:
        print(f"node {args.id} still holds shards of {left} chunks; run the drain again")
        return 1
    print(f"node {args.id} holds no data any more: `r2fs node remove {args.id}` can remove it")
    return status


def cmd_node_remove(args: argparse.Namespace) -> int:
    from ..engine import nodeops
    with _open(args) as c:
        path = nodeops.remove_node(c, args.id)
    print(f"removed node {args.id}; its directory {path} is no longer used and may be deleted")
    return 0


def cmd_node_replace(args: argparse.Namespace) -> int:
    from ..engine import nodeops, rebalance
    with _open(args) as c:
        old = nodeops.replace_node(c, args.id, args.path)
        report = _with_bar(f"rebuild {args.id}", lambda bar: rebalance.rebuild_node(
            c, args.id, rate=args.rate, progress=bar))
    rate = report.bytes / report.seconds / 1e6 if report.seconds > 0 else 0.0
    print(f"rebuilt node {args.id} at {args.path} (was {old}): {report.chunks} chunks checked, "
          f"{report.shards_rebuilt} shards rebuilt ({format_size(report.shard_bytes)}), "
          f"{report.failed} failed; {report.seconds:.1f} s, {rate:.1f} MB/s of data"
          + (" (resumed)" if report.resumed else ""))
    return 0 if report.failed == 0 else 1


def cmd_rebalance(args: argparse.Namespace) -> int:
    with _open(args) as c:
        return _run_rebalance(c, args, "rebalanced")


def cmd_meta_compact(args: argparse.Namespace) -> int:
    from ..engine import metacompact
    before, after = metacompact.compact(cluster_path(args))
    print(f"metadata compacted: {format_size(before)} -> {format_size(after)}")
    return 0


def _meta_group(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction | None:
    """The `r2fs meta` action group (meta_cmds registers it), if it exists yet."""
    meta = subparsers.choices.get("meta")
    if meta is None:
        return None
    for action in meta._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def register(subparsers: argparse._SubParsersAction) -> None:
    rate_help = "throttle to this many MB/s of data (default: as fast as the disks go)"
    p = subparsers.add_parser(
        "scrub", help="verify every shard's header and checksum (and --repair damage)",
        description="Read every shard of every chunk and verify it. Resumable: a killed "
                    "scrub continues where it stopped. Exit 0 if healthy or repaired, else 1.")
    p.add_argument("--repair", action="store_true",
                   help="rewrite missing or corrupt shards from k good ones")
    p.add_argument("--bucket", metavar="B", default=None, help="only chunks of bucket B")
    p.add_argument("--rate", type=_rate, default=None, metavar="MB_PER_S", help=rate_help)
    p.add_argument("--restart", action="store_true",
                   help="start from the beginning even if a scrub was interrupted")
    p.set_defaults(func=cmd_scrub)

    p = subparsers.add_parser("rebalance", help="move shards whose rendezvous placement changed")
    p.add_argument("--rate", type=_rate, default=None, metavar="MB_PER_S", help=rate_help)
    p.set_defaults(func=cmd_rebalance)

    node = subparsers.add_parser("node", help="add, drain, remove or replace node directories")
    sub = node.add_subparsers(dest="node_command", metavar="ACTION", parser_class=type(node))
    sub.required = True
    s = sub.add_parser("list", help="the nodes and their states")
    s.set_defaults(func=cmd_node_list)
    s = sub.add_parser("add", help="add a node directory, then rebalance onto it")
    s.add_argument("path", metavar="PATH")
    s.add_argument("--region", metavar="R", default=None)
    s.add_argument("--no-rebalance", action="store_true", help="only add it to cluster.toml")
    s.add_argument("--rate", type=_rate, default=None, metavar="MB_PER_S", help=rate_help)
    s.set_defaults(func=cmd_node_add)
    s = sub.add_parser("drain", help="move every shard off a node (then it can be removed)")
    s.add_argument("id", metavar="ID")
    s.add_argument("--rate", type=_rate, default=None, metavar="MB_PER_S", help=rate_help)
    s.set_defaults(func=cmd_node_drain)
    s = sub.add_parser("remove", help="remove a drained node (refused while data needs it)")
    s.add_argument("id", metavar="ID")
    s.set_defaults(func=cmd_node_remove)
    s = sub.add_parser("replace", help="rebuild a dead node's shards onto a new directory")
    s.add_argument("id", metavar="ID")
    s.add_argument("path", metavar="PATH")
    s.add_argument("--rate", type=_rate, default=None, metavar="MB_PER_S", help=rate_help)
    s.set_defaults(func=cmd_node_replace)

    group = _meta_group(subparsers)
    if group is not None:
        s = group.add_parser("compact", help="compact the metadata (LMDB) in place; "
                                             "refused while mounts or gateways run")
        s.set_defaults(func=cmd_meta_compact)



