"""Read-cache options for long-running commands, and `r2fs cache`.

`mount` and `serve` call `add_cache_arguments(parser)` when they build their
parser and `apply_cache_arguments(cluster, args)` once the cluster is open,
so both take the same flags:

    --cache-dir D        L1 root (default CLUSTER/cache; L1 lives in D/slotN)
    --cache-size SIZE    L1 bound, e.g. 512MiB; 0 turns L1 off
                         (default: 2GiB at most, leaving the disk >= 10% free)
    --peer URL           a peer cache (repeatable; default: [pops] in cluster.toml)
    --peer-listen ADDR   answer peers on HOST:PORT (a mount's own small server;
                         a gateway answers peers on its S3 address instead)
    --no-readahead       no prefetching for sequential readers: the engine
                         fetches no chunks ahead, and a mount leaves the
                         kernel's read-ahead window at its default (128 KiB)
                         instead of enlarging it (unless -o read_ahead_kb=N)

`r2fs cache status` shows the figures of the running mounts and gateways;
`r2fs cache clear` empties an L1 directory not in use.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from . import UsageError, cluster_path
from .engine_cmds import BadArgument, _value_lines, open_cluster, parse_size

if TYPE_CHECKING:
    from ..engine.store import Cluster


def _peer_url(text: str) -> str:
    from ..engine.peers import PeerError, normalize_url

    try:
        return normalize_url(text)
    except PeerError as e:
        raise BadArgument(str(e)) from None


def _listen(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise BadArgument(f"--peer-listen {text!r}: expected HOST:PORT (port 0 picks a free one)")
    return text


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """The read-cache flags, described once for `mount` and `serve` (a `--cache-dir`
    the command already has is kept)."""
    group = parser.add_argument_group("read cache")
    if "--cache-dir" not in parser._option_string_actions:  # noqa: SLF001 - argparse has no API
        group.add_argument("--cache-dir", metavar="DIR", default=None,
                           help="local directory for the read cache (L1) and, for a mount, the "
                                "staging of open files (default: CLUSTER/cache)")
    group.add_argument("--cache-size", metavar="SIZE", type=parse_size, default=None,
                       help="read cache bound, e.g. 512MiB; 0 = no local cache "
                            "(default: 2GiB at most, leaving the disk >= 10%% free)")
    group.add_argument("--peer", metavar="URL", type=_peer_url, action="append", default=None,
                       help="a peer cache http://HOST:PORT to ask before the nodes (repeatable)")
    group.add_argument("--peer-listen", metavar="HOST:PORT", type=_listen, default=None,
                       help="answer peer caches on this address (mounts; a gateway answers "
                            "on its own address)")
    group.add_argument("--no-readahead", action="store_true",
                       help="no prefetching for sequential readers: no chunks fetched "
                            "ahead, and a mount keeps the kernel's read-ahead window at its "
                            "default (128 KiB) unless -o read_ahead_kb=N is given")


def cache_argv(args: argparse.Namespace) -> list[str]:
    """The flags again, for a command that re-executes itself (a background mount)."""
    out: list[str] = []
    if getattr(args, "cache_size", None) is not None:
        out += ["--cache-size", str(args.cache_size)]
    for url in getattr(args, "peer", None) or []:
        out += ["--peer", url]
    if getattr(args, "peer_listen", None):
        out += ["--peer-listen", args.peer_listen]
    if getattr(args, "no_readahead", False):
        out.append("--no-readahead")
    return out


def apply_cache_arguments(cluster: Cluster, args: argparse.Namespace, *,
                          self_url: str | None = None) -> None:
    """Configure the cluster's read tiers from the flags.

    `self_url`: the address this process answers peers on when that is not
    `--peer-listen` (a gateway passes its own http://HOST:PORT).
    """
    cache_dir = getattr(args, "cache_dir", None)
    cluster.reader.configure(
        cache_dir=os.path.abspath(cache_dir) if cache_dir else None,
        cache_size=getattr(args, "cache_size", None),
        peers=getattr(args, "peer", None),
        readahead=not getattr(args, "no_readahead", False),
        peer_listen=getattr(args, "peer_listen", None),
        self_url=self_url)


# --- r2fs cache ---------------------------------------------------------------------------

def _cmd_status(args: argparse.Namespace) -> int:
    with open_cluster(args) as cluster:
        section = cluster.reader.status()
    for line in _value_lines(section, ""):
        print(line)
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.cache_dir or os.path.join(cluster_path(args), "cache"))
    if not os.path.isdir(root):
        raise UsageError(f"no cache directory at {root}")
    from ..engine.cache import clear_unused

    cleared, busy = clear_unused(root)
    note = f"; {busy} in use by running processes, left alone" if busy else ""
    print(f"cleared {cleared} cache slot(s) under {root}{note}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cache", help="the read cache: figures of running processes, clear")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    sub.required = True
    s = sub.add_parser("status", help="hits, misses and bytes per tier of running mounts/gateways")
    s.set_defaults(func=_cmd_status)
    s = sub.add_parser("clear", help="empty the L1 slots not used by a running process")
    s.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="cache directory (default: CLUSTER/cache)")
    s.set_defaults(func=_cmd_clear)

