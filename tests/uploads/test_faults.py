"""The fault-injection layer, and replication through outages and flaky nodes."""

from __future__ import annotations

import time

import pytest
import trio

from r2fs.engine.errors import InvalidClusterConfig, NoSuchKey
from r2fs.engine.nodes import LocalNode, NodeUnavailable
from r2fs.engine.replicator import Replicator, backlog, replicate_all, run_replicator
from r2fs.engine.simulate import RELOAD_INTERVAL, SimulatedFault, SimulatedNode, set_simulation
from r2fs.engine.store import Cluster

from uploads_helpers import CHUNK, WEST, r2fs, rand, shard_files, staged_files


def quick(c: Cluster) -> Replicator:
    """A replicator with short backoff, so a test sees several retries in a second."""
    return Replicator(c, backoff_base=0.05, backoff_cap=0.3)


async def write_far(c: Cluster, n: int, seed: int = 0) -> dict[str, bytes]:
    await c.create_bucket("far", location="west")
    c.writer.configure(region="east")
    objs = {f"k{i}": rand(CHUNK, seed + i) for i in range(n)}  # one chunk each
    for k, v in objs.items():
        await c.bucket("far").put(k, v)
    return objs


async def check(c: Cluster, objs: dict[str, bytes]) -> None:
    for k, v in objs.items():
        assert await (await c.bucket("far").get(k)).read() == v


def test_simulation_only_from_its_table_and_announced(regional, cdir):
    assert all(type(n) is LocalNode for n in regional.nodes.values())
    quiet = r2fs(cdir, "status")
    assert quiet.returncode == 0 and "FAULT INJECTION" not in quiet.stderr
    set_simulation(cdir, "n3", latency_ms=20, error_rate=0.1)
    with Cluster.open(cdir) as c:
        assert isinstance(c.nodes["n3"], SimulatedNode)
        assert [nid for nid, n in c.nodes.items() if isinstance(n, SimulatedNode)] == ["n3"]
    loud = r2fs(cdir, "status")
    assert loud.returncode == 0, loud.stderr
    assert "WARNING: FAULT INJECTION IS ON" in loud.stderr and "n3: +20 ms, 10% errors" in loud.stderr


@pytest.mark.parametrize("settings, message", [
    ({"down": "yes"}, "down must be true or false"),
    ({"error_rate": 2}, "error_rate must be between 0 and 1"),
    ({"latency_ms": -1}, "latency_ms must be a number >= 0"),
])
def test_bad_simulate_table_is_a_one_line_error(regional, cdir, settings, message):
    path = f"{cdir}/cluster.toml"
    key, value = next(iter(settings.items()))
    with open(path, "a") as f:
        f.write(f'\n[nodes.n1.simulate]\n{key} = {value!r}\n'.replace("'", '"'))
    with pytest.raises(InvalidClusterConfig, match=message):
        Cluster.open(cdir)
    proc = r2fs(cdir, "status")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_simulate_setting_refused(regional, cdir):
    with open(f"{cdir}/cluster.toml", "a") as f:
        f.write("\n[nodes.n1.simulate]\nlatncy_ms = 5\n")
    with pytest.raises(InvalidClusterConfig, match="unknown setting.*latncy_ms"):
        Cluster.open(cdir)


def test_latency_and_outage_apply_to_node_access(regional, cdir):
    set_simulation(cdir, "n2", latency_ms=60)
    set_simulation(cdir, "n4", down=True)
    with Cluster.open(cdir) as c:
        slow, gone = c.nodes["n2"], c.nodes["n4"]
        started = time.monotonic()
        slow.write("shards/aa/bb/x", b"data")
        assert time.monotonic() - started >= 0.06
        assert gone.available() is False
        with pytest.raises(SimulatedFault, match="simulated outage"):
            gone.write("shards/aa/bb/x", b"data")
        set_simulation(cdir, "n4")  # outage over, seen by the running process
        time.sleep(RELOAD_INTERVAL + 0.1)
        assert gone.available() is True
        gone.write("shards/aa/bb/x", b"data")
        assert gone.read("shards/aa/bb/x") == b"data"


async def test_outage_retries_until_nodes_return(regional, cdir):
    for nid in WEST:
        set_simulation(cdir, nid, down=True)
    with Cluster.open(cdir) as c:
        objs = await write_far(c, 5)  # acknowledged: the far region is not needed
        await check(c, objs)  # readable from staging during the outage
        report = await replicate_all(c)
        assert report.replicated == 0 and report.failed == 5
        stop = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(lambda: run_replicator(c, stop, replicator=quick(c)))
            await trio.sleep(1.5)
            b = backlog(c)
            assert b.chunks == 5 and b.failing == 5
            assert all(s.attempts >= 3 for s in b.stuck), "must keep retrying"
            assert "simulated outage" in b.last_error
            up = (await c.status()).extra["uploads"]
            assert up["backlog chunks"] == 5 and "simulated outage" in up["last error"]
            assert not any(shard_files(cdir).values())
            for nid in WEST:
                set_simulation(cdir, nid)  # the region comes back
            with trio.fail_after(30):
                while backlog(c).chunks:
                    await trio.sleep(0.05)
            stop.set()
        assert staged_files(cdir) == []
        await check(c, objs)
        files = shard_files(cdir)
        assert sum(len(files[n]) for n in WEST) == 5 * 6


async def test_flaky_nodes_lose_nothing(regional, cdir):
    for nid in WEST:
        set_simulation(cdir, nid, error_rate=0.3)
    with Cluster.open(cdir) as c:
        objs = await write_far(c, 8, seed=50)
        stop = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(lambda: run_replicator(c, stop, replicator=quick(c)))
            with trio.fail_after(60):
                while backlog(c).chunks:
                    await trio.sleep(0.05)
            stop.set()
    for nid in WEST:
        set_simulation(cdir, nid)
    with Cluster.open(cdir) as c:
        await check(c, objs)
        await c.gc(grace=3600, orphan_grace=0)
        assert sum(len(f) for f in shard_files(cdir).values()) == 8 * 6
        assert staged_files(cdir) == []


async def test_sync_write_to_a_down_region_fails_cleanly(regional, cdir):
    for nid in WEST:
        set_simulation(cdir, nid, down=True)
    with Cluster.open(cdir) as c:
        await c.create_bucket("far", location="west")
        c.writer.configure(region="east", mode="sync")
        with pytest.raises(NodeUnavailable, match="simulated outage"):
            await c.bucket("far").put("k", rand(CHUNK, 1))
        with pytest.raises(NoSuchKey):
            await c.bucket("far").head("k")
        assert backlog(c).chunks == 0 and not any(shard_files(cdir).values())


async def test_gc_with_a_node_down_finishes_later(regional, cdir):
    c = regional
    await c.create_bucket("home", location="west")
    info = await c.bucket("home").put("k", rand(CHUNK, 3))
    await c.bucket("home").delete("k")
    cid = info.chunks[0].id
    for nid in c.chunk_record(cid)["p"]:
        set_simulation(cdir, nid, down=True)
    with Cluster.open(cdir) as down:
        report = await down.gc(grace=0, orphan_grace=3600)
        assert report.chunks_removed == 0  # could not delete the shards: stays marked
        assert down.chunk_record(cid) is not None
    for nid in WEST:
        set_simulation(cdir, nid)
    with Cluster.open(cdir) as up:
        report = await up.gc(grace=0, orphan_grace=3600)
        assert report.chunks_removed == 1 and up.chunk_record(cid) is None
    assert not any(shard_files(cdir).values())
