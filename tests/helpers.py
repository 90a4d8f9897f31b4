"""Small helpers for tests (tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys


def rand(n: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (fast, incompressible enough, reproducible)."""
    import random
    return random.Random(seed).randbytes(n)


def shard_files(cluster_dir: str) -> list[str]:
    out = []
    for root, _, files in os.walk(os.path.join(cluster_dir, "nodes")):
        out += [os.path.join(root, f) for f in files]
    return out


def ok(proc: subprocess.CompletedProcess) -> str:
    """Assert success with a quiet stderr (no bar when not a tty); stdout as text."""
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b"", proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Assert the CLI's error promise; return the message."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, f"expected failure, got exit 0; stdout={proc.stdout!r}"
    assert "Traceback" not in err, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got: {err!r}"
    assert proc.returncode != 70, f"internal error instead of a clear message: {err}"
    return lines[0]


def run_on_a_terminal(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, str, int]:
    """Run cmd with stderr on a pseudo-terminal (where progress bars are drawn) and stdout piped.

    Returns (what reached the terminal, stdout, exit status)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        slave = -1
        seen = b""
        while select.select([master], [], [], timeout)[0]:
            try:
                piece = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not piece:
                break
            seen += piece
        out = proc.stdout.read().decode()
        return seen.decode(errors="replace"), out, proc.wait(timeout)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def stop_mount(path: str, timeout: float = 30) -> None:
    """Unmount the r2fs mount at `path` whatever state it is in, and see its daemon gone;
    never raises. `r2fs umount` (the daemon's final flush), then `fusermount3 -u -z` if that
    fails, then SIGKILL for a daemon still there after `timeout` seconds. The one way every
    test's fixtures take a mount down (tests/fuse, tests/multihost, ...)."""
    from r2fs.cli.fuse_cmds import daemon_pid, is_r2fs_mount, wait_for_exit
    pid = daemon_pid(path)
    if is_r2fs_mount(path):
        try:
            done = subprocess.run([sys.executable, "-m", "r2fs.cli", "umount", path],
                                  capture_output=True, timeout=120).returncode == 0
        except subprocess.TimeoutExpired:
            done = False
        if not done:
            subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True)
    if pid is not None and not wait_for_exit(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
