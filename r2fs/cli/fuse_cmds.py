"""`r2fs mount` and `r2fs umount`.

`mount` without --foreground starts the mount daemon as a detached child
(its own session, output to a log file it names) and returns only once the
mount point answers, like other FUSE tools. The daemon records its pid under
a per-user runtime directory keyed by the mount point, so `umount` can wait
for its final flush to finish before returning.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import shlex
import shutil
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
    except (OSError, ValueError):
        return None
    return pid if is_r2fs_process(pid) else None


def is_r2fs_process(pid: int) -> bool:
    """Whether `pid` is alive and an r2fs process (not a stranger that reused the pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"r2fs" in f.read()
    except OSError:
        return False


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


def is_dead_mount(mountpoint: str) -> bool:
    """An r2fs mount whose daemon is gone: the kernel answers ENOTCONN
    ("Transport endpoint is not connected") for everything under it."""
    if not is_r2fs_mount(mountpoint):
        return False
    try:
        os.statvfs(mountpoint)  # always asks the daemon (a stat may be answered from cache)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def clear_dead_mount(mountpoint: str) -> bool:
    """Detach a dead r2fs mount at `mountpoint` and forget its pid file: True if
    there was one. What its files had closed is in the cluster's close journal
    and published by the next mount of the cluster (r2fs.fuse.journal)."""
    if not is_dead_mount(mountpoint):
        return False
    res = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True)
    if res.returncode != 0 and is_r2fs_mount(mountpoint):
        reason = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        raise MountFailed(f"{mountpoint} is a dead r2fs mount and cannot be cleared: {reason}")
    with contextlib.suppress(OSError):
        os.unlink(pid_file(mountpoint))
    return True


def clean_leftovers(cache_base: str) -> None:
    """Remove what killed mounts left behind: pid files of daemons that are gone,
    and their open-file staging folders (`fuse-staging-PID-*`) under `cache_base`.

    A staging folder holds only working copies of files that were open when
    the daemon died (what was closed is in the close journal), so nothing is
    lost. A folder is removed when its daemon (PID) is no r2fs process any
    more; one without a pid in its name (older mounts) only when no live
    mount daemon uses `cache_base` at all.
    """
    from .running import running_mounts

    for name in os.listdir(runtime_dir()):
        if name.startswith("mount-") and name.endswith(".pid"):
            path = os.path.join(runtime_dir(), name)
            try:
                with open(path) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if not is_r2fs_process(pid):
                with contextlib.suppress(OSError):
                    os.unlink(path)
    base = os.path.realpath(cache_base)
    try:
        names = [n for n in os.listdir(base) if n.startswith("fuse-staging-")]
    except OSError:
        return
    shared = None  # whether a live daemon uses this cache dir (looked up only if needed)
    for name in names:
        pid = name.split("-")[2]
        if pid.isdigit():
            dead = not is_r2fs_process(int(pid))
        else:
            if shared is None:
                shared = any(os.path.realpath(m.cache_base) == base for m in running_mounts())
            dead = not shared
        if dead:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def split_options(text: str | None) -> tuple[str | None, bool]:
    """`-o` without `nonempty` (an r2fs check, not a mount option), and whether it was there."""
    items = [o for o in (text or "").split(",") if o.strip()]
    rest = [o for o in items if o.strip() != "nonempty"]
    return (",".join(rest) or None), len(rest) != len(items)


def check_mount_point(mountpoint: str, nonempty: bool) -> None:
    """Refuse a mount point that is not an empty directory (unless -o nonempty):
    mounting over files hides them until the unmount, which looks like loss."""
    if is_r2fs_mount(mountpoint):
        raise MountFailed(f"{mountpoint} is already an r2fs mount (r2fs umount {mountpoint})")
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a directory (create it first)")
    if os.path.ismount(mountpoint):
        raise MountFailed(f"{mountpoint} is already a mount point")
    if not nonempty:
        with os.scandir(mountpoint) as it:
            count = sum(1 for _ in it)
        if count:
            raise MountFailed(f"{mountpoint} is not empty ({count} entr{'y' if count == 1 else 'ies'}); "
                              f"mounting would hide {'it' if count == 1 else 'them'}: use an empty directory, "
                              "or -o nonempty")


def cmd_mount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    options, nonempty = split_options(args.options)
    from .engine_cmds import require_cluster
    require_cluster(cluster_path(args))
    from ..fuse.mount import parse_options
    parse_options(options)  # a bad -o is named here, on the terminal, before anything starts
    if clear_dead_mount(mountpoint):
        print(f"r2fs: {mountpoint} was a dead r2fs mount (its daemon had exited); cleared it",
              file=sys.stderr)
    check_mount_point(mountpoint, nonempty)
    clean_leftovers(cache_base(args))
    if args.foreground:
        return _foreground(args, mountpoint, options)
    return _background(args, mountpoint)


def cache_base(args: argparse.Namespace) -> str:
    """Where a mount's cache and open-file staging live (--cache-dir, else CLUSTER/cache)."""
    return os.path.abspath(args.cache_dir or os.path.join(cluster_path(args), "cache"))


def _configure(args: argparse.Namespace):
    """The engine set-up a mount shares with the gateway: read tiers, write mode."""
    from .cache_cmds import apply_cache_arguments
    from .uploads_cmds import apply_write_arguments

    def configure(cluster) -> None:
        apply_write_arguments(cluster, args)
        apply_cache_arguments(cluster, args)
    return configure


def _foreground(args: argparse.Namespace, mountpoint: str, options: str | None) -> int:
    from ..fuse.mount import run

    pidf = pid_file(mountpoint)

    def ready() -> None:
        with open(pidf, "w") as f:
            f.write(f"{os.getpid()}\n")

    try:
        cache_dir = os.path.abspath(args.cache_dir) if args.cache_dir else None
        return run(cluster_path(args), args.bucket, mountpoint, options, cache_dir, ready,
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
        extra += ["-o", args.options]  # as given: the daemon checks nonempty itself
    if args.region:
        extra += ["--region", args.region]
    if args.write_mode:
        extra += ["--write-mode", args.write_mode]
    from .cache_cmds import cache_argv
    extra += cache_argv(args)
    pid, log = start_background(cluster_path(args), args.bucket, mountpoint, extra)
    print(f"mounted bucket {args.bucket} at {mountpoint} (pid {pid}, log: {log})")
    print(f"unmount with: {r2fs_command()} umount {shlex.quote(mountpoint)}")
    return 0


def r2fs_command() -> str:
    """How to run this very r2fs from a shell, as a command that works when pasted:
    `r2fs` when that is what PATH finds, else the full path of this program."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(script) != "r2fs":  # `python -m r2fs`: the entry point beside python
        script = os.path.join(os.path.dirname(sys.executable), "r2fs")
    found = shutil.which("r2fs")
    if found and os.path.exists(script) and os.path.samefile(found, script):
        return "r2fs"
    if os.path.exists(script):
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m r2fs"


def start_background(cluster_dir: str, bucket: str, mountpoint: str,
                     extra: list[str] | None = None) -> tuple[int, str]:
    """Start a mount daemon and wait until the mount answers: (pid, log file)."""
    mountpoint = os.path.abspath(mountpoint)
    log = log_file(mountpoint)
    cmd = [sys.executable, "-m", "r2fs.cli", "--cluster", cluster_dir, "mount", bucket,
           mountpoint, "--foreground", *(extra or [])]
    with open(log, "ab") as out:
        start = out.tell()
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, close_fds=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            raise MountFailed(f"mount failed: {_failure(log, start)} (log: {log})")
        if is_r2fs_mount(mountpoint) and daemon_pid(mountpoint) == child.pid:
            try:
                os.stat(mountpoint)
                return child.pid, log
            except OSError:
                pass
        time.sleep(0.05)
    child.terminate()
    raise MountFailed(f"mount did not answer within {READY_TIMEOUT:.0f}s (log: {log})")


def _failure(path: str, start: int) -> str:
    """Why the daemon exited, from what it logged in this attempt: the complaints of
    libfuse (`fuse: unknown option(s): ...`) first, then its own last line."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    if not lines:
        return "no output"
    last = lines[-1].removeprefix("r2fs: ")
    fuse = [ln for ln in lines if ln.startswith("fuse:")]
    if fuse:
        last = last.replace(" (see the log above for libfuse's reason)", "")
        return "; ".join(fuse + [last])
    return last


def cmd_umount(args: argparse.Namespace) -> int:
    unmount(os.path.abspath(args.mountpoint), lazy=args.lazy)
    return 0


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Unmount an r2fs mount and wait for its daemon's final flush (MountFailed if not)."""
    if not is_r2fs_mount(mountpoint):
        raise MountFailed(f"{mountpoint} is not an r2fs mount")
    pid = daemon_pid(mountpoint)
    flags = "-uz" if lazy or pid is None else "-u"
    res = subprocess.run(["fusermount3", flags, mountpoint], capture_output=True, text=True)
    if res.returncode != 0:
        reason = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        raise MountFailed(f"cannot unmount {mountpoint}: {reason} (close open files, or use --lazy)")
    if pid is not None and not wait_for_exit(pid, EXIT_TIMEOUT):
        raise MountFailed(f"unmounted, but the mount process {pid} is still flushing")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("mount", help="mount a bucket as a folder (FUSE)",
                              description="Mount BUCKET at MOUNTPOINT. Returns once the mount "
                                          "answers; the daemon logs to a file it names. "
                                          "MOUNTPOINT must be an empty directory (or -o nonempty); "
                                          "a dead r2fs mount there (its daemon killed) is cleared.")
    p.add_argument("bucket", metavar="BUCKET")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--foreground", action="store_true", help="stay in front, log to stderr")
    p.add_argument("-o", dest="options", metavar="OPTIONS", default=None,
                   help="comma-separated: attr_timeout=S, entry_timeout=S, poll_interval=S, "
                        "read_ahead_kb=N (default 4096), writeback, debug, nonempty (mount "
                        "over a non-empty directory), and libfuse options such as "
                        "allow_other, ro")
    from .cache_cmds import add_cache_arguments
    from .uploads_cmds import add_write_arguments
    add_cache_arguments(p)
    add_write_arguments(p)
    p.set_defaults(func=cmd_mount)

    p = subparsers.add_parser("umount", help="unmount an r2fs mount (flushes first)",
                              description="Unmount the r2fs mount at MOUNTPOINT: every dirty file "
                                          "is flushed first, and umount returns once the daemon "
                                          "has exited. A dead mount (its daemon gone) is detached.")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--lazy", action="store_true", help="detach even if files are open")
    p.set_defaults(func=cmd_umount)


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for process `pid` to be gone; True if it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if has_exited(pid):
            return True
        time.sleep(0.02)
    return False


def has_exited(pid: int) -> bool:
    """Whether `pid` has exited: gone, or a zombie. A detached daemon's parent is init,
    which may reap it only a second or two later (measured: ~1.7 s in a container), and
    kill(pid, 0) succeeds on a zombie; its work (the final flush) is done either way."""
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]  # after "(comm)", which may hold spaces
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X")
