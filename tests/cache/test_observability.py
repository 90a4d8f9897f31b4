"""Figures per tier: `r2fs status` for running processes, Prometheus text, CLI flags."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import pytest

from r2fs.cli.cache_cmds import add_cache_arguments, apply_cache_arguments, cache_argv
from r2fs.engine.reader import render_metrics, running_snapshots

from conftest import CHUNK
from helpers import rand
from test_peers import http_get

R2FS = [sys.executable, "-m", "r2fs"]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


async def test_status_shows_a_running_process_and_forgets_it_when_gone(small_cluster, bucket,
                                                                       peer_process):
    c = small_cluster
    data = rand(3 * CHUNK, seed=31)
    await bucket.put("obj", data)
    proc, url = peer_process(c.path, "a")
    c.reader.configure(cache_size=0, peers=[url], snapshots=False)
    assert await (await bucket.get("obj")).read() == data  # A serves 3 chunks from the nodes
    wait_for(lambda: running_snapshots(c.path).get(proc.pid, {}).get("figures", {})
             .get("events", {}).get("peer_requests_served") == 3)
    out = subprocess.run([*R2FS, "--cluster", c.path, "status"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "read cache:" in out.stdout and f"pid {proc.pid}" in out.stdout
    assert "nodes: 3 hits" in out.stdout and "served 3 requests" in out.stdout
    out = subprocess.run([*R2FS, "--cluster", c.path, "cache", "status"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and f"pid {proc.pid}" in out.stdout
    proc.send_signal(signal.SIGTERM)  # a clean exit removes its snapshot
    proc.wait(10)
    assert not os.path.exists(os.path.join(c.path, "run", f"cache-{proc.pid}.json"))
    proc, url = peer_process(c.path, "b")
    wait_for(lambda: proc.pid in running_snapshots(c.path))
    proc.kill()  # no cleanup: the stale snapshot stays on disk and is ignored
    proc.wait(10)
    assert os.path.exists(os.path.join(c.path, "run", f"cache-{proc.pid}.json"))
    assert proc.pid not in running_snapshots(c.path)
    out = subprocess.run([*R2FS, "--cluster", c.path, "status"], capture_output=True, text=True,
                         timeout=60)
    assert f"pid {proc.pid}" not in out.stdout
    assert "no running mount or gateway" in out.stdout


async def test_prometheus_text(small_cluster, bucket, peer_process):
    c = small_cluster
    c.reader.configure(cache_size=64 << 20, snapshots=False)
    data = rand(4 * CHUNK, seed=32)
    await bucket.put("obj", data)
    await (await bucket.get("obj")).read()
    await (await bucket.get("obj")).read()
    text = render_metrics()
    assert "# TYPE r2fs_cache_hits_total counter" in text
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
             for line in text.splitlines() if line and not line.startswith("#")}
    assert lines['r2fs_cache_hits_total{tier="l1"}'] >= 4
    assert lines['r2fs_cache_hits_total{tier="nodes"}'] >= 4
    assert lines['r2fs_cache_read_bytes_total{tier="l1"}'] >= len(data)
    assert lines["r2fs_cache_l1_used_bytes"] >= len(data)
    _, url = peer_process(c.path, "a")
    status, body = await http_get(url, "/_r2fs/metrics", [])
    assert status == 200 and b"r2fs_cache_peer_requests_total" in body


def test_flags_parse_and_configure(small_cluster, tmp_path):
    p = argparse.ArgumentParser()
    add_cache_arguments(p)
    args = p.parse_args(["--cache-dir", str(tmp_path / "d"), "--cache-size", "512MiB",
                                "--peer", "127.0.0.1:9001", "--peer", "http://127.0.0.1:9002/",
                                "--no-readahead"])
    assert args.cache_size == 512 << 20
    assert args.peer == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    assert cache_argv(args) == ["--cache-size", str(512 << 20), "--peer", "http://127.0.0.1:9001",
                                "--peer", "http://127.0.0.1:9002", "--no-readahead"]
    apply_cache_arguments(small_cluster, args)
    r = small_cluster.reader
    assert r.l1.capacity == 512 << 20 and r.l1.dir.startswith(str(tmp_path / "d"))
    assert not r.readahead.enabled
    assert sorted(r.peers.peers) == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]


def test_shared_cache_dir_flag_is_kept():
    p = argparse.ArgumentParser()
    p.add_argument("--cache-dir")  # e.g. the mount's own (write staging lives there too)
    add_cache_arguments(p)
    assert p.parse_args(["--cache-dir", "/x", "--cache-size", "0"]).cache_size == 0


@pytest.mark.parametrize("argv, message", [
    (["--cache-size", "lots"], "invalid size"),
    (["--peer", "ftp://host:1"], "expected http://HOST:PORT"),
    (["--peer-listen", "nowhere"], "expected HOST:PORT"),
])
def test_bad_flags_are_one_line_errors(argv, message):
    proc = subprocess.run([sys.executable, "-c",
                           "import argparse,sys; from r2fs.cli.cache_cmds import add_cache_arguments;"
                           "p=argparse.ArgumentParser(prog='r2fs mount'); add_cache_arguments(p);"
                           "p.parse_args(sys.argv[1:])", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cache_clear_cli(tmp_path, small_cluster):
    root = tmp_path / "l1"
    from r2fs.engine.cache import DiskCache
    busy = DiskCache(str(root), 1 << 20, small_cluster.reader.open_into)
    idle = DiskCache(str(root), 1 << 20, small_cluster.reader.open_into)
    cid = small_cluster.master.chunk_id(b"y" * 100)
    assert idle.put(cid, small_cluster.chunks.seal(cid, b"y" * 100))
    idle.flush()  # (fills are written by background threads)
    assert any(n.startswith("seg-") for n in os.listdir(idle.dir))
    idle_dir = idle.dir
    idle.close()
    try:
        out = subprocess.run([*R2FS, "--cluster", small_cluster.path, "cache", "clear",
                              "--cache-dir", str(root)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "cleared 1" in out.stdout and "1 in use" in out.stdout
        assert not any(n.startswith("seg-") for n in os.listdir(idle_dir))
    finally:
        busy.close()


def test_a_taken_peer_port_is_a_one_line_error_and_leaves_nothing_behind(small_cluster, tmp_path):
    import socket

    from r2fs.engine.peers import PeerError

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        with pytest.raises(PeerError, match=f"cannot serve peers on 127.0.0.1:{port}"):
            small_cluster.reader.configure(cache_dir=str(tmp_path / "l1"), cache_size=1 << 20,
                                           peer_listen=f"127.0.0.1:{port}", snapshots=False)
        assert small_cluster.reader.l1 is None and not small_cluster.reader.configured
        # the L1 slot was released: configuring again takes the same slot
        small_cluster.reader.configure(cache_dir=str(tmp_path / "l1"), cache_size=1 << 20,
                                       snapshots=False)
        assert small_cluster.reader.l1.dir.endswith("slot0")
    finally:
        busy.close()
