"""The `r2fs` command line.

Subcommands live in small modules (`engine_cmds`, `fuse_cmds`, `s3_cmds`, ...),
each exposing `register(subparsers)`; a subcommand sets `func(args) -> int`.
This module owns the one place where errors become a single stderr line and
an exit status: no traceback ever reaches a user (set R2FS_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..engine.errors import R2fsError

#: Modules that contribute subcommands, in help order. Missing ones are skipped.
COMMAND_MODULES = ("engine_cmds", "demo_cmds", "fuse_cmds", "s3_cmds", "cache_cmds", "uploads_cmds", "meta_cmds", "bench_cmds")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad arguments found after parsing (exit status 2)."""


def default_cluster_path() -> str:
    env = os.environ.get("R2FS_CLUSTER")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".local", "share", "r2fs")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
        # argparse prints usage + message; keep it to one line.
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="r2fs", description="An R2-style object store you can mount as a folder.")
    parser.add_argument("--cluster", metavar="DIR", default=None,
                        help="cluster directory (default: $R2FS_CLUSTER or ~/.local/share/r2fs)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def cluster_path(args: argparse.Namespace) -> str:
    return args.cluster or default_cluster_path()


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"r2fs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except R2fsError as exc:
        print(f"r2fs: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("r2fs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Reader of our stdout went away (e.g. `r2fs get ... - | head`).
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_ERROR
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"r2fs: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that stops tracebacks
        if os.environ.get("R2FS_DEBUG"):
            raise
        print(f"r2fs: internal error: {type(exc).__name__}: {exc} (set R2FS_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_INTERNAL
