"""Helpers of the multi-host tests: network namespaces, cluster directories per host, mounts.

Topology (made by `Net`, removed by its close()): a "hub" namespace with
PostgreSQL (and moto), joined to each host namespace by a veth pair
(10.199.N.1 in the hub, 10.199.N.2 in host N; the hub routes between hosts).
The only addresses used are inside these namespaces. Each host has its own
cluster directory (cluster.toml naming PostgreSQL at its hub address, the
shared node directories, its own staging and cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from helpers import stop_mount
from r2fs.engine import config as cfgmod
from r2fs.engine.store import Cluster

HOSTS = 2

needs_netns = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                 reason="network namespaces need root and iproute2")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Net:
    """The namespaces and veth pairs of a test run (all removed by close())."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.hub = f"r2t{tag}hub"
        self.hosts = [f"r2t{tag}h{i}" for i in range(1, HOSTS + 1)]
        self.made: list[str] = []
        for ns in [self.hub, *self.hosts]:
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for i, ns in enumerate(self.hosts, start=1):
            a, b = f"v{tag}a{i}", f"v{tag}b{i}"
            sh("ip", "link", "add", a, "netns", self.hub, "type", "veth", "peer", "name", b,
               "netns", ns)
            sh("ip", "-n", self.hub, "addr", "add", f"10.199.{i}.1/24", "dev", a)
            sh("ip", "-n", ns, "addr", "add", f"10.199.{i}.2/24", "dev", b)
            sh("ip", "-n", self.hub, "link", "set", a, "up")
            sh("ip", "-n", ns, "link", "set", b, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"10.199.{i}.1")
        sh("ip", "netns", "exec", self.hub, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    def close(self) -> None:
        for ns in reversed(self.made):  # deleting a namespace deletes its veth ends
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def make_shared(tmp_path, pg, s3_nodes=()):
    """(control Cluster in this process over PostgreSQL's unix socket, [host dirs])."""
    db = pg.new_database().rsplit("/", 1)[1]
    root = str(tmp_path / "control")
    control = Cluster.init(root, nodes=3, k=2, m=1, meta_url=pg.socket_url(db))
    dirs = []
    for i in range(1, HOSTS + 1):
        d = str(tmp_path / f"host{i}")
        os.makedirs(d)
        shutil.copy(os.path.join(root, "master.key"), d)
        cfg = cfgmod.load(root)
        if s3_nodes:
            cfg.nodes = cfg.nodes[:1] + list(s3_nodes)
        cfg.meta_url = f"postgresql://postgres@10.199.{i}.1:{pg.port}/{db}"
        with open(os.path.join(d, cfgmod.CONFIG_FILE), "w") as f:
            f.write(cfgmod.render(cfg, d))  # node paths relative to d: the same directories
        dirs.append(d)
    return control, dirs


class HostMount:
    """`r2fs mount` run in a host's network namespace (or this one: ns None). Entered with `nsenter --net` alone
    (`ip netns exec` also unshares the mount namespace: the mount would be invisible
    here). Always stopped by the fixture that made it, whatever state it is in."""

    def __init__(self, ns: str | None, cluster_dir: str, bucket: str, path: str,
                 options: str | None = None) -> None:
        self.ns, self.cluster_dir, self.bucket, self.path = ns, cluster_dir, bucket, path
        self.options = options

    def p(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def start(self) -> None:
        from r2fs.cli.fuse_cmds import is_r2fs_mount
        argv = ([] if self.ns is None else ["nsenter", f"--net=/run/netns/{self.ns}"]) + [
            sys.executable, "-m", "r2fs.cli", "--cluster", self.cluster_dir, "mount",
            self.bucket, self.path]
        proc = subprocess.run(argv + (["-o", self.options] if self.options else []),
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not is_r2fs_mount(self.path):
            raise AssertionError(f"mount in {self.ns} failed ({proc.returncode}): {proc.stderr}")

    def stop(self) -> None:
        """Unmount (lazily if need be), wait for the daemon, kill it as a last resort."""
        stop_mount(self.path)
