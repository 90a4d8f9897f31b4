"""The mount's close journal: what makes a deferred publication survive kill -9.

A small file closed through the mount is not committed to LMDB at once: a
synchronous metadata commit (an fsync, milliseconds on a busy disk) per
close() was most of the cost of writing small files, and `rsync`/`tar`
change mode, owner and times and rename right after close(). Instead, at
close() its complete content and attributes are appended here (no fsync: a
write that reached the kernel survives the death of the process, exactly
like a close() on a local disk), and the mount publishes it a moment later,
many files per metadata commit (handles.py). `fsync()` of such a file
(new, small, not published yet: sqlite's `-journal`) appends it here too and
fdatasyncs the segment (`Journal.sync`), so fsync() keeps meaning power-loss
durability on this host; so does fsync() of an in-place update of a published
file with few changed bytes (a `patch`: a database's pages, committed a moment
later, many fsyncs per metadata commit); every other fsync() commits
synchronously.

A remount (any mount of the cluster) replays journals whose mount is gone
(their lock is free): each file still unpublished is put at its last name,
only if the object there is still the version the file was based on (or
still absent) -- a newer write from elsewhere wins, as it did live.

Format 5 (`CLUSTER/fuse-journal/<random>.journal`; 4 = the same without
`patch` records, 3 = 4 without `v` in `del`, 2 = 3 without `n` and without unconditional `del`, 1 = 2
without `del` records; all still read): header `R2FJ` + u16 version; then records `u32 length | u32 crc32 | msgpack`. A torn tail
(crc mismatch, short record) ends the replay there. Records:
  {t: "put", i: id, b: bucket, k: key, d: sealed content, m: custom metadata,
   h: http metadata, c: condition, w: close time, n: inode number}
                           a closed file, a symlink, or a directory marker
                           (`k` ends in "/": mkdir); `n` is the number the
                           mount reserved for it (absent in format 2: the
                           engine's, a new one for a new object)
  {t: "patch", i, b, k, v, e, s, l, p, d, m, h, n}
                           fsync() of an in-place update not yet committed: lay
                           the pieces `p` ([offset, length], their bytes sealed
                           one after the other in `d`) over `k`, bytes past `l`
                           zeros, size `s` -- only if `k` is still version `v`
                           or has ETag `e` (a background merge changes the
                           version, not the content)
  {t: "move", i, k, c}     the unpublished file was renamed
  {t: "attrs", i, m}       attributes changed before publication
  {t: "done", i}           published, superseded or unlinked: nothing to replay
  {t: "del", i, b, k, e, v}  unlinked here, the delete not yet committed: delete
                           `k` if it is still version `v` (deletes.py) -- not by
                           ETag: an identical file made again after the unlink
                           has the same ETag, and a lost `done` (power loss)
                           must not delete it; `v` None (formats 1-3, or an
                           unpublished file's replaced object): if it still has
                           ETag `e`; e = None too (rmdir: `k` is a marker):
                           delete it whatever it is
The content is sealed with the cluster's master key (`fuse-journal`
context): no plaintext at rest. Condition `c`: None = unconditional, "" =
only if absent, otherwise the ETag the object must still have.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import uuid
import zlib
from typing import Any

import msgpack

from ..engine.errors import NoSuchBucket, NoSuchKey, PreconditionFailed, R2fsError, UnsupportedFormat
from ..engine.store import Cluster
from ..engine.types import Conditional, ObjectInfo

log = logging.getLogger("r2fs.fuse")

MAGIC = b"R2FJ"
VERSION = 5
READABLE = (1, 2, 3, 4, 5)
HEADER = MAGIC + struct.pack("<H", VERSION)
_REC = struct.Struct("<II")
CONTEXT = "fuse-journal"
SEGMENT_LIMIT = 32 << 20  # a new segment after this many bytes; old ones go once all is done


def journal_dir(cluster_path: str) -> str:
    return os.path.join(cluster_path, "fuse-journal")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def condition(c: str | None) -> Conditional | None:
    """The store condition for a journal condition."""
    if c is None:
        return None
    if c == "":
        return Conditional(etag_does_not_match="*")
    return Conditional(etag_matches=c)


class _Segment:
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, f"{uuid.uuid4().hex}.journal")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "a live mount owns this"
        os.write(self.fd, HEADER)
        self.size = len(HEADER)
        self.outstanding: set[int] = set()
        self.named = False  # its directory entry fsynced (`Journal.sync`)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        finally:
            os.close(self.fd)


class Journal:
    """Append-only records of closed-but-unpublished files (one per mount)."""

    def __init__(self, cluster: Cluster, directory: str) -> None:
        self._cluster = cluster
        self._dir = directory
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            _fsync_dir(os.path.dirname(os.path.abspath(directory)))
        self._current = _Segment(directory)
        self._segments: dict[int, _Segment] = {}  # id -> segment holding its put
        self._next = 1

    def _append(self, seg: _Segment, record: dict[str, Any]) -> None:
        body = msgpack.packb(record, use_bin_type=True)
        data = _REC.pack(len(body), zlib.crc32(body)) + body
        os.pwrite(seg.fd, data, seg.size)  # no fsync: survives kill -9; fsync() calls sync()
        seg.size += len(data)

    def put(self, bucket: str, key: str, content: bytes, meta: dict[str, str],
            http: dict[str, str] | None, cond: str | None, ino: int | None = None) -> int:
        """Record a closed file's content (or a new symlink or directory marker) and
        the inode number it is to be published with; returns its journal id."""
        if self._current.size > SEGMENT_LIMIT:
            self._rotate()
        jid = self._next
        self._next += 1
        sealed = self._cluster.seal_secret(content, CONTEXT)
        self._append(self._current, {"t": "put", "i": jid, "b": bucket, "k": key, "d": sealed,
                                     "m": meta, "h": http, "c": cond, "w": time.time(), "n": ino})
        self._current.outstanding.add(jid)
        self._segments[jid] = self._current
        return jid

    def patch(self, bucket: str, key: str, base: ObjectInfo, size: int, limit: int,
              pieces: list[tuple[int, bytes]], meta: dict[str, str],
              http: dict[str, str] | None, ino: int | None) -> int:
        """Record an fsync()'d in-place update of `base` (not committed yet); its id."""
        if self._current.size > SEGMENT_LIMIT:
            self._rotate()
        jid = self._next
        self._next += 1
        sealed = self._cluster.seal_secret(b"".join(d for _, d in pieces), CONTEXT)
        self._append(self._current, {"t": "patch", "i": jid, "b": bucket, "k": key,
                                     "v": base.version, "e": base.etag, "s": size, "l": limit,
                                     "p": [[o, len(d)] for o, d in pieces], "d": sealed,
                                     "m": meta, "h": http, "n": ino, "w": time.time()})
        self._current.outstanding.add(jid)
        self._segments[jid] = self._current
        return jid

    def delete(self, bucket: str, key: str, etag: str | None, version: str | None = None) -> int:
        """Record an unlink of `key` -- the object with `version` if known, else with
        `etag` -- (or rmdir: `key` a marker, both None) whose delete is committed a
        moment later; returns its journal id."""
        if self._current.size > SEGMENT_LIMIT:
            self._rotate()
        jid = self._next
        self._next += 1
        self._append(self._current, {"t": "del", "i": jid, "b": bucket, "k": key, "e": etag,
                                     "v": version})
        self._current.outstanding.add(jid)
        self._segments[jid] = self._current
        return jid

    def move(self, jid: int, key: str, cond: str | None) -> None:
        seg = self._segments.get(jid)
        if seg is not None:
            self._append(seg, {"t": "move", "i": jid, "k": key, "c": cond})

    def attrs(self, jid: int, meta: dict[str, str]) -> None:
        seg = self._segments.get(jid)
        if seg is not None:
            self._append(seg, {"t": "attrs", "i": jid, "m": meta})

    def sync(self) -> None:
        """Make every record so far durable (fsync() of a journaled file; blocking).

        A segment's name is made durable too, once: a power loss must not take
        away the file that the fdatasync'd records are in."""
        for seg in {id(s): s for s in (self._current, *self._segments.values())}.values():
            os.fdatasync(seg.fd)
            if not seg.named:
                _fsync_dir(self._dir)
                seg.named = True

    def done(self, jid: int) -> None:
        """Published, superseded or gone: nothing left to replay for `jid`."""
        seg = self._segments.pop(jid, None)
        if seg is None:
            return
        seg.outstanding.discard(jid)
        if seg.outstanding:
            self._append(seg, {"t": "done", "i": jid})
        elif seg is self._current:
            os.ftruncate(seg.fd, len(HEADER))  # everything published: start over
            seg.size = len(HEADER)
        else:
            seg.remove()

    def _rotate(self) -> None:
        old = self._current
        self._current = _Segment(self._dir)
        if not old.outstanding:
            old.remove()

    def close(self) -> None:
        """At unmount, after everything was published: the journal is empty."""
        for seg in {id(s): s for s in [self._current, *self._segments.values()]}.values():
            if seg.outstanding:
                log.error("journal %s still has %d unpublished files; kept for replay",
                          seg.path, len(seg.outstanding))
                os.close(seg.fd)
            else:
                seg.remove()


def _records(data: bytes) -> list[dict[str, Any]]:
    if not data.startswith(MAGIC):
        raise UnsupportedFormat("not an r2fs FUSE journal")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version not in READABLE:
        raise UnsupportedFormat(f"FUSE journal format {version} is not supported (this r2fs reads "
                                f"{', '.join(map(str, READABLE))})")
    out, pos = [], len(HEADER)
    while pos + _REC.size <= len(data):
        length, crc = _REC.unpack_from(data, pos)
        body = data[pos + _REC.size:pos + _REC.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            break  # torn tail (power loss mid-append): the records before it stand
        out.append(msgpack.unpackb(body, raw=False))
        pos += _REC.size + length
    return out


def _pending(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The puts a journal still owes, with their last name, condition and attributes."""
    state: dict[int, dict[str, Any]] = {}
    for r in records:
        jid, kind = r.get("i"), r.get("t")
        if kind in ("put", "del", "patch"):
            state[jid] = dict(r)
        elif jid in state:
            if kind == "move":
                state[jid].update(k=r["k"], c=r["c"])
            elif kind == "attrs":
                state[jid]["m"] = r["m"]
            elif kind == "done":
                del state[jid]
    return [state[j] for j in sorted(state)]


async def replay(cluster: Cluster, directory: str) -> int:
    """Publish what journals of dead mounts still owe; returns the number of files."""
    if not os.path.isdir(directory):
        return 0
    published = 0
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".journal"):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live mount's journal
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            try:
                todo = _pending(_records(data))
            except UnsupportedFormat as exc:
                log.error("journal %s not replayed: %s (left in place)", path, exc)
                continue
            failed = 0
            for r in todo:
                ok = await _publish(cluster, r)
                published += ok is True
                failed += ok is None
            if failed:
                log.error("journal %s: %d files could not be published; kept for the next mount",
                          path, failed)
            else:
                os.unlink(path)
        finally:
            os.close(fd)
    return published


async def _publish(cluster: Cluster, r: dict[str, Any]) -> bool | None:
    """True: done; False: nothing to do (newer elsewhere, bucket gone); None: failed."""
    bucket, key = r["b"], r["k"]
    deleting = r["t"] == "del"
    try:
        b = cluster.bucket(bucket)
        if r["t"] == "patch":
            await _patch(cluster, b, r)
        elif deleting:  # an unlink (rmdir) the dead mount had not committed yet
            version, etag = r.get("v"), r["e"]
            if version is not None or etag is not None:
                info = await b.head(key)
                if (info.version != version) if version is not None else (info.etag != etag):
                    raise PreconditionFailed(key)
            if not await b.delete(key) and (version is not None or etag is not None):
                raise NoSuchKey(key)
        else:
            content = cluster.open_secret(r["d"], CONTEXT)
            await b.put(key, content, custom_metadata=r["m"], http_metadata=r["h"],
                        only_if=condition(r["c"]), ino=r.get("n"))
    except (PreconditionFailed, NoSuchKey):
        log.info("journal: %s/%s changed elsewhere after it was %s here; the newer version stays",
                 bucket, key, "unlinked" if deleting else "closed")
        return False
    except NoSuchBucket:
        log.info("journal: bucket %s is gone; %s not published", bucket, key)
        return False
    except R2fsError as exc:
        log.error("journal: could not %s %s/%s: %s", "delete" if deleting else "publish", bucket, key, exc)
        return None
    log.info("journal: %s %s/%s, %s before the mount went away", "deleted" if deleting else "published",
             bucket, key, "unlinked" if deleting else "closed")
    return True


async def _patch(cluster: Cluster, b: Any, r: dict[str, Any]) -> None:
    """Lay an fsync()'d in-place update over the object it was made on."""
    info = await b.head(r["k"])
    if info.version != r["v"] and info.etag != r["e"]:
        raise PreconditionFailed(r["k"])  # written elsewhere since: the newer version stays
    data = cluster.open_secret(r["d"], CONTEXT)
    at: dict[int, int] = {}  # offset -> where its bytes start in `data`
    pos = 0
    for o, n in r["p"]:
        at[o] = pos
        pos += n
    writes = [(o, n) for o, n in r["p"]]

    async def read(offset: int, length: int) -> bytes:
        # (the engine asks for pieces of the ranges it was given)
        start = max(o for o in at if o <= offset)
        p = at[start] + offset - start
        return data[p:p + length]

    await b.update(r["k"], base=info, size=r["s"], limit=r["l"], writes=writes, read=read,
                   custom_metadata=r["m"], http_metadata=r["h"],
                   only_if=Conditional(etag_matches=info.etag), ino=r.get("n"))
