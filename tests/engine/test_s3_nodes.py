"""S3-compatible node stores, against real moto servers (separate processes, loopback).

The cluster mixes local node directories and S3 buckets; some tests kill one
of several moto processes mid-test (an outage of the nodes it serves).
"""

from __future__ import annotations

import os
import time

import pytest
import trio

from helpers import rand
from motoserver import CREDENTIALS, MotoServer
from r2fs.engine import config as cfgmod
from r2fs.engine.errors import InvalidClusterConfig, NoSuchKey
from r2fs.engine.nodes import NodeUnavailable
from r2fs.engine.nodes import s3 as s3mod
from r2fs.engine.store import Cluster
from r2fs.engine.types import MiB


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(s3mod, "DOWN_FOR", 2.0)


@pytest.fixture
def motos():
    servers: list[MotoServer] = []
    try:
        for _ in range(3):
            servers.append(MotoServer())
        yield servers
    finally:
        for s in servers:
            s.close()


def use_nodes(path: str, nodes: list[cfgmod.NodeConfig]) -> None:
    """Rewrite a fresh (empty) cluster's node list in cluster.toml."""
    cfg = cfgmod.load(path)
    cfg.nodes = nodes
    with open(os.path.join(path, cfgmod.CONFIG_FILE), "w") as f:
        f.write(cfgmod.render(cfg, path))


def s3_node(node_id: str, server: MotoServer, bucket: str) -> cfgmod.NodeConfig:
    server.make_buckets(bucket)
    return cfgmod.NodeConfig(node_id, "", extra={"endpoint": server.endpoint},
                             url=f"s3://{bucket}/r2fs/{node_id}")


@pytest.fixture
def mixed(tmp_path, motos, aws_env):
    """k=4, m=2 over 8 nodes: 6 S3 buckets (2 on each of 3 moto servers) + 2 directories."""
    path = str(tmp_path / "mixed")
    Cluster.init(path, nodes=8, k=4, m=2, chunk_size=256 * 1024).close()
    local = [n for n in cfgmod.load(path).nodes][:2]
    s3 = [s3_node(f"s{i}", motos[i // 2], f"bucket-{i}") for i in range(6)]
    use_nodes(path, local + s3)
    c = Cluster.open(path)
    try:
        yield c
    finally:
        c.close()


async def test_objects_round_trip_over_mixed_nodes_and_shards_are_in_the_buckets(mixed, motos):
    await mixed.create_bucket("mix")
    b = mixed.bucket("mix")
    data = rand(3 * MiB + 12345, seed=1)
    await b.put("big", data)
    await b.put("small", b"tiny")
    assert await (await b.get("big")).read() == data
    on_s3 = sum(1 for n in mixed.nodes.values() if n.id.startswith("s")
                for _ in n.names())
    assert on_s3 > 0
    listed = motos[0].client().list_objects_v2(Bucket="bucket-0", Prefix="r2fs/s0/shards/")
    assert listed.get("KeyCount", 0) == sum(1 for _ in mixed.nodes["s0"].names())
    st = await mixed.status()
    assert any(n.path.startswith("s3://bucket-3/r2fs/s3") and n.available for n in st.nodes)


async def test_a_store_down_reads_decode_around_writes_go_elsewhere_then_fail_naming_it(
        mixed, motos):
    await mixed.create_bucket("out")
    b = mixed.bucket("out")
    blobs = {f"o{i}": rand(600 * 1024, seed=10 + i) for i in range(6)}
    for k, v in blobs.items():
        await b.put(k, v)
    motos[1].kill()  # nodes s2 and s3 stop answering
    mixed.reader.close()  # nothing cached in this process
    for k, v in blobs.items():
        assert await (await b.get(k)).read() == v
    assert mixed.nodes["s2"].marked_down or mixed.nodes["s3"].marked_down
    # 6 of 8 nodes still answer: new writes are placed on them
    await b.put("after", rand(700 * 1024, seed=99))
    info = await b.head("after")
    for ref in info.chunks:
        placement = mixed.chunk_record(ref.id)["p"]
        assert not {"s2", "s3"} & set(placement), placement
    assert await (await b.get("after")).read() == rand(700 * 1024, seed=99)
    # a second server down: 4 nodes answer, fewer than k+m = 6: the write fails, naming them
    motos[2].kill()
    with pytest.raises(NodeUnavailable) as exc:
        await b.put("nowhere", rand(200 * 1024, seed=5))  # one chunk
    msg = str(exc.value)
    assert ("s4" in msg or "s5" in msg or "s2" in msg) and "not answering" in msg
    with pytest.raises(NoSuchKey):
        await b.head("nowhere")


async def test_a_store_that_comes_back_is_used_again(mixed, motos, aws_env):
    node = mixed.nodes["s0"]
    node.write("shards/probe", b"x")
    motos[0].kill()
    t = time.monotonic()
    with pytest.raises(NodeUnavailable, match="s0.*not answering"):
        node.read("shards/probe")
    assert time.monotonic() - t < 5  # timeouts + backoff are bounded
    with pytest.raises(NodeUnavailable, match="marked down"):
        node.size_of("shards/probe")  # fails fast while marked down
    assert not node.available()
    motos[0].start()  # an empty store again, same address
    motos[0].make_buckets("bucket-0")
    await trio.sleep(s3mod.DOWN_FOR + 0.1)
    assert node.size_of("shards/probe") is None and node.available()


async def test_gc_orphan_scan_lists_the_buckets(mixed):
    await mixed.create_bucket("gcb")
    b = mixed.bucket("gcb")
    await b.put("doomed", rand(500 * 1024, seed=3))
    orphan = "shards/ab/cd/" + "ab" + "cd" + "0" * 60 + ".7.0"
    mixed.nodes["s1"].write(orphan, b"left behind by a killed writer")
    await b.delete("doomed")
    report = await mixed.gc(grace=0, orphan_grace=0)
    assert report.chunks_removed >= 1 and report.orphans_removed >= 1
    assert mixed.nodes["s1"].size_of(orphan) is None
    assert sum(1 for n in mixed.nodes.values() for _ in n.names()) == 0


def test_bad_node_urls_are_refused_clearly(tmp_path, aws_env):
    path = str(tmp_path / "bad")
    Cluster.init(path, nodes=3, k=2, m=1).close()
    nodes = cfgmod.load(path).nodes
    use_nodes(path, nodes[:2] + [cfgmod.NodeConfig("x", "", url="s3:///nobucket")])
    with pytest.raises(InvalidClusterConfig, match="not an s3://bucket/prefix URL"):
        Cluster.open(path)
    use_nodes(path, nodes[:2] + [cfgmod.NodeConfig("x", "", url="ftp://host/dir")])
    with pytest.raises(InvalidClusterConfig, match="only s3://"):
        Cluster.open(path)
