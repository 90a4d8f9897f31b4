"""`r2fs meta ...`: metadata snapshots on the command line.

    r2fs meta snapshot [--keep N]                 snapshot the metadata onto the nodes now
    r2fs meta snapshots                           list the snapshots on the nodes
    r2fs meta verify [ID]                         read back every shard (a scrub)
    r2fs meta restore [--snapshot ID] [--force]   rebuild meta/ from a snapshot
    r2fs meta migrate --to postgresql://...       move the metadata into PostgreSQL (copy + verify)

Everything but `snapshot` works without `meta/` (that is when it is needed):
it uses only cluster.toml, master.key and the node directories. The logic is
in `r2fs.engine.metasnap`; this module parses, calls and prints.
"""

from __future__ import annotations

import argparse
import time

from ..engine.errors import DataUnavailable
from . import cluster_path
from .progress import format_size


def _keep(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def cmd_snapshot(args: argparse.Namespace) -> int:
    from ..engine import metasnap
    from ..engine.store import Cluster

    with Cluster.open(cluster_path(args)) as cluster:
        info = metasnap.take_snapshot(cluster, keep=args.keep)
    assert info is not None  # wait=True: never skipped
    print(f"snapshot {info.id}: seq {info.seq}, metadata {format_size(info.db_size)} in "
          f"{info.pieces} piece{'s' if info.pieces != 1 else ''}, RS({info.k},{info.m}) "
          f"{format_size(info.stored)} on {', '.join(info.placement)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..engine import metasnap

    listing = metasnap.list_snapshots(cluster_path(args))
    if listing.snapshots:
        print(f"{'ID':<26} {'CREATED (UTC)':<19} {'SEQ':>8} {'METADATA':>10} {'STORED':>10} "
              f"{'PIECES':>6} {'RS':<7} COPIES")
    for s in listing.snapshots:
        print(f"{s.id:<26} {_when(s.created):<19} {s.seq:>8} {format_size(s.db_size):>10} "
              f"{format_size(s.stored):>10} {s.pieces:>6} {f'{s.k}+{s.m}':<7} {len(s.copies)}")
    for sid, why in sorted(listing.problems.items()):
        print(f"{sid:<26} UNUSABLE: {why}")
    if not listing.snapshots and not listing.problems:
        print("no metadata snapshots")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..engine import metasnap

    listing = metasnap.verify(cluster_path(args), args.snapshot)
    damaged = failed = 0
    for r in listing.reports:
        if r.error:
            state = f"NOT RESTORABLE: {r.error}"
            failed += 1
        elif r.damaged:
            state = f"{len(r.damaged)} damaged or missing shards, restorable"
        else:
            state = "ok"
        print(f"{r.snapshot.id}: {state}")
        for d in r.damaged:
            print(f"  {d}")
        damaged += len(r.damaged)
    for sid, why in sorted(listing.problems.items()):
        print(f"{sid}: UNUSABLE: {why}")
        failed += 1
    if not listing.reports and not listing.problems:
        print("no metadata snapshots")
    if failed:
        raise DataUnavailable(f"{failed} metadata snapshots cannot be restored")
    if damaged:
        raise DataUnavailable(f"{damaged} damaged or missing snapshot shards "
                              "(still restorable; the next snapshot writes fresh ones)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ..engine import metasnap

    report = metasnap.restore(cluster_path(args), snapshot_id=args.snapshot, force=args.force,
                              check=not args.no_check)
    s = report.snapshot
    for why in report.skipped:
        print(f"skipped unreadable snapshot {why}")
    print(f"restored metadata from snapshot {s.id} (taken {_when(s.created)} UTC, seq {s.seq}, "
          f"{format_size(s.db_size)})")
    if report.damaged:
        print(f"worked around {len(report.damaged)} damaged or missing shards:")
        for d in report.damaged:
            print(f"  {d}")
    if report.previous:
        print(f"the previous metadata was moved to {report.previous}")
    check = report.check
    if check is not None:
        if check.lost:
            print(f"{check.lost} of {check.chunks} chunks named by the snapshot lost their data "
                  f"after it was taken; {check.objects_affected} objects will not read, e.g. "
                  f"{', '.join(check.examples)}")
        else:
            print(f"all {check.chunks} chunks named by the snapshot have their data")
    print("changes made after the snapshot are not in the restored metadata; "
          "run `r2fs gc` later to remove the data they left behind")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..engine.meta.migrate import migrate_to_postgresql

    report = migrate_to_postgresql(cluster_path(args), args.to)
    total = sum(report.counts.values())
    parts = ", ".join(f"{n} {t}" for t, n in report.counts.items() if n)
    print(f"copied and verified {total} metadata entries ({parts or 'none'}) into {report.url} "
          f"in {report.seconds:.1f}s; cluster.toml now uses it; the LMDB metadata was moved to "
          f"{report.old_meta}")
    print("other hosts: copy cluster.toml and master.key (node paths must reach the same "
          "nodes from there)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "meta", help="metadata snapshots: take, list, verify, restore",
        description="The metadata (LMDB, which also holds small objects inline) is "
                    "snapshotted encrypted and erasure-coded onto the nodes.")
    sub = p.add_subparsers(dest="meta_command", metavar="ACTION", parser_class=type(p))
    sub.required = True

    s = sub.add_parser("snapshot", help="snapshot the metadata onto the nodes now")
    s.add_argument("--keep", type=_keep, default=None, metavar="N",
                   help="snapshots to keep, this one included (default: [meta_snapshots] keep "
                        "in cluster.toml, else 3)")
    s.set_defaults(func=cmd_snapshot)

    ls = sub.add_parser("snapshots", help="list the metadata snapshots on the nodes")
    ls.set_defaults(func=cmd_list)

    v = sub.add_parser("verify", help="read back every shard of the snapshots (exit 1 on damage)")
    v.add_argument("snapshot", nargs="?", default=None, metavar="ID")
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser("restore", help="rebuild meta/ from a snapshot (stop mounts and gateways first)")
    r.add_argument("--snapshot", metavar="ID", default=None,
                   help="the snapshot to restore (default: the newest readable one)")
    r.add_argument("--force", action="store_true",
                   help="restore even over a readable meta/ (it is moved aside, never deleted)")
    r.add_argument("--no-check", action="store_true",
                   help="skip looking for the data of every chunk afterwards (a stat per shard)")
    r.set_defaults(func=cmd_restore)

    mg = sub.add_parser("migrate", help="move the metadata from LMDB into a PostgreSQL database "
                                        "(stop mounts and gateways first)")
    mg.add_argument("--to", required=True, metavar="URL",
                    help="postgresql://[user[:password]@]host[:port]/database (an empty database)")
    mg.set_defaults(func=cmd_migrate)
