"""The FUSE close journal's formats (journal.py): format 4 written, 1 to 3 still replayed.

Journals are written by hand here exactly as each format's writer laid them
out, then replayed as a mount does at start (`journal.replay`).
"""

from __future__ import annotations

import os
import struct
import zlib

import msgpack

from fusehelp import BUCKET, run_on_cluster
from r2fs.engine.store import Cluster
from r2fs.fuse import journal as J


def _journal(directory: str, version: int, records: list[dict]) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"v{version}.journal")
    with open(path, "wb") as f:
        f.write(J.MAGIC + struct.pack("<H", version))
        for r in records:
            body = msgpack.packb(r, use_bin_type=True)
            f.write(struct.pack("<II", len(body), zlib.crc32(body)) + body)
    return path


def _put(c: Cluster, jid: int, key: str, data: bytes, cond, **extra) -> dict:
    return {"t": "put", "i": jid, "b": BUCKET, "k": key, "d": c.seal_secret(data, J.CONTEXT),
            "m": {"mode": "33188"}, "h": None, "c": cond, "w": 0.0, **extra}


def test_formats_2_and_3_replay_and_an_unknown_one_stays(tmp_path):
    path = str(tmp_path / "c")

    async def main(c: Cluster) -> None:
        b = c.bucket(BUCKET)
        old = await b.put("old", b"to be unlinked")
        await b.put("dir/", b"")
        [ino] = await c.reserve_inodes(1)
        d = J.journal_dir(path)
        _journal(d, 2, [_put(c, 1, "v2file", b"two", ""),
                        {"t": "del", "i": 2, "b": BUCKET, "k": "old", "e": old.etag}])
        _journal(d, 3, [_put(c, 1, "v3file", b"three", "", n=ino),
                        _put(c, 2, "newdir/", b"", "", n=ino + 1),
                        {"t": "del", "i": 3, "b": BUCKET, "k": "dir/", "e": None}])
        future = _journal(d, 99, [_put(c, 1, "never", b"x", "")])
        assert await J.replay(c, d) == 5
        assert await b.read_range(await b.head("v2file"), 0, 3) == b"two"
        v3 = await b.head("v3file")
        assert v3.ino == ino  # format 3: the number the mount showed
        assert (await b.head("newdir/")).ino == ino + 1
        keys = [o.key for o in (await b.list(limit=100)).objects]
        assert "old" not in keys and "dir/" not in keys and "never" not in keys
        assert os.path.exists(future)  # refused by version, left for a newer r2fs
        assert sorted(os.listdir(d)) == ["v99.journal"]
    run_on_cluster(path, main)


def test_a_replayed_unlink_deletes_only_the_version_it_unlinked(tmp_path):
    """Format 4: `del` names the version. An unlink, then the same bytes written at the
    same name (same ETag), then a power loss that takes the journal's unsynced `done`
    records: the replay must not delete the new file (by ETag it did)."""
    path = str(tmp_path / "c")

    async def main(c: Cluster) -> None:
        b = c.bucket(BUCKET)
        d = J.journal_dir(path)
        old = await b.put("x", b"same bytes")
        gone = await b.put("y", b"unlinked, delete not committed")
        j = J.Journal(c, d)  # the mount's journal, as deletes.py records unlinks
        j.delete(BUCKET, "x", old.etag, old.version)
        j.delete(BUCKET, "y", gone.etag, gone.version)
        await b.delete("x")  # the group commit ran ...
        new = await b.put("x", b"same bytes")  # ... and the name was written again
        assert new.etag == old.etag and new.version != old.version
        j.close()  # the mount dies before any `done` is durable: the file stays
        assert len(os.listdir(d)) == 1
        assert await J.replay(c, d) == 1  # y's delete only
        assert (await b.head("x")).version == new.version
        assert "y" not in [o.key for o in (await b.list(limit=10)).objects]
        assert os.listdir(d) == []
    run_on_cluster(path, main)


def test_a_replayed_patch_lays_the_fsynced_ranges_over_its_version(tmp_path):
    """Format 5: fsync() of an in-place update is a `patch` record (ranges over the
    version it was made on). The replay applies it; not over a newer write."""
    path = str(tmp_path / "c")

    async def main(c: Cluster) -> None:
        b = c.bucket(BUCKET)
        d = J.journal_dir(path)
        body = bytearray(os.urandom(700_000))  # several chunks, not inline
        db = await b.put("db", bytes(body))
        other = await b.put("other", b"o" * 300_000)
        j = J.Journal(c, d)
        pieces = [(4096, b"P" * 4096), (600_000, b"Q" * 100)]
        j.patch(BUCKET, "db", db, 800_000, 700_000, pieces, {"mode": "33188"}, None, None)
        j.patch(BUCKET, "other", other, 10, 10, [(0, b"lost")], {"mode": "33188"}, None, None)
        await b.put("other", b"newer elsewhere")
        j.close()  # the mount dies before publishing
        assert await J.replay(c, d) == 1
        for o, data in pieces:
            body[o:o + len(data)] = data
        body.extend(bytes(100_000))
        info = await b.head("db")
        assert await b.read_range(info, 0, info.size) == bytes(body)
        assert await b.read_range(await b.head("other"), 0, 100) == b"newer elsewhere"
        assert os.listdir(d) == []
    run_on_cluster(path, main)
