"""INTERRUPT: a request stuck in the engine must not hold a killed caller.

The node store really stalls: the cluster's shards live on an S3-compatible
node (a moto server process) that is SIGSTOPped, so a read of a file not in
any cache, or a commit of new content, blocks inside the engine (connect and
read timeouts, retries). A caller killed with SIGKILL meanwhile must exit
promptly -- the kernel waits for the daemon's answer before the process can
go -- and the mount must keep working once the node answers again.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time

import pytest
import trio

from fusehelp import BUCKET, CHUNK, Mount
from motoserver import CREDENTIALS, MotoServer
from r2fs.engine import config as cfgmod
from r2fs.engine.store import Cluster

DATA = os.urandom(3 * CHUNK)  # not inline: its chunks live on the nodes


@pytest.fixture
def stalled(tmp_path, monkeypatch):
    """A mount whose three nodes are S3 buckets on one moto server; yields (mount, server)."""
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    server = MotoServer()
    path = str(tmp_path / "cluster")
    mnt = None
    try:
        Cluster.init(path, nodes=3, k=2, m=1, chunk_size=CHUNK).close()
        server.make_buckets("node-0", "node-1", "node-2")
        cfg = cfgmod.load(path)
        cfg.nodes = [cfgmod.NodeConfig(f"s{i}", "", extra={"endpoint": server.endpoint},
                                       url=f"s3://node-{i}/r2fs") for i in range(3)]
        with open(os.path.join(path, cfgmod.CONFIG_FILE), "w") as f:
            f.write(cfgmod.render(cfg, path))

        async def fill() -> None:
            c = Cluster.open(path)
            try:
                await c.create_bucket(BUCKET)
                await c.bucket(BUCKET).put("big", DATA)  # not through the mount: no cache has it
            finally:
                c.close()
        trio.run(fill)
        (tmp_path / "mnt").mkdir()
        mnt = Mount(path, BUCKET, str(tmp_path / "mnt"))
        mnt.start()
        yield mnt, server
    finally:
        if server.proc is not None:
            os.killpg(server.proc.pid, signal.SIGCONT)
        if mnt is not None:
            mnt.stop()
        server.close()


def _stop(server: MotoServer) -> None:
    os.killpg(server.proc.pid, signal.SIGSTOP)


def _cont(server: MotoServer) -> None:
    os.killpg(server.proc.pid, signal.SIGCONT)


FSYNC_NR = {"x86_64": 74, "aarch64": 82}.get(platform.machine())


def _syscall(proc: subprocess.Popen) -> int | None:
    """The system call `proc` is blocked in (/proc/PID/syscall), None if running."""
    with open(f"/proc/{proc.pid}/syscall") as f:
        first = f.read().split()[0]
    return None if first == "running" else int(first)


def _killed_promptly(proc: subprocess.Popen, started: str, syscall: int | None = None) -> float:
    """Wait until `proc` is blocked in the mount (in `syscall` if given), SIGKILL it;
    seconds until it is gone."""
    time.sleep(1.5)
    assert proc.poll() is None, f"{started} did not block: {proc.communicate()}"
    if syscall is not None:
        assert _syscall(proc) == syscall, f"{started} is not blocked where the test means"
    t = time.monotonic()
    proc.kill()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"a SIGKILLed {started} is still held by the mount after 20 s")
    return time.monotonic() - t


def test_killed_reader_of_a_stalled_node_exits_promptly(stalled):
    mnt, server = stalled
    _stop(server)
    reader = subprocess.Popen([sys.executable, "-c",
                               f"open({mnt.p('big')!r}, 'rb').read()"])
    took = _killed_promptly(reader, "reader")
    assert took < 3.0, f"the killed reader took {took:.1f} s to go"
    _cont(server)
    with open(mnt.p("big"), "rb") as f:  # the mount is fine once the node answers
        assert f.read() == DATA


def test_killed_writer_in_fsync_to_a_stalled_node_exits_promptly(stalled):
    mnt, server = stalled
    _stop(server)
    # unbuffered: a buffered file object keeps up to st_blksize (1 MiB here) in the
    # process until close, so its fsync() would come first, of an empty file -- one
    # that fsync() rightly makes durable in the close journal without the node.
    # These bytes are in the mount and not inline, so fsync() must store chunks.
    writer = subprocess.Popen([sys.executable, "-c", "import os\n"
                               f"fd = os.open({mnt.p('new')!r}, os.O_WRONLY | os.O_CREAT)\n"
                               f"data = memoryview(os.urandom({3 * CHUNK}))\n"
                               "while data:\n"
                               "    data = data[os.write(fd, data):]\n"
                               "os.fsync(fd)\n"])
    took = _killed_promptly(writer, "writer", FSYNC_NR)
    assert took < 3.0, f"the killed writer took {took:.1f} s to go"
    _cont(server)
    deadline = time.monotonic() + 60  # the commit it started runs on (or fails) by itself
    while True:
        try:
            st = os.stat(mnt.p("new"))
            break
        except FileNotFoundError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert st.st_size in (0, 3 * CHUNK)
    with open(mnt.p("big"), "rb") as f:
        assert f.read() == DATA
