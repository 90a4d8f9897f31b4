"""The `r2fs` command line.

Subcommands live in small modules (`engine_cmds`, `fuse_cmds`, `s3_cmds`, ...),
each exposing `register(subparsers)`; a subcommand sets `func(args) -> int`.
To add a module, append its name to `COMMAND_MODULES`.

Start-up stays fast (`r2fs --help`, `r2fs ls`) because building the parser
imports every command module: **a command module's top level imports only the
standard library and other `r2fs.cli` modules** (and `r2fs.engine.errors`,
which is light). The engine, FUSE, S3, trio and every third-party package are
imported inside the functions that run a command, e.g.::

    def cmd_scrub(args):
        from ..engine.scrub import scrub      # here, not at the top
        ...

(type hints can still name them under `if TYPE_CHECKING:`).
`tests/fuse/test_cli_ops.py` checks this rule for every registered module.

This module also owns the one place where errors become a single stderr line
and an exit status: no traceback ever reaches a user (set R2FS_DEBUG=1 to see
one). Errors raised inside trio nurseries arrive as ExceptionGroups; they are
unwrapped here to the one error that caused them.
"""

from __future__ import annotations

import sys


def _interrupted_while_starting(kind, value, tb) -> None:  # noqa: ANN001 - sys.excepthook
    """Ctrl-C while the command line is still being imported: the same one line as later."""
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("r2fs: interrupted\n")
    else:
        _excepthook(kind, value, tb)


# Until this module is imported, a Ctrl-C would end the `r2fs` script with a
# KeyboardInterrupt traceback. The hook is only left in place if that happens.
_excepthook, sys.excepthook = sys.excepthook, _interrupted_while_starting
try:
    import argparse
    import importlib
    import os
except KeyboardInterrupt:
    raise
else:
    sys.excepthook = _excepthook

#: Modules that contribute subcommands, in help order. Missing ones are skipped.
COMMAND_MODULES = ("engine_cmds", "demo_cmds", "fuse_cmds", "s3_cmds", "cache_cmds", "uploads_cmds",
                   "meta_cmds", "durability_cmds", "bench_cmds")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad arguments found after parsing (exit status 2)."""


def default_cluster_location() -> str:
    """The one cluster directory r2fs creates by itself on first use."""
    return os.path.join(os.path.expanduser("~"), ".local", "share", "r2fs")


def default_cluster_path() -> str:
    env = os.environ.get("R2FS_CLUSTER")
    if env:
        return env
    return default_cluster_location()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # noqa: F821 - typing not imported (start-up)
        # argparse prints usage + message; keep it to one line.
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def _version() -> str:
    from .. import __version__
    return f"r2fs {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="r2fs", description="An R2-style object store you can mount as a folder.")
    parser.add_argument("--cluster", metavar="DIR", default=None,
                        help="cluster directory (default: $R2FS_CLUSTER or ~/.local/share/r2fs)")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.register(sub)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand without a description its one-line help as one, so
    that `r2fs COMMAND --help` always says what the command does."""
    for action in parser._actions:  # noqa: SLF001 - argparse has no API for this walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {choice.dest: choice.help for choice in action._choices_actions}  # noqa: SLF001
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    text = helps[name]
                    sub.description = text[0].upper() + text[1:] + "."
                _describe(sub)


def cluster_path(args: argparse.Namespace) -> str:
    return args.cluster or default_cluster_path()


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # bare `r2fs`: what it can do, not "arguments are required"
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that stops tracebacks
        return _report(exc)


def _report(exc: BaseException) -> int:
    """The one stderr line and the exit status for an error that ended a command."""
    exc = root_cause(exc)
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, UsageError):
        print(f"r2fs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        # a second SIGINT must not cut this line into a traceback: `timeout -s INT`
        # signals the command and then its whole process group, so two arrive
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("r2fs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        # Reader of our stdout went away (e.g. `r2fs get ... - | head`).
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_ERROR
    from ..engine.errors import R2fsError
    if isinstance(exc, R2fsError):
        print(f"r2fs: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        print(f"r2fs: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    if os.environ.get("R2FS_DEBUG"):
        raise exc
    print(f"r2fs: internal error: {type(exc).__name__}: {exc} (set R2FS_DEBUG=1 for details)",
          file=sys.stderr)
    return EXIT_INTERNAL


def root_cause(exc: BaseException) -> BaseException:
    """The error that matters in an ExceptionGroup (trio nurseries wrap every error).

    Cancellations are side effects of the real error, so they are dropped; of
    what is left, Ctrl-C wins (the user asked to stop), then the first error.
    A group of nothing but cancellations stays as it is (an internal error).
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []

    def flatten(group: BaseExceptionGroup) -> None:
        for e in group.exceptions:
            flatten(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)
    flatten(exc)
    real = [e for e in leaves if type(e).__name__ != "Cancelled"]
    for e in real:
        if isinstance(e, KeyboardInterrupt):
            return e
    return real[0] if real else exc
