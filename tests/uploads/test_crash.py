"""kill -9 of writers and replicators at every step; `r2fs replicate` and `r2fs sync`."""

from __future__ import annotations

import os
import signal

import pytest

from r2fs.engine.replicator import STEPS, TEST_KILL_ENV, backlog
from r2fs.engine.simulate import set_simulation
from r2fs.engine.store import Cluster

from uploads_helpers import (CHUNK, WEST, cli_env, make_cluster, r2fs, rand, shard_files,
                             staged_files, start_writer)


async def far_cluster(cdir: str, objects: int = 3) -> dict[str, bytes]:
    """A cluster whose bucket `far` (home: west) holds `objects` objects written locally."""
    objs = {f"obj{i}": rand(2 * CHUNK, i) for i in range(objects)}
    with make_cluster(cdir) as c:
        await c.create_bucket("far", location="west")
        c.writer.configure(region="east")
        for k, v in objs.items():
            await c.bucket("far").put(k, v)
    return objs


async def assert_intact(cdir: str, objs: dict[str, bytes], *, chunks: int) -> None:
    """Every object reads back; after gc of leftovers, exactly k+m shards per chunk, no staging."""
    with Cluster.open(cdir) as c:
        assert backlog(c).chunks == 0
        for k, v in objs.items():
            assert await (await c.bucket("far").get(k)).read() == v, k
        await c.gc(grace=3600, orphan_grace=0)
        assert sum(len(f) for f in shard_files(cdir).values()) == chunks * 6
        assert staged_files(cdir) == []
        for k, v in objs.items():
            assert await (await c.bucket("far").get(k)).read() == v, k


async def test_writer_killed_after_ack_then_replicated(cdir):
    with make_cluster(cdir) as c:
        await c.create_bucket("far", location="west")
    proc = start_writer(cdir, "far", count=3, size=2 * CHUNK)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[-1].strip() == "ACK obj2", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Cluster.open(cdir) as c:
        assert backlog(c).chunks == 6
    out = r2fs(cdir, "replicate")
    assert out.returncode == 0, out.stderr
    assert "replicated 6 chunk(s)" in out.stdout
    await assert_intact(cdir, {f"obj{i}": rand(2 * CHUNK, i) for i in range(3)}, chunks=6)


async def test_writer_killed_mid_stream_keeps_every_acknowledged_object(cdir):
    with make_cluster(cdir) as c:
        await c.create_bucket("far", location="west")
    proc = start_writer(cdir, "far", count=200, size=3 * CHUNK)
    try:
        assert proc.stdout.readline().strip() == "ACK obj0", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert r2fs(cdir, "sync", "far").returncode == 0
    with Cluster.open(cdir) as c:
        keys = [o.key for o in (await c.bucket("far").list()).objects]
        assert "obj0" in keys
        for k in keys:  # acknowledged or not, whatever is listed is whole
            i = int(k[3:])
            assert await (await c.bucket("far").get(k)).read() == rand(3 * CHUNK, i)
        await c.gc(grace=3600, orphan_grace=0)  # staged files of the unacknowledged put
        assert staged_files(cdir) == []


@pytest.mark.parametrize("step", STEPS)
async def test_replicator_killed_after_each_step(cdir, step):
    objs = await far_cluster(cdir)
    killed = r2fs(cdir, "replicate", env=cli_env(**{TEST_KILL_ENV: step}))
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    with Cluster.open(cdir) as c:
        for k, v in objs.items():  # readable in between, whatever step it died at
            assert await (await c.bucket("far").get(k)).read() == v
    again = r2fs(cdir, "replicate")
    assert again.returncode == 0, again.stderr
    await assert_intact(cdir, objs, chunks=6)


async def test_sync_replicates_when_no_process_runs(cdir):
    objs = await far_cluster(cdir)
    status = r2fs(cdir, "status")
    assert "backlog chunks: 6" in status.stdout, status.stdout
    out = r2fs(cdir, "sync", "far")
    assert out.returncode == 0, out.stderr
    assert "backlog empty" in out.stdout
    await assert_intact(cdir, objs, chunks=6)
    again = r2fs(cdir, "replicate")
    assert again.returncode == 0 and "nothing to replicate" in again.stdout


async def test_sync_reports_what_is_stuck_and_why(cdir):
    await far_cluster(cdir, objects=1)
    for nid in WEST:
        set_simulation(cdir, nid, down=True)
    out = r2fs(cdir, "sync", "--timeout", "1.5")
    assert out.returncode == 1
    assert "2 chunk(s)" in out.stderr and "not replicated" in out.stderr
    assert "simulated outage" in out.stderr and "Traceback" not in out.stderr
    rep = r2fs(cdir, "replicate")
    assert rep.returncode == 1 and "failed and will be retried" in rep.stderr
    for nid in WEST:
        set_simulation(cdir, nid)
    assert r2fs(cdir, "sync").returncode == 0


def test_sync_cli_errors(cdir):
    make_cluster(cdir).close()
    out = r2fs(cdir, "sync", "nope-bucket")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "nope-bucket" in out.stderr
    out = r2fs(cdir, "sync", "--timeout", "0")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    out = r2fs(os.path.join(cdir, "missing"), "replicate")
    assert out.returncode == 1 and "no r2fs cluster" in out.stderr


def test_write_flags_are_checked(cdir):
    make_cluster(cdir).close()
    out = r2fs(cdir, "serve", "--listen", "127.0.0.1:1", "--region", "nowhere")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "'nowhere' is not a region of this cluster (regions: east, west)" in out.stderr
    out = r2fs(cdir, "serve", "--listen", "127.0.0.1:1", "--write-mode", "fast")
    assert out.returncode == 2 and "invalid write mode 'fast': use sync or local" in out.stderr
