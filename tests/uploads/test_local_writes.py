"""Write modes, region placement, draining the backlog and gc, through the store API."""

from __future__ import annotations

import os
import shutil

import pytest
import trio

from r2fs.engine.errors import InvalidClusterConfig
from r2fs.engine.replicator import Replicator, backlog, replicate_all, run_replicator
from r2fs.engine.staging import Staging

from uploads_helpers import CHUNK, EAST, WEST, make_cluster, rand, shard_files, staged_files


def journal(c) -> dict[bytes, dict]:
    with c.meta.read() as txn:
        return dict(c.meta.scan(txn, "journal"))


def records(c, key_info) -> list[dict]:
    return [c.chunk_record(ref.id) for ref in key_info.chunks]


async def test_local_write_is_staged_journaled_and_readable_at_once(regional, cdir):
    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")  # far from the bucket's home: local by default
    data = rand(3 * CHUNK + 123, 1)
    info = await c.bucket("bkt").put("k", data)
    recs = records(c, info)
    assert len(recs) == 4 and all(r["loc"] == "staging" for r in recs)
    assert set(journal(c)) == {ref.id for ref in info.chunks}
    assert len(staged_files(cdir)) == 4
    assert not any(shard_files(cdir).values()), "a local write must not touch the nodes"
    # readable at once, from staging
    assert await (await c.bucket("bkt").get("k")).read() == data
    st = await c.status()
    up = st.extra["uploads"]
    assert up["backlog chunks"] == 4 and up["backlog bytes"] == len(data)


async def test_backlog_drains_and_data_reads_without_staging(regional, cdir):
    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")
    objs = {f"k{i}": rand(CHUNK * 2 - i, 10 + i) for i in range(5)}
    for k, v in objs.items():
        await c.bucket("bkt").put(k, v)
    assert backlog(c).chunks == 10
    report = await replicate_all(c)
    assert (report.replicated, report.failed) == (10, 0)
    assert backlog(c).chunks == 0 and journal(c) == {}
    assert staged_files(cdir) == []
    shutil.rmtree(os.path.join(cdir, "staging"))  # nothing may still depend on it
    for k, v in objs.items():
        info = await c.bucket("bkt").head(k)
        assert all(r["loc"] == "nodes" for r in records(c, info))
        assert await (await c.bucket("bkt").get(k)).read() == v
    # every chunk now has exactly k+m shards, all in the bucket's home region
    files = shard_files(cdir)
    assert sum(len(files[n]) for n in WEST) == 10 * 6
    assert not any(files[n] for n in EAST)


async def test_default_mode_follows_regions_and_flag_overrides(regional):
    c = regional
    await c.create_bucket("wst", location="west")
    await c.create_bucket("est", location="east")
    await c.create_bucket("nowhere")
    w = c.writer
    with c.meta.read() as txn:
        homes = {b: c.home_region(txn, b) for b in ("wst", "est", "nowhere")}
    assert homes == {"wst": "west", "est": "east", "nowhere": None}
    assert [w.mode_for(h) for h in homes.values()] == ["sync", "sync", "sync"]  # at the home
    w.configure(region="east")
    assert [w.mode_for(h) for h in homes.values()] == ["local", "sync", "sync"]
    w.configure(region="east", mode="sync")
    assert w.mode_for("west") == "sync"
    w.configure(region="west", mode="local")
    assert w.mode_for("west") == "local"
    with pytest.raises(InvalidClusterConfig, match="unknown region 'esat'"):
        w.configure(region="esat")
    with pytest.raises(InvalidClusterConfig, match="unknown write mode"):
        w.configure(mode="async")


async def test_sync_write_at_home_goes_to_home_nodes(regional, cdir):
    c = regional
    await c.create_bucket("est", location="east")
    c.writer.configure(region="east")
    info = await c.bucket("est").put("k", rand(2 * CHUNK, 2))
    assert all(r["loc"] == "nodes" and set(r["p"]) <= set(EAST) for r in records(c, info))
    assert staged_files(cdir) == [] and journal(c) == {}
    files = shard_files(cdir)
    assert sum(len(files[n]) for n in EAST) == 12 and not any(files[n] for n in WEST)


async def test_small_region_spreads_over_all_nodes(cdir):
    """A home region with fewer than k+m nodes still works: shards go everywhere."""
    c = make_cluster(cdir, {"east": 6, "west": 2})
    try:
        await c.create_bucket("wst", location="west")
        c.writer.configure(region="east")
        data = rand(4 * CHUNK, 3)
        info = await c.bucket("wst").put("k", data)
        assert await (await c.bucket("wst").get("k")).read() == data
        await replicate_all(c)
        placements = [set(r["p"]) for r in records(c, info)]
        assert all(len(p) == 6 for p in placements)
        assert set().union(*placements) - {"n6", "n7"}, "must use nodes outside the region"
        assert len(set().union(*placements)) > 2
        assert await (await c.bucket("wst").get("k")).read() == data
    finally:
        c.close()


async def test_unknown_location_spreads_and_stays_sync(regional):
    c = regional
    await c.create_bucket("auto-loc", location="auto")  # an S3 LocationConstraint, not a region here
    c.writer.configure(region="east")
    info = await c.bucket("auto-loc").put("k", rand(CHUNK + 5, 4))
    assert all(r["loc"] == "nodes" for r in records(c, info))


async def test_dedup_in_local_mode_journals_once(regional, cdir):
    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")
    data = rand(2 * CHUNK, 5)
    await c.bucket("bkt").put("one", data)
    await c.bucket("bkt").put("two", data)
    assert len(journal(c)) == 2 and len(staged_files(cdir)) == 2
    await replicate_all(c)
    assert await (await c.bucket("bkt").get("two")).read() == data


async def test_gc_removes_unreferenced_staged_chunks_only(regional, cdir):
    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")
    keep, drop = rand(CHUNK + 1, 6), rand(CHUNK + 2, 7)
    kept = await c.bucket("bkt").put("keep", keep)
    dropped = await c.bucket("bkt").put("drop", drop)
    await c.bucket("bkt").delete("drop")
    report = await c.gc(grace=0, orphan_grace=3600)
    assert report.chunks_removed == 2 and report.shards_removed == 0
    assert all(c.chunk_record(r.id) is None for r in dropped.chunks)
    assert set(journal(c)) == {r.id for r in kept.chunks}
    assert len(staged_files(cdir)) == 2 and not any(shard_files(cdir).values())
    assert await (await c.bucket("bkt").get("keep")).read() == keep
    # a leftover staging file (e.g. a replicator killed after its flip) goes with orphan_grace
    Staging(cdir).write(b"\x01" * 32, 7, b"x" * 40)
    report = await c.gc(grace=0, orphan_grace=0)
    assert report.orphans_removed == 1 and len(staged_files(cdir)) == 2
    await replicate_all(c)
    assert await (await c.bucket("bkt").get("keep")).read() == keep


async def test_gc_drops_journal_entries_of_gone_chunks(regional):
    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")
    await c.bucket("bkt").put("k", rand(CHUNK, 8))
    with c.meta.read() as txn:
        (cid, entry), = list(c.meta.scan(txn, "journal"))
    c.meta.write(lambda txn: c.meta.put(txn, "journal", b"\x02" * 32, entry))  # chunk unknown
    await c.gc(grace=3600, orphan_grace=3600)
    assert set(journal(c)) == {cid}


async def test_two_replicators_at_once_never_corrupt(regional, cdir):
    """Leases off (lease=0): both replicators race on every chunk; one flip wins."""
    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")
    objs = {f"k{i}": rand(2 * CHUNK, 20 + i) for i in range(6)}
    for k, v in objs.items():
        await c.bucket("bkt").put(k, v)
    a, b = Replicator(c, lease=0.0), Replicator(c, lease=0.0)
    async with trio.open_nursery() as n:
        n.start_soon(lambda: replicate_all(c, replicator=a))
        n.start_soon(lambda: replicate_all(c, replicator=b))
    assert backlog(c).chunks == 0 and staged_files(cdir) == []
    for k, v in objs.items():
        assert await (await c.bucket("bkt").get(k)).read() == v
    await c.gc(grace=3600, orphan_grace=0)  # surplus shards of a killed loser would go here
    assert sum(len(f) for f in shard_files(cdir).values()) == 12 * 6


async def test_background_replicator_drains_as_writes_arrive(regional, cdir):
    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")
    stop = trio.Event()
    data = {f"k{i}": rand(CHUNK + i, 30 + i) for i in range(8)}
    async with trio.open_nursery() as n:
        n.start_soon(run_replicator, c, stop)
        for k, v in data.items():
            await c.bucket("bkt").put(k, v)
        with trio.fail_after(30):
            while backlog(c).chunks:
                await trio.sleep(0.05)
        up = (await c.status()).extra["uploads"]
        assert up["replicators running"] == 1 and up["backlog chunks"] == 0
        stop.set()
    assert staged_files(cdir) == []
    for k, v in data.items():
        assert await (await c.bucket("bkt").get(k)).read() == v
    assert (await c.list_records("replicators")) == []  # heartbeat removed on a clean stop


async def test_replication_yields_to_writes_within_bounds(regional, monkeypatch):
    from r2fs.engine import replicator as rmod

    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")
    await c.bucket("bkt").put("k", rand(2 * CHUNK, 40))  # 128 KiB waiting
    assert rmod._width_while_writing(c, 4) == 0  # young and small: wait for a pause
    monkeypatch.setattr(rmod, "TRICKLE_BYTES", 100 * 1024)
    assert rmod._width_while_writing(c, 4) == 1  # trickle
    monkeypatch.setattr(rmod, "MAX_DEFERRED_BYTES", 120 * 1024)
    assert rmod._width_while_writing(c, 4) == 4  # full speed
    monkeypatch.setattr(rmod, "TRICKLE_BYTES", 1 << 40)
    monkeypatch.setattr(rmod, "MAX_DEFERRED_BYTES", 1 << 40)
    monkeypatch.setattr(rmod, "MAX_DEFER_SECONDS", 0.0)
    assert rmod._width_while_writing(c, 4) == 1  # too old to wait any longer


async def test_staging_directory_removed_while_running(regional, cdir):
    c = regional
    await c.create_bucket("bkt", location="west")
    c.writer.configure(region="east")
    await c.bucket("bkt").put("a", rand(CHUNK, 60))
    await replicate_all(c)
    shutil.rmtree(os.path.join(cdir, "staging"))
    data = rand(CHUNK, 61)
    await c.bucket("bkt").put("b", data)  # staged again in a fresh directory
    assert await (await c.bucket("bkt").get("b")).read() == data
    assert len(staged_files(cdir)) == 1
