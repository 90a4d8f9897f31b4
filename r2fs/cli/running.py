"""What r2fs runs on this machine: mount daemons and S3 gateways, found in /proc.

`r2fs status` lists them (mount point, bucket, pid, log file), `r2fs mount`
uses them to tell a live mount's staging folder from a dead one's, and
`r2fs demo --stop` to find the gateway it started. Nothing is registered
anywhere: a process is what its command line says it is, so a daemon killed
with -9 simply stops being listed, and nothing stale is left to clean.

A process counts when it runs the r2fs command line (`r2fs ...`,
`python -m r2fs ...`) as `mount ... --foreground` (what a background mount
runs as its daemon) or `serve`. Its cluster is its `--cluster`, else the
$R2FS_CLUSTER or HOME of its environment, as the command line itself decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: `python -m X` module names that are the r2fs command line
_MODULES = ("r2fs", "r2fs.cli")


@dataclass
class RunningMount:
    pid: int
    cluster: str  # absolute, as the daemon resolved it
    bucket: str
    mountpoint: str
    cache_base: str  # --cache-dir, else CLUSTER/cache: where its staging folder is
    log: str  # where its output goes: a file, or a terminal


@dataclass
class RunningGateway:
    pid: int
    cluster: str
    listen: str  # HOST:PORT
    log: str


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _r2fs_args(argv: list[str]) -> list[str] | None:
    """The arguments after the program, if `argv` runs the r2fs command line."""
    if not argv:
        return None
    if os.path.basename(argv[0]) == "r2fs":
        return argv[1:]
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1] in _MODULES and "python" in os.path.basename(argv[0]):
            return argv[i + 2:]
    if len(argv) > 1 and os.path.basename(argv[1]) == "r2fs" and "python" in os.path.basename(argv[0]):
        return argv[2:]  # `python .venv/bin/r2fs ...`
    return None


def _environ(pid: int) -> dict[str, str]:
    raw = _read(f"/proc/{pid}/environ") or b""
    out = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            out[name.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _log_of(pid: int) -> str:
    try:
        target = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return "?"
    return target if target.startswith("/") else "-"


def _processes() -> list[tuple[int, list[str]]]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        raw = _read(f"/proc/{name}/cmdline")
        if not raw or b"r2fs" not in raw:
            continue
        args = _r2fs_args([a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")])
        if args:
            found.append((int(name), args))
    return found


def _parser():
    """The r2fs parser, reading a command line without exiting on what it cannot read."""
    from . import build_parser

    parser = build_parser()

    def error(message: str):  # a process whose command line we cannot read is not listed
        raise ValueError(message)
    for p in _all_parsers(parser):
        p.error = error  # type: ignore[method-assign]
    return parser


def _all_parsers(parser):
    import argparse

    yield parser
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def _cluster_of(pid: int, given: str | None, cwd: str) -> str:
    """The cluster directory a process uses, decided as the command line decides it."""
    if given:
        return os.path.normpath(os.path.join(cwd, given))
    env = _environ(pid)
    if env.get("R2FS_CLUSTER"):
        return os.path.normpath(os.path.join(cwd, env["R2FS_CLUSTER"]))
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".local", "share", "r2fs")


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _listing() -> list[RunningMount | RunningGateway]:
    """Every r2fs mount daemon and gateway on this machine."""
    out: list[RunningMount | RunningGateway] = []
    candidates = [(pid, args) for pid, args in _processes() if "mount" in args or "serve" in args]
    if not candidates:
        return out
    parser = _parser()
    for pid, args in candidates:
        try:
            ns, _ = parser.parse_known_args(args)
        except (ValueError, SystemExit):
            continue
        cwd = _cwd(pid) or "/"
        cluster = _cluster_of(pid, ns.cluster, cwd)
        if ns.command == "mount" and ns.foreground:
            base = ns.cache_dir or os.path.join(cluster, "cache")
            out.append(RunningMount(pid, cluster, ns.bucket,
                                    os.path.normpath(os.path.join(cwd, ns.mountpoint)),
                                    os.path.normpath(os.path.join(cwd, base)), _log_of(pid)))
        elif ns.command == "serve":
            out.append(RunningGateway(pid, cluster, ns.listen, _log_of(pid)))
    return out


def running_mounts(cluster: str | None = None) -> list[RunningMount]:
    """Live mount daemons on this machine (of `cluster` only, if given)."""
    return [m for m in _listing() if isinstance(m, RunningMount) and _same(m.cluster, cluster)]


def running_gateways(cluster: str | None = None) -> list[RunningGateway]:
    """Live `r2fs serve` processes on this machine (of `cluster` only, if given)."""
    return [g for g in _listing() if isinstance(g, RunningGateway) and _same(g.cluster, cluster)]


def _same(a: str, b: str | None) -> bool:
    return b is None or os.path.realpath(a) == os.path.realpath(b)


def running_section(cluster: str) -> dict[str, list[dict[str, object]]]:
    """The `running here` section of `r2fs status` (ClusterStatus.extra): the mount
    daemons and gateways of `cluster` on this machine, with where each one logs."""
    mounts = [{"mount point": m.mountpoint, "bucket": m.bucket, "pid": m.pid, "log": m.log}
              for m in sorted(running_mounts(cluster), key=lambda m: m.mountpoint)]
    gateways = [{"endpoint": f"http://{g.listen}", "pid": g.pid, "log": g.log}
                for g in sorted(running_gateways(cluster), key=lambda g: g.listen)]
    return {"mounts": mounts, "gateways": gateways}
