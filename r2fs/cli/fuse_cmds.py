"""`r2fs mount` and `r2fs umount`.

`mount` without --foreground starts the mount daemon as a detached child
(its own session, output to a log file it names) and returns only once the
mount point answers, like other FUSE tools. The daemon records its pid under
a per-user runtime directory keyed by the mount point, so `umount` can wait
for its final flush to finish before returning.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time

from ..engine.errors import R2fsError
from . import UsageError, cluster_path

READY_TIMEOUT = 60.0
EXIT_TIMEOUT = 300.0


class MountFailed(R2fsError):
    pass


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    path = os.path.join(base, f"r2fs-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _tag(mountpoint: str) -> str:
    return hashlib.sha1(os.path.realpath(mountpoint).encode()).hexdigest()[:16]


def pid_file(mountpoint: str) -> str:
    return os.path.join(runtime_dir(), f"mount-{_tag(mountpoint)}.pid")


def log_file(mountpoint: str) -> str:
    return os.path.join(runtime_dir(), f"mount-{_tag(mountpoint)}.log")


def daemon_pid(mountpoint: str) -> int | None:
    """Pid of the mount daemon serving `mountpoint`, if it is alive."""
    try:
        with open(pid_file(mountpoint)) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def is_r2fs_mount(mountpoint: str) -> bool:
    """Whether /proc/self/mountinfo lists `mountpoint` as a fuse.r2fs mount."""
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                mp = fields[4].encode().decode("unicode_escape")
                if mp == target and right.split()[0] == "fuse.r2fs":
                    return True
    except OSError:
        pass
    return False


def cmd_mount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a directory (create it first)")
    if is_r2fs_mount(mountpoint):
        raise MountFailed(f"{mountpoint} is already an r2fs mount (r2fs umount {mountpoint})")
    if args.foreground:
        return _foreground(args, mountpoint)
    return _background(args, mountpoint)


def _configure(args: argparse.Namespace):
    """The engine set-up a mount shares with the gateway: read tiers, write mode."""
    from .cache_cmds import apply_cache_arguments
    from .uploads_cmds import apply_write_arguments

    def configure(cluster) -> None:
        apply_write_arguments(cluster, args)
        apply_cache_arguments(cluster, args)
    return configure


def _foreground(args: argparse.Namespace, mountpoint: str) -> int:
    from ..fuse.mount import run

    pidf = pid_file(mountpoint)

    def ready() -> None:
        with open(pidf, "w") as f:
            f.write(f"{os.getpid()}\n")

    try:
        cache_dir = os.path.abspath(args.cache_dir) if args.cache_dir else None
        return run(cluster_path(args), args.bucket, mountpoint, args.options, cache_dir, ready,
                   _configure(args))
    finally:
        try:
            with open(pidf) as f:
                if int(f.read().strip() or 0) == os.getpid():
                    os.unlink(pidf)
        except (OSError, ValueError):
            pass


def _background(args: argparse.Namespace, mountpoint: str) -> int:
    extra: list[str] = []
    if args.cache_dir:
        extra += ["--cache-dir", os.path.abspath(args.cache_dir)]
    if args.options:
        extra += ["-o", args.options]
    if args.region:
        extra += ["--region", args.region]
    if args.write_mode:
        extra += ["--write-mode", args.write_mode]
    from .cache_cmds import cache_argv
    extra += cache_argv(args)
    pid, log = start_background(cluster_path(args), args.bucket, mountpoint, extra)
    print(f"mounted bucket {args.bucket} at {mountpoint} (pid {pid}, log: {log})")
    print(f"unmount with: r2fs umount {mountpoint}")
    return 0


def start_background(cluster_dir: str, bucket: str, mountpoint: str,
                     extra: list[str] | None = None) -> tuple[int, str]:
    """Start a mount daemon and wait until the mount answers: (pid, log file)."""
    mountpoint = os.path.abspath(mountpoint)
    log = log_file(mountpoint)
    cmd = [sys.executable, "-m", "r2fs.cli", "--cluster", cluster_dir, "mount", bucket,
           mountpoint, "--foreground", *(extra or [])]
    with open(log, "ab") as out:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, close_fds=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            raise MountFailed(f"mount failed: {_last_line(log)} (log: {log})")
        if is_r2fs_mount(mountpoint) and daemon_pid(mountpoint) == child.pid:
            try:
                os.stat(mountpoint)
                return child.pid, log
            except OSError:
                pass
        time.sleep(0.05)
    child.terminate()
    raise MountFailed(f"mount did not answer within {READY_TIMEOUT:.0f}s (log: {log})")


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        return lines[-1] if lines else "no output"
    except OSError:
        return "no log"


def cmd_umount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    if not is_r2fs_mount(mountpoint):
        raise MountFailed(f"{mountpoint} is not an r2fs mount")
    pid = daemon_pid(mountpoint)
    flags = "-uz" if args.lazy or pid is None else "-u"
    res = subprocess.run(["fusermount3", flags, mountpoint], capture_output=True, text=True)
    if res.returncode != 0:
        reason = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        raise MountFailed(f"cannot unmount {mountpoint}: {reason} (close open files, or use --lazy)")
    if pid is not None and not wait_for_exit(pid, EXIT_TIMEOUT):
        raise MountFailed(f"unmounted, but the mount process {pid} is still flushing")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("mount", help="mount a bucket as a folder (FUSE)",
                              description="Mount BUCKET at MOUNTPOINT. Returns once the mount "
                                          "answers; the daemon logs to a file it names.")
    p.add_argument("bucket")
    p.add_argument("mountpoint")
    p.add_argument("--foreground", action="store_true", help="stay in front, log to stderr")
    p.add_argument("--cache-dir", metavar="D", default=None,
                   help="local directory for the read cache and write staging (default: CLUSTER/cache)")
    p.add_argument("-o", dest="options", metavar="OPTIONS", default=None,
                   help="comma-separated: attr_timeout=S, entry_timeout=S, poll_interval=S, "
                        "read_ahead_kb=N (default 4096), writeback, debug, and libfuse "
                        "options such as allow_other, ro")
    from .cache_cmds import add_cache_arguments
    from .uploads_cmds import add_write_arguments
    add_cache_arguments(p)
    add_write_arguments(p)
    p.set_defaults(func=cmd_mount)

    p = subparsers.add_parser("umount", help="unmount an r2fs mount (flushes first)")
    p.add_argument("mountpoint")
    p.add_argument("--lazy", action="store_true", help="detach even if files are open")
    p.set_defaults(func=cmd_umount)


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for process `pid` to be gone; True if it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.05)
    return False
