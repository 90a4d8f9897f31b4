"""The PostgreSQL metadata engine, against a real server (Debian's postgresql-15).

Each test gets its own database; the server is shared by the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest
import trio

from helpers import ok
from r2fs.engine import feed, metasnap
from r2fs.engine.errors import (ClusterError, MetadataUnavailable, NoSuchKey, PreconditionFailed,
                                UnsupportedFormat)
from r2fs.engine.meta import postgresql as pgmod
from r2fs.engine.store import Cluster, PutItem
from r2fs.engine.types import Conditional


def cli(cluster: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("R2FS_CLUSTER", "R2FS_DEBUG", "R2FS_META_URL")}
    return subprocess.run([sys.executable, "-m", "r2fs", "--cluster", cluster, *args],
                          capture_output=True, env=env, timeout=120, check=False)


@pytest.fixture
def pg_cluster(tmp_path, pg_url):
    c = Cluster.init(str(tmp_path / "cluster"), meta_url=pg_url)
    try:
        yield c
    finally:
        c.close()


async def test_listing_is_utf8_byte_order_including_long_keys(pg_cluster):
    await pg_cluster.create_bucket("order")
    b = pg_cluster.bucket("order")
    keys = ["a", "a/b", "a0", "é", "z", "\U0001F600", "a" * 1024, "a" * 1023 + "b", "A", "~"]
    for k in keys:
        await b.put(k, k.encode("utf-8")[:10])
    listed = [o.key for o in (await b.list(limit=1000)).objects]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))
    page = await b.list(prefix="a", delimiter="/", limit=1000)
    assert page.delimited_prefixes == ["a/"]
    assert (await b.get("a" * 1024)).__class__.__name__ == "ObjectBody"
    assert await b.delete(["a", "nope"])
    assert [o.key for o in (await b.list(prefix="a", limit=2)).objects] == ["a/b", "a0"]


async def test_conditional_put_race_between_engines_exactly_one_wins(pg_cluster, tmp_path):
    """Two processes' worth of engines (separate pools) race a create-if-absent on one key:
    SERIALIZABLE makes exactly one win, every other gets PreconditionFailed."""
    await pg_cluster.create_bucket("race")
    others = [Cluster.open(pg_cluster.path) for _ in range(3)]
    results: list[object] = []
    try:
        async def one(c: Cluster, i: int) -> None:
            try:
                await c.bucket("race").put("k", f"writer {i}".encode(),
                                           only_if=Conditional(etag_does_not_match="*"))
                results.append(i)
            except PreconditionFailed as e:
                results.append(e)

        for round_ in range(5):
            results.clear()
            await pg_cluster.bucket("race").delete("k")
            async with trio.open_nursery() as n:
                for i, c in enumerate(others * 2):
                    n.start_soon(one, c, i)
            winners = [r for r in results if isinstance(r, int)]
            assert len(winners) == 1, results
            body = await (await pg_cluster.bucket("race").get("k")).read()
            assert body == f"writer {winners[0]}".encode()
    finally:
        for c in others:
            c.close()


async def test_write_many_rolls_back_only_the_failing_function(pg_cluster):
    meta = pg_cluster.meta

    def good(i):
        return lambda txn: meta.put(txn, "records", b"t\0" + str(i).encode(), {"i": i}) or i

    def bad(txn):
        meta.put(txn, "records", b"t\0bad", {"x": 1})
        raise ValueError("no")

    out = meta.write_many([good(1), bad, good(2)])
    assert out[0] == 1 and isinstance(out[1], ValueError) and out[2] == 2
    assert [k for k, _ in (await pg_cluster.list_records("t"))] == ["1", "2"]


async def test_transaction_functions_rerun_after_serialization_failures(pg_cluster):
    """Many writers increment one counter: every increment lands, conflicts are retried."""
    await pg_cluster.create_bucket("cnt")
    clusters = [Cluster.open(pg_cluster.path) for _ in range(4)]
    try:
        async def bump(c):
            for _ in range(10):
                await c.add_counters("cnt", {"n": 1})
        async with trio.open_nursery() as n:
            for c in clusters:
                n.start_soon(bump, c)
    finally:
        for c in clusters:
            c.close()
    assert pg_cluster.counters()["cnt"]["n"] == 40


async def test_concurrent_creates_get_distinct_inode_numbers(pg_cluster):
    await pg_cluster.create_bucket("inos")
    clusters = [Cluster.open(pg_cluster.path) for _ in range(3)]
    try:
        async def make(c, j):
            for i in range(15):
                await c.bucket("inos").put(f"c{j}/{i}", b"x")
        async with trio.open_nursery() as n:
            for j, c in enumerate(clusters):
                n.start_soon(make, c, j)
    finally:
        for c in clusters:
            c.close()
    with pg_cluster.meta.read() as txn:
        inos = [m["i"] for _, m in pg_cluster.meta.objects.scan(txn, "inos")]
    assert len(inos) == 45 and len(set(inos)) == 45


def _count_messages(monkeypatch) -> list[str]:
    """Every message the engine sends to the server (each one round trip): its simple
    queries and anything through psycopg cursors."""
    sent: list[str] = []
    simple, execute = pgmod.PgTxn._simple, psycopg.Cursor.execute

    def counted_simple(self, sql, *a, **k):
        sent.append(sql)
        return simple(self, sql, *a, **k)

    def counted_execute(self, query, *a, **k):
        sent.append(str(query))
        return execute(self, query, *a, **k)

    monkeypatch.setattr(pgmod.PgTxn, "_simple", counted_simple)
    monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
    return sent


async def test_round_trips_per_operation(pg_cluster, monkeypatch):
    """What the speed of a networked engine comes down to: a head is one round trip,
    a create, rename or delete two, a group commit of many puts or unlinks two."""
    await pg_cluster.create_bucket("trips")
    b = pg_cluster.bucket("trips")
    await b.put("warm", b"w")  # (the first create fetches a block of inode numbers)
    sent = _count_messages(monkeypatch)

    async def trips(op):
        del sent[:]
        out = await op
        return len(sent), out

    assert (await trips(b.put("d/a", b"aaa")))[0] == 2
    assert "EXECUTE r2fs_cm_0_1_1 (" in sent[1]  # the commit: a prepared statement
    n, info = await trips(b.head("d/a"))
    assert n == 1 and info.size == 3
    n, listing = await trips(b.list(prefix="d/", limit=1))
    assert n == 1 and [o.key for o in listing.objects] == ["d/a"]
    assert "LIMIT 2)" in sent[0]  # (no page of 64 inline objects for one name)
    del sent[:]
    with pytest.raises(NoSuchKey):
        await b.head("d/nope")
    assert len(sent) == 1
    n, (info, first) = await trips(b.head_and_first("d", "d/"))
    assert n == 1 and info is None and first.key == "d/a"
    n, (info, first) = await trips(b.head_and_first("d/a", "d/a/"))
    assert n == 1 and info.key == "d/a" and first is None
    assert (await trips(b.rename("d/a", "d/b")))[0] == 2
    n, out = await trips(b.put_many([PutItem(f"m/{i}", b"x" * i) for i in range(20)]))
    assert n == 2 and all(not isinstance(o, Exception) for o in out)
    n, gone = await trips(b.delete([f"m/{i}" for i in range(20)] + ["d/b"]))
    assert n == 2 and len(gone) == 21
    assert (await trips(b.list(limit=10)))[1].objects[0].key == "warm"


async def test_reads_that_need_more_than_one_statement_run_in_a_snapshot(pg_cluster):
    """A head of a hard link reads its inode record too: `view` runs it again in a
    transaction and the answer is the linked content, through either name."""
    await pg_cluster.create_bucket("links")
    b = pg_cluster.bucket("links")
    await b.put("f", b"content")
    await b.link("f", "g")
    for name in ("f", "g"):
        info = await b.head(name)
        assert info.size == 7 and info.nlink == 2
    assert [o.size for o in (await b.list(limit=5)).objects] == [7, 7]


def test_prepared_statements_are_tracked_through_failed_transactions(pg_cluster):
    """Statements PREPAREd in a transaction that then fails stay prepared (a rollback
    does not undo a PREPARE); what the engine believes each connection has is what the
    server has, so no EXECUTE ever names a missing statement."""
    meta = pg_cluster.meta

    def fails(txn):
        meta.prefetch(txn, [("buckets", b"nope")], [("nope", "a"), ("nope", "b")])
        txn.query("SELECT 1/0")

    for _ in range(3):
        with pytest.raises(ClusterError, match="division by zero"):
            meta.write(fails)
        with meta.read() as txn:
            assert meta.get(txn, "buckets", b"nope") is None
    for conn in list(meta.pool._idle):
        names = {r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements")}
        assert names == pgmod._PREPARED[id(conn)] and names


async def test_rename_prefix_is_all_or_nothing_for_a_concurrent_lister(pg_cluster):
    await pg_cluster.create_bucket("ren")
    b = pg_cluster.bucket("ren")
    from r2fs.engine.store import PutItem
    await b.put_many([PutItem(f"src/{i:05d}", b"x") for i in range(2000)])
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def lister():
        other = Cluster.open(pg_cluster.path)
        try:
            while not done.is_set():
                with other.meta.read() as txn:
                    src = sum(1 for _ in other.meta.objects.scan(txn, "ren", "src/"))
                    dst = sum(1 for _ in other.meta.objects.scan(txn, "ren", "dst/"))
                seen.append((src, dst))
        finally:
            other.close()

    t = threading.Thread(target=lister)
    t.start()
    try:
        await trio.sleep(0.05)
        assert await b.rename_prefix("src/", "dst/") == 2000
        await trio.sleep(0.05)
    finally:
        done.set()
        await trio.to_thread.run_sync(t.join)
    assert set(seen) <= {(2000, 0), (0, 2000)} and (0, 2000) in seen, set(seen)


async def test_change_feed_waits_for_older_open_transactions(pg_cluster, pg_url):
    """A change committed while an older transaction is open is not reported until that
    one ends (it might still add changes before it); then nothing is skipped."""
    await pg_cluster.create_bucket("feed")
    b = pg_cluster.bucket("feed")
    seq = pg_cluster.change_seq()
    holder = psycopg.connect(pg_url)
    try:
        holder.execute("SELECT pg_current_xact_id()")  # takes an xid, stays open
        await b.put("late", b"1")
        assert pg_cluster.changes_since(seq) == []
        holder.commit()
        changes = pg_cluster.changes_since(seq)
        assert [c.key for c in changes] == ["late"]
        assert pg_cluster.change_seq() == changes[-1].seq
    finally:
        holder.close()
    await b.put("next", b"2")
    after = pg_cluster.changes_since(changes[-1].seq)
    assert [c.key for c in after] == ["next"]


async def test_change_feed_pruned_past_a_poller_says_refresh_everything(pg_cluster):
    await pg_cluster.create_bucket("prune")
    b = pg_cluster.bucket("prune")
    seq = pg_cluster.change_seq()
    for i in range(5):
        await b.put(f"k{i}", b"x")
    assert pg_cluster.meta.prune_changes(keep=2) == 3
    (ch,) = pg_cluster.changes_since(seq)
    assert (ch.bucket, ch.key) == ("", "") and ch.seq == pg_cluster.change_seq()
    assert [c.key for c in pg_cluster.changes_since(ch.seq)] == []


def _late(pg_url: str, bucket: str, keys: list[str]) -> psycopg.Connection:
    """An open transaction (its own connection) that has written change rows for `keys`
    and not committed: it holds an xid lower than every commit made after this."""
    conn = psycopg.connect(pg_url)
    for i, k in enumerate(keys):
        conn.execute("INSERT INTO r2fs_changes (ord, bucket, key) VALUES (%s, %s, %s)",
                     (i, bucket, k))
    return conn


async def test_change_feed_reads_past_an_open_transaction_then_delivers_its_late_changes(
        pg_cluster, pg_url):
    """A reader is not held back by an open transaction (any on the server: here one in
    another database, and one in this one that writes changes), and the changes of the
    one that commits late, with lower seqs than changes already read, still come."""
    await pg_cluster.create_bucket("feed")
    b = pg_cluster.bucket("feed")
    feed = pg_cluster.change_feed()
    elsewhere = psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres")
    late = _late(pg_url, "feed", ["late"])
    try:
        elsewhere.execute("SELECT pg_current_xact_id()")  # holds an xid, another database
        await b.put("early", b"1")
        (early,) = feed.read()
        assert early.key == "early"
        assert feed.read() == []
        late.commit()
        (got,) = feed.read()
        assert got.key == "late" and got.seq < early.seq  # lower seq, delivered after
        assert feed.read() == []
        elsewhere.rollback()
        await b.put("next", b"2")
        assert [c.key for c in feed.read()] == ["next"]
        assert feed.read() == []
    finally:
        late.close()
        elsewhere.close()


async def test_change_feed_cut_by_its_limit_delivers_every_change_once(pg_cluster, pg_url):
    await pg_cluster.create_bucket("cut")
    b = pg_cluster.bucket("cut")
    meta = pg_cluster.meta
    cursor = meta.feed_start()
    late = _late(pg_url, "cut", [f"late{i}" for i in range(7)])
    aborted = _late(pg_url, "cut", ["never"])
    try:
        for i in range(5):
            await b.put(f"k{i}", b"x")
        got: list[str] = []
        batch = meta.feed_read(cursor, 2)
        while batch.changes or batch.more:
            got += [k for _, _, k in batch.changes]
            batch = meta.feed_read(batch.cursor, 2)
        assert got == [f"k{i}" for i in range(5)]
        late.commit()
        aborted.rollback()
        for i in range(5, 8):
            await b.put(f"k{i}", b"x")
        got = []
        batch = meta.feed_read(batch.cursor, 2)
        while batch.changes or batch.more:
            got += [k for _, _, k in batch.changes]
            batch = meta.feed_read(batch.cursor, 2)
        assert sorted(got) == sorted([f"late{i}" for i in range(7)] + ["k5", "k6", "k7"])
        assert not batch.cursor.pending  # nothing left waiting
    finally:
        late.close()
        aborted.close()


async def test_change_feed_pruned_before_a_reader_got_there_says_refresh_everything(pg_cluster,
                                                                                   pg_url):
    await pg_cluster.create_bucket("prune")
    b = pg_cluster.bucket("prune")
    behind = pg_cluster.change_feed()
    for i in range(5):
        await b.put(f"k{i}", b"x")
    assert pg_cluster.meta.prune_changes(keep=2) == 3
    assert behind.read() == [feed.EVERYTHING]
    assert behind.read() == []
    # a transaction the reader saw in progress, whose rows a prune deleted after it ended
    waiting = pg_cluster.change_feed()
    late = _late(pg_url, "prune", ["late"])
    await b.put("a", b"x")
    assert [c.key for c in waiting.read()] == ["a"]
    late.commit()
    late.close()
    for i in range(3):
        await b.put(f"b{i}", b"x")
    assert pg_cluster.meta.prune_changes(keep=2) == 5  # k3, k4, late, a, b0
    assert waiting.read() == [feed.EVERYTHING]
    await b.put("after", b"x")
    assert [c.key for c in waiting.read()] == ["after"]


async def test_rows_committed_below_the_prune_mark_stay_for_readers_waiting_on_them(pg_cluster,
                                                                                    pg_url):
    """A transaction open while a prune passed its xid leaves its rows below the mark:
    later prunes keep them, and a reader that saw it in progress after that prune reads
    them (no refresh: a reader that had not looked since could not tell)."""
    await pg_cluster.create_bucket("mark")
    b = pg_cluster.bucket("mark")
    waiting = pg_cluster.change_feed()
    late = _late(pg_url, "mark", ["late"])
    try:
        for i in range(5):
            await b.put(f"k{i}", b"x")
        assert [c.key for c in waiting.read()] == [f"k{i}" for i in range(5)]
        assert pg_cluster.meta.prune_changes(keep=2) == 3
        assert waiting.read() == []  # sees it still in progress, after that prune
        late.commit()
        assert pg_cluster.meta.prune_changes(keep=0) == 2  # k3, k4; not "late"
        assert [c.key for c in waiting.read()] == ["late"]
    finally:
        late.close()


async def test_notify_wakes_a_waiting_poller(pg_cluster):
    await pg_cluster.create_bucket("wake")
    other = Cluster.open(pg_cluster.path)
    try:
        await other.wait_for_change(0.01)  # LISTEN is set up
        woke_after: list[float] = []

        async def waiter():
            t = time.monotonic()
            await other.wait_for_change(20)
            woke_after.append(time.monotonic() - t)

        async with trio.open_nursery() as n:
            n.start_soon(waiter)
            await trio.sleep(0.2)
            await pg_cluster.bucket("wake").put("k", b"v")
        assert woke_after and woke_after[0] < 5
    finally:
        other.close()


async def test_a_poller_for_others_only_is_not_woken_by_its_own_commits(pg_cluster):
    await pg_cluster.create_bucket("own")
    other = Cluster.open(pg_cluster.path)
    try:
        await pg_cluster.wait_for_change(0.01, others_only=True)  # LISTEN is set up
        woke: list[str] = []

        async def waiter():
            t = time.monotonic()
            await pg_cluster.wait_for_change(3, others_only=True)
            woke.append("early" if time.monotonic() - t < 2.5 else "timeout")

        async with trio.open_nursery() as n:
            n.start_soon(waiter)
            await trio.sleep(0.2)
            for i in range(5):
                await pg_cluster.bucket("own").put(f"k{i}", b"v")  # our own: no wake
        assert woke == ["timeout"]
        async with trio.open_nursery() as n:
            n.start_soon(waiter)
            await trio.sleep(0.2)
            await other.bucket("own").put("theirs", b"v")  # another process's
        assert woke == ["timeout", "early"]
    finally:
        other.close()


def test_schema_version_newer_is_refused_and_cluster_id_checked(pg_cluster, pg_url, tmp_path):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE r2fs_schema SET version = 99")
    with pytest.raises(UnsupportedFormat, match="schema version 99"):
        Cluster.open(pg_cluster.path)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE r2fs_schema SET version = 1")
    with pytest.raises(ClusterError, match="another r2fs cluster"):
        Cluster.init(str(tmp_path / "second"), meta_url=pg_url)
    assert not os.path.exists(tmp_path / "second" / "master.key")  # nothing half-made


def test_migrations_run_at_open(pg_cluster, pg_url, monkeypatch):
    monkeypatch.setattr(pgmod, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(pgmod.MIGRATIONS, 1, ["CREATE TABLE r2fs_added (x int)"])
    Cluster.open(pg_cluster.path).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM r2fs_schema").fetchone()[0] == 2
        assert conn.execute("SELECT to_regclass('r2fs_added') IS NOT NULL").fetchone()[0]


async def test_server_crash_mid_workload_clean_errors_then_recovery(pg_server, tmp_path):
    """PostgreSQL stopped with -m immediate while a writer runs: the writer gets clean
    MetadataUnavailable errors (never a hang), and once the server is back every write
    that was acknowledged is there."""
    from pgserver import PgServer
    own = PgServer()  # a server of its own: this test crashes it
    try:
        c = Cluster.init(str(tmp_path / "crash"), meta_url=own.new_database())
        try:
            await c.create_bucket("crash")
            b = c.bucket("crash")
            acked: list[str] = []
            errors: list[BaseException] = []
            stop = trio.Event()

            async def writer():
                i = 0
                while not stop.is_set():
                    key = f"k{i:05d}"
                    i += 1
                    try:
                        await b.put(key, key.encode())
                        acked.append(key)
                    except MetadataUnavailable as e:
                        errors.append(e)
                        await trio.sleep(0.05)

            async with trio.open_nursery() as n:
                n.start_soon(writer)
                await trio.sleep(0.5)
                await trio.to_thread.run_sync(own.stop, "immediate")
                await trio.sleep(1.0)
                n_before = len(acked)
                await trio.to_thread.run_sync(own.start)
                with trio.fail_after(30):
                    while len(acked) < n_before + 20:
                        await trio.sleep(0.05)
                stop.set()
            assert errors, "the writer never noticed the server was down"
            assert all("PostgreSQL" in str(e) for e in errors), {str(e) for e in errors}
            for key in acked:
                assert await (await b.get(key)).read() == key.encode()
        finally:
            c.close()
    finally:
        own.close()


def test_cli_init_meta_and_snapshot_says_what_to_use(tmp_path, pg_url):
    path = str(tmp_path / "cli")
    out = ok(cli(path, "init", "--meta", pg_url, "--nodes", "3", "--k", "2", "--m", "1"))
    assert "metadata: PostgreSQL at" in out
    ok(cli(path, "bucket", "create", "clib"))
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    ok(cli(path, "put", str(src), "clib/f"))
    assert "f" in ok(cli(path, "ls", "clib"))
    r = cli(path, "meta", "snapshot")
    assert r.returncode != 0 and b"pg_dump" in r.stderr and b"Traceback" not in r.stderr
    bad = cli(str(tmp_path / "bad"), "init", "--meta", "mysql://x/y")
    assert bad.returncode != 0 and b"not a metadata engine URL" in bad.stderr


def test_cli_init_unreachable_server_is_one_line_and_leaves_nothing(tmp_path):
    path = str(tmp_path / "down")
    r = cli(path, "init", "--meta", "postgresql://postgres@127.0.0.1:1/none")
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "cannot reach the metadata database" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(path, "master.key"))


def test_snapshot_api_refuses_on_postgresql(pg_cluster):
    with pytest.raises(ClusterError, match="pg_dump"):
        metasnap.take_snapshot(pg_cluster)
    assert metasnap.gc_horizon(pg_cluster) is None


def test_meta_migrate_copies_verifies_and_switches(tmp_path, pg_url):
    """An LMDB cluster grows into PostgreSQL: every object, record and chunk comes along."""
    path = str(tmp_path / "grow")
    ok(cli(path, "init", "--nodes", "3", "--k", "2", "--m", "1"))

    async def fill():
        with Cluster.open(path) as c:
            await c.create_bucket("grow")
            b = c.bucket("grow")
            for i in range(300):
                await b.put(f"d/{i:04d}", b"x" * (i % 7))
            await b.put("big", os.urandom(600 * 1024))
            await c.put_record("keys", "ak", {"secret": "s"})
            return [(o.key, o.etag) for o in (await b.list(limit=1000)).objects]

    before = trio.run(fill)
    out = ok(cli(path, "meta", "migrate", "--to", pg_url))
    assert "copied and verified" in out and "meta.migrated-" in out
    assert not os.path.exists(os.path.join(path, "meta"))

    async def check():
        with Cluster.open(path) as c:
            assert c.meta.url_scheme == "postgresql"
            b = c.bucket("grow")
            assert [(o.key, o.etag) for o in (await b.list(limit=1000)).objects] == before
            assert len(await (await b.get("big")).read()) == 600 * 1024
            assert (await c.get_record("keys", "ak")) == {"secret": "s"}
            await b.put("after", b"new")
            with c.meta.read() as txn:
                inos = {k: m["i"] for k, m in c.meta.objects.scan(txn, "grow")}
            after = inos.pop("after")
            assert after > max(inos.values())  # inode numbers go on where LMDB stopped
    trio.run(check)
    again = cli(path, "meta", "migrate", "--to", pg_url)
    assert again.returncode != 0 and b"already in" in again.stderr
