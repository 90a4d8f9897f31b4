"""L2: peer caches over real HTTP on 127.0.0.1, peers in separate processes."""

from __future__ import annotations

import os
import socket
import time

import h11
import pytest
import trio

from r2fs.engine import peers as peermod
from r2fs.engine.peers import PeerApp, PeerServer, PeerSet, rank, sign

from conftest import CHUNK, nodes_gone
from helpers import rand


async def http_get(url: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    conn = h11.Connection(h11.CLIENT)
    async with stream:
        await stream.send_all(conn.send(h11.Request(
            method="GET", target=path, headers=[("host", host), ("connection", "close"), *headers])))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        status, body = 0, bytearray()
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(1 << 16))
            elif isinstance(ev, h11.Response):
                status = ev.status_code
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return status, bytes(body)


async def test_b_reads_a_chunk_only_a_has_with_the_nodes_gone(small_cluster, bucket, peer_process):
    c = small_cluster
    data = rand(5 * CHUNK, seed=11)
    await bucket.put("obj", data)
    a_proc, a_url = peer_process(c.path, "a")
    # B: this process, with A as the upper tier of every chunk
    c.reader.configure(cache_size=64 << 20, peers=[a_url], snapshots=False)
    assert await (await bucket.get("obj")).read() == data  # A fetched from the nodes, cached
    figs = c.reader.figures()
    assert figs["tiers"]["l2"]["hits"] == 5 and figs["tiers"]["nodes"]["hits"] == 0
    c.reader.l1.clear()  # only A has the chunks cached now
    with nodes_gone(c):
        assert await (await bucket.get("obj")).read() == data
    figs = c.reader.figures()
    assert figs["tiers"]["l2"]["hits"] == 10 and figs["tiers"]["nodes"]["hits"] == 0


async def test_each_other_as_peers(small_cluster, bucket, peer_process):
    """A and B each name the other; every chunk is fetched from the nodes once in total."""
    c = small_cluster
    data = rand(16 * CHUNK, seed=12)
    await bucket.put("obj", data)
    c.reader.configure(cache_size=64 << 20, peer_listen="127.0.0.1:0", snapshots=False)
    b_url = c.reader.self_url
    a_proc, a_url = peer_process(c.path, "a", b_url)
    c.reader.configure(cache_size=64 << 20, peers=[a_url, b_url], peer_listen=b_url[7:],
                       snapshots=False)
    assert await (await bucket.get("obj")).read() == data
    figs = c.reader.figures()
    mine = [i for i in range(16)
            if rank((await bucket.head("obj")).chunks[i].id, [a_url, b_url])[0] == b_url]
    # B is the upper tier of `mine` (reads them itself), A of the others
    assert figs["tiers"]["nodes"]["hits"] == len(mine)
    assert figs["tiers"]["l2"]["hits"] == 16 - len(mine)
    assert 0 < len(mine) < 16


async def test_peer_killed_mid_read_completes_from_the_nodes(small_cluster, bucket, peer_process):
    c = small_cluster
    data = rand(40 * CHUNK, seed=13)
    await bucket.put("obj", data)
    a_proc, a_url = peer_process(c.path, "a")
    c.reader.configure(cache_size=64 << 20, peers=[a_url], snapshots=False)
    got = bytearray()
    body = await bucket.get("obj")
    async for piece in body:
        got += piece
        if len(got) == CHUNK:
            a_proc.kill()
            a_proc.wait()
    assert bytes(got) == data
    figs = c.reader.figures()
    assert figs["tiers"]["l2"]["hits"] >= 1
    assert figs["tiers"]["nodes"]["hits"] >= 1
    assert figs["tiers"]["l2"]["hits"] + figs["tiers"]["nodes"]["hits"] == 40
    assert figs["events"]["peer_errors"] >= 1
    assert figs["peers"][a_url] in ("open", "half-open")


async def test_lying_peer_costs_a_retry_never_wrong_data(small_cluster, bucket):
    c = small_cluster
    data = rand(6 * CHUNK, seed=14)
    await bucket.put("obj", data)
    served = []

    async def lying_source(cid: bytes) -> bytes | None:
        rec = c.chunk_record(cid)
        sealed = bytearray(c.chunks.read_sealed(cid, rec["g"], rec["p"], rec["l"]))
        sealed[len(sealed) // 2] ^= 0x40  # the right length, one altered bit
        served.append(cid)
        return bytes(sealed)

    liar = PeerServer(PeerApp(c.reader.token, lying_source), "127.0.0.1:0")
    url = liar.start()
    try:
        c.reader.configure(cache_size=64 << 20, peers=[url], snapshots=False)
        assert await (await bucket.get("obj")).read() == data
        figs = c.reader.figures()
        assert served and figs["events"]["peer_corrupt"] >= 1
        assert figs["tiers"]["nodes"]["hits"] == 6 and figs["tiers"]["l2"]["hits"] == 0
        # nothing the liar sent reached L1: everything there opens and is right
        c.reader.configure(cache_size=64 << 20, snapshots=False)
        with nodes_gone(c):
            assert await (await bucket.get("obj")).read() == data
    finally:
        liar.stop()


async def test_short_answer_and_silent_peer_fall_back_to_the_nodes(small_cluster, bucket, monkeypatch):
    c = small_cluster
    data = rand(12 * CHUNK, seed=15)
    await bucket.put("obj", data)

    async def short_source(cid: bytes) -> bytes | None:
        return b"\x01" * 100

    short = PeerServer(PeerApp(c.reader.token, short_source), "127.0.0.1:0")
    url = short.start()
    try:
        c.reader.configure(cache_size=0, peers=[url], snapshots=False)
        assert await (await bucket.get("obj")).read() == data
        assert c.reader.figures()["events"]["peer_errors"] >= 1
    finally:
        short.stop()
    # a peer that accepts connections and never answers: the timeout, then the breaker
    monkeypatch.setattr(peermod, "BASE_TIMEOUT", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        c.reader.configure(cache_size=0, peers=[url], snapshots=False)
        before = c.reader.figures()["events"]["peer_errors"]
        start = time.monotonic()
        assert await (await bucket.get("obj")).read() == data
        elapsed = time.monotonic() - start
        figs = c.reader.figures()
        # only the requests already in flight (read-ahead) time out; then the breaker
        # is open and the other chunks go straight to the nodes
        assert 1 <= figs["events"]["peer_errors"] - before <= 1 + c.reader.readahead.window
        assert figs["peers"][url] == "open"
        assert elapsed < 3
    finally:
        silent.close()


async def test_forged_requests_are_refused(small_cluster, bucket, peer_process):
    c = small_cluster
    await bucket.put("obj", rand(CHUNK, seed=16))
    cid = (await bucket.head("obj")).chunks[0].id
    _, url = peer_process(c.path, "a")
    path = "/_r2fs/peer/chunk/" + cid.hex()
    assert (await http_get(url, path, []))[0] == 401
    forged = sign(b"not the cluster token" + bytes(11), "GET", path)
    assert (await http_get(url, path, forged))[0] == 403
    stale = sign(c.reader.token, "GET", path, now=time.time() - 3600)
    assert (await http_get(url, path, stale))[0] == 403
    other = sign(c.reader.token, "GET", "/_r2fs/peer/chunk/" + "00" * 32)
    assert (await http_get(url, path, other))[0] == 403  # signed for another path
    status, body = await http_get(url, path, sign(c.reader.token, "GET", path))
    assert status == 200
    assert bytes(c.chunks.unseal(cid, body)) == rand(CHUNK, seed=16)  # sealed, and authentic
    assert rand(CHUNK, seed=16)[:64] not in body
    missing = "/_r2fs/peer/chunk/" + "ab" * 32
    assert (await http_get(url, missing, sign(c.reader.token, "GET", missing)))[0] == 404
    assert (await http_get(url, "/somebucket/key", sign(c.reader.token, "GET", "/x")))[0] == 404


def test_rendezvous_spreads_and_moves_only_the_lost_peers_chunks():
    peers = [f"http://127.0.0.1:{9000 + i}" for i in range(4)]
    chunks = [os.urandom(32) for _ in range(2000)]
    owner = {cid: rank(cid, peers)[0] for cid in chunks}
    counts = {p: sum(1 for o in owner.values() if o == p) for p in peers}
    assert all(350 < n < 650 for n in counts.values()), counts
    survivors = peers[1:]
    for cid in chunks:
        new = rank(cid, survivors)[0]
        if owner[cid] != peers[0]:
            assert new == owner[cid]


def test_peer_set_skips_itself_and_open_breakers():
    me, other = "http://127.0.0.1:1", "http://127.0.0.1:2"
    ps = PeerSet([me, other], b"t" * 32, self_url=me)
    assert list(ps.peers) == [other]
    cid_mine = next(c for c in (os.urandom(32) for _ in range(1000)) if rank(c, [me, other])[0] == me)
    cid_other = next(c for c in (os.urandom(32) for _ in range(1000))
                     if rank(c, [me, other])[0] == other)
    assert ps.choose(cid_mine) is None
    assert ps.choose(cid_other).url == other
    ps.peers[other].breaker.failure()
    assert ps.choose(cid_other) is None


async def test_peer_app_works_as_asgi_under_hypercorn(small_cluster, bucket):
    """The gateway mounts `reader.peer_app()` under /_r2fs/ on its hypercorn server."""
    from functools import partial

    from hypercorn.config import Config
    from hypercorn.trio import serve

    c = small_cluster
    data = rand(CHUNK, seed=17)
    await bucket.put("obj", data)
    cid = (await bucket.head("obj")).chunks[0].id
    path = "/_r2fs/peer/chunk/" + cid.hex()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, c.reader.peer_app(), config, mode="asgi",
                                            shutdown_trigger=stop.wait))
        url = binds[0]
        try:
            assert (await http_get(url, path, []))[0] == 401
            status, body = await http_get(url, path, sign(c.reader.token, "GET", path))
            assert status == 200 and bytes(c.chunks.unseal(cid, body)) == data
            # and a reader using it as a peer gets its chunks from it
            c.reader.configure(cache_size=0, peers=[url], snapshots=False)
            assert await (await bucket.get("obj")).read() == data
            assert c.reader.figures()["tiers"]["l2"]["hits"] == 1
        finally:
            stop.set()


def test_tls_gateway_names_itself_with_https_but_peers_are_http():
    me = "https://127.0.0.1:9443"
    ps = PeerSet(["http://127.0.0.1:2"], b"t" * 32, self_url=me)
    assert ps.self_url == me and list(ps.peers) == ["http://127.0.0.1:2"]
    with pytest.raises(peermod.PeerError, match="plain http"):
        PeerSet(["https://127.0.0.1:3"], b"t" * 32)


async def test_damaged_entry_in_the_peers_l1_never_reaches_the_reader(small_cluster, bucket,
                                                                      peer_process, tmp_path):
    c = small_cluster
    data = rand(2 * CHUNK, seed=18)
    await bucket.put("obj", data)
    proc, url = peer_process(c.path, "a")
    c.reader.configure(cache_size=0, peers=[url], snapshots=False)
    assert await (await bucket.get("obj")).read() == data  # A caches both chunks
    seg_dir = tmp_path / "cache-a" / "slot0"
    from r2fs.engine.cache import _HEADER, _cost

    for seg in seg_dir.glob("seg-*"):  # bit rot under A's feet: every entry's ciphertext
        blob = bytearray(seg.read_bytes())
        off = 0
        while off < len(blob):
            length = _HEADER.unpack(blob[off:off + _HEADER.size])[3]
            blob[off + _HEADER.size + 1000] ^= 0x10
            off += _cost(length)
        seg.write_bytes(bytes(blob))
    before = c.reader.figures()
    assert await (await bucket.get("obj")).read() == data
    after = c.reader.figures()
    # A passed on entries it had written itself; B caught them (the breaker opens at
    # the first: the second is caught too only if it was already in flight) and
    # both chunks came from the nodes
    assert 1 <= after["events"]["peer_corrupt"] - before["events"]["peer_corrupt"] <= 2
    assert after["tiers"]["nodes"]["hits"] - before["tiers"]["nodes"]["hits"] == 2
    # restarted, A no longer trusts its entries: it checks, drops and refetches them
    proc.kill()
    proc.wait()
    proc, url = peer_process(c.path, "a")
    c.reader.configure(cache_size=0, peers=[url], snapshots=False)
    assert await (await bucket.get("obj")).read() == data
    figs = c.reader.figures()
    assert figs["events"]["peer_corrupt"] == after["events"]["peer_corrupt"]
    assert figs["tiers"]["l2"]["hits"] - after["tiers"]["l2"]["hits"] == 2


async def test_connections_are_kept_alive_and_a_closed_idle_one_is_survived(monkeypatch):
    """Keep-alive: several chunks over one connection, each request still signed;
    a pooled connection the server has closed costs one fresh connection, no error."""
    token = os.urandom(32)
    chunks = {bytes([i]) * 32: os.urandom(CHUNK + i) for i in range(4)}
    asked: list[bytes] = []

    async def source(cid: bytes) -> bytes | None:
        asked.append(cid)
        return chunks.get(cid)

    server = PeerServer(PeerApp(token, source), "127.0.0.1:0")
    url = server.start()
    peer = peermod.Peer(url, token)
    try:
        for _ in range(3):
            for cid, sealed in chunks.items():
                assert bytes(await peer.fetch_chunk(cid, len(sealed))) == sealed
        assert len(asked) == 12 and peer.connects == 1
        with pytest.raises(peermod.PeerMiss):  # a 404 keeps the connection too
            await peer.fetch_chunk(b"\x09" * 32, CHUNK)
        assert peer.connects == 1
        # a request signed with another token is refused on a kept-alive connection too
        stranger = peermod.Peer(url, os.urandom(32))
        with pytest.raises(peermod.PeerError, match="HTTP 403"):
            await stranger.fetch_chunk(b"\x00" * 32, CHUNK)
        stranger.close()

        # the server closes idle connections: seen before use, a fresh one is opened
        server.IDLE_TIMEOUT = 0.2
        cid, sealed = next(iter(chunks.items()))
        assert bytes(await peer.fetch_chunk(cid, len(sealed))) == sealed  # now waits 0.2 s idle
        await trio.sleep(0.5)
        assert bytes(await peer.fetch_chunk(cid, len(sealed))) == sealed
        assert peer.connects == 2
        # ... and when the close is not seen in time (it races the request): one retry
        await trio.sleep(0.5)
        monkeypatch.setattr(peermod, "_idle_and_open", lambda sock: True)
        assert bytes(await peer.fetch_chunk(cid, len(sealed))) == sealed
        assert peer.connects == 3
        assert peer.breaker.state == "closed"
    finally:
        peer.close()
        server.stop()


async def test_pool_is_bounded_and_closed():
    """At most POOL_SIZE idle connections per peer; close() closes them."""
    token = os.urandom(32)
    sealed = os.urandom(1000)

    async def source(cid: bytes) -> bytes | None:
        await trio.sleep(0.05)  # keep the requests in flight together
        return sealed

    server = PeerServer(PeerApp(token, source), "127.0.0.1:0")
    url = server.start()
    peer = peermod.Peer(url, token)
    try:
        async with trio.open_nursery() as nursery:
            for i in range(peer.POOL_SIZE + 4):
                nursery.start_soon(peer.fetch_chunk, bytes([i]) * 32, len(sealed))
        assert peer.connects == peer.POOL_SIZE + 4
        assert len(peer._pool._idle) == peer.POOL_SIZE
        socks = [s for _, s in peer._pool._idle]
        peer.close()
        assert all(s.fileno() == -1 for s in socks)
    finally:
        server.stop()


async def test_staged_chunks_are_read_from_the_writers_peer_endpoint(tmp_path):
    """A local-mode write on one "host" (a process with its own staging directory) is
    readable from another before replication: through the writer's peer endpoint."""
    import shutil
    from r2fs.engine.store import Cluster as _Cluster
    a_dir = str(tmp_path / "a")
    a = _Cluster.init(a_dir, nodes=3, k=2, m=1)
    b_dir = str(tmp_path / "b")
    os.makedirs(b_dir)
    for name in ("cluster.toml", "master.key"):
        shutil.copy(os.path.join(a_dir, name), b_dir)
    with open(os.path.join(b_dir, "cluster.toml")) as f:  # the same nodes and metadata
        text = f.read().replace('path = "nodes/', f'path = "{a_dir}/nodes/')
    with open(os.path.join(b_dir, "cluster.toml"), "w") as f:
        f.write(text)
    os.symlink(os.path.join(a_dir, "meta"), os.path.join(b_dir, "meta"))
    b = _Cluster.open(b_dir)
    try:
        a.reader.configure(cache_dir=str(tmp_path / "ca"), cache_size=1 << 20,
                           peer_listen="127.0.0.1:0", snapshots=False)
        a.writer.configure(mode="local")
        await a.create_bucket("stg")
        data = os.urandom(300 * 1024)
        await a.bucket("stg").put("k", data)
        rec = a.chunk_record((await a.bucket("stg").head("k")).chunks[0].id)
        assert rec["loc"] == "staging" and rec["w"] == a.reader.self_url
        assert not os.listdir(os.path.join(b_dir, "staging")) if os.path.exists(
            os.path.join(b_dir, "staging")) else True
        assert await (await b.bucket("stg").get("k")).read() == data
        assert b.reader.stats.hits["staging"] == 1
    finally:
        b.close()
        a.close()
