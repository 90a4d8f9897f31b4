"""Starting a gateway in the background, for `r2fs demo` (and anyone else who
wants one beside a mount): a detached `r2fs serve` process whose log and pid
live in the cluster directory, reused if it is already running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from ..engine.errors import R2fsError
from ..engine.store import Cluster
from .keys import AccessKey, labelled_key

DEMO_LABEL = "demo"


class GatewayStartFailed(R2fsError):
    """The background gateway did not come up (its log says why)."""


@dataclass
class BackgroundGateway:
    endpoint: str
    pid: int
    log: str
    started: bool  # False: one was already running


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.3).close()
        return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def start_background(cluster_dir: str, listen: str = "127.0.0.1:9000", *,
                     timeout: float = 30.0) -> BackgroundGateway:
    """Start `r2fs serve` detached (or find the one started before) and wait until it listens."""
    host, _, port = listen.rpartition(":")
    pidfile = os.path.join(cluster_dir, "gateway.pid")
    log = os.path.join(cluster_dir, "gateway.log")
    endpoint = f"http://{listen}"
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        if _alive(pid) and _listening(host, int(port)):
            return BackgroundGateway(endpoint, pid, log, started=False)
    except (OSError, ValueError):
        pass
    if _listening(host, int(port)):
        raise GatewayStartFailed(f"{listen} is already in use by another program")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "r2fs", "--cluster", cluster_dir, "serve",
                                 "--listen", listen], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GatewayStartFailed(f"the gateway exited (status {proc.returncode}); see {log}")
        if _listening(host, int(port)):
            with open(pidfile, "w") as f:
                f.write(f"{proc.pid}\n")
            return BackgroundGateway(endpoint, proc.pid, log, started=True)
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    raise GatewayStartFailed(f"the gateway did not listen on {listen} within {timeout:.0f} s; see {log}")


async def demo_key(cluster: Cluster) -> AccessKey:
    """The demo's key pair (created once, shown on every demo run)."""
    return await labelled_key(cluster, DEMO_LABEL)
