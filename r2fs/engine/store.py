"""The store API: the one interface the FUSE layer, the S3 layer and users share.

Modelled on R2's Workers bucket binding, async on trio. Everything below it
(LMDB, shard files, caches) is private to `r2fs.engine`.

Consistency comes from one rule: metadata is mutable and changed only inside
one LMDB write transaction per operation; data is immutable and
content-addressed. A put stores its chunks first (they are unreferenced until
the commit) and then commits the manifest, chunk refcounts and a change record
together -- so a manifest never points at a missing chunk, whatever is killed
when. Blocking work (LMDB writes, hashing, crypto, erasure coding, disk) runs in
worker threads so the trio loop stays responsive.
"""

from __future__ import annotations

import base64
import dataclasses
import binascii
import ctypes
import hashlib
import os
import time
import uuid
from collections import Counter
from decimal import Decimal, InvalidOperation
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import (Any, AsyncIterable, AsyncIterator, BinaryIO, Callable, Iterable, Iterator,
                    Sequence, TypeVar)

import trio

from . import conditions, config as cfgmod, extents as X, inodes
from .chunks import ChunkStore, borrow, give_back
from .errors import (
    BadDigest,
    BucketAlreadyExists,
    BucketNotEmpty,
    ChunkMissing,
    ClusterError,
    ClusterExists,
    ClusterNotFound,
    DataUnavailable,
    EntityTooSmall,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    KeyExists,
    NoSuchBucket,
    NotLinkable,
    NoSuchKey,
    NoSuchUpload,
    R2fsError,
    WrongMasterKey,
)
from .keys import MasterKey
from .core import Core
from .meta import CHUNK_LIVE, MetaEngine, create_engine, open_engine
from .reader import ChunkReader
from .repair import Healer
from .writer import ChunkBatch, ChunkWriter, _test_hook_kill_after
from .names import MAX_KEY_BYTES, check_bucket_name, check_key
from .slices import Merger, ReadFn, update as _update
from .types import (
    MiB,
    BucketInfo,
    DirTouch,
    Change,
    ChunkRef,
    ClusterStatus,
    Conditional,
    GcReport,
    NodeStatus,
    ObjectInfo,
    ObjectList,
    PartInfo,
    Range,
    UploadInfo,
)

PutValue = bytes | bytearray | memoryview | AsyncIterable[bytes] | BinaryIO | None
T = TypeVar("T")


@dataclass(frozen=True)
class PutItem:
    """One object of a `Bucket.put_many`: what `put` takes, with the content in memory."""
    key: str
    data: bytes | bytearray | memoryview
    http_metadata: dict[str, str] | None = None
    custom_metadata: dict[str, str] | None = None
    only_if: Conditional | None = None
    keep_links: bool = False  # a write through the mount: all names of a link change
    touch: tuple["DirTouch", ...] = ()  # directory markers changed in the same commit
    ino: int | None = None  # inode number for a new file (reserved by the mount)


#: Plaintext bytes of one put in flight at once (hashed, sealed, encoded,
#: written): bounds a put's memory whatever the chunk size (6 chunks of 4 MiB;
#: each costs ~3.5 times its size at its peak: plaintext, sealed chunk,
#: fragments, aligned write buffers). At least 2 chunks, so hashing the next
#: chunk overlaps writing the last.
PUT_INFLIGHT_BYTES = 24 * MiB
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
SMALL_INLINE_CRYPTO = 64 * 1024  # below this, seal/unseal on the loop thread (cheaper than a hop)


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


@contextmanager
def _single_errors() -> Iterator[None]:
    """Let a lone error from a nursery out as itself (callers catch NoSuchKey, BadDigest...)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = []

        def flatten(g: BaseExceptionGroup) -> None:
            for e in g.exceptions:
                flatten(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)
        flatten(group)
        errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
        if len(errors) == 1:
            raise errors[0] from None
        raise


# --- manifests ---------------------------------------------------------------------


def _info(bucket: str, key: str, m: dict, chunks: Sequence[ChunkRef] | None = None) -> ObjectInfo:
    """`chunks`: the extents of m["ch"] when the caller has them already decoded."""
    return ObjectInfo(
        bucket=bucket, key=key, size=m["s"], etag=m["e"], uploaded=m["u"], version=m["ver"],
        http_metadata=dict(m.get("h") or {}), custom_metadata=dict(m.get("c") or {}),
        checksums=dict(m.get("ck") or {}),
        parts=tuple(m["p"]) if m.get("p") else None,
        chunks=X.from_manifest(m.get("ch")) if chunks is None else tuple(chunks),
        inline_data=m.get("in"), ino=m.get("i", 0), nlink=m.get("nl", 1),
    )


def _manifest(*, size: int, etag: str, chunks: Iterable[ChunkRef], http: dict | None,
              custom: dict | None, checksums: dict | None = None, parts: Iterable[int] | None = None,
              inline: bytes | None = None, uploaded: float | None = None) -> dict:
    return {
        "s": size, "e": etag, "u": time.time() if uploaded is None else uploaded,
        "ver": uuid.uuid4().hex, "h": dict(http or {}), "c": dict(custom or {}),
        "ck": dict(checksums or {}), "p": list(parts) if parts else None,
        "ch": X.to_manifest(chunks), "in": inline,
    }


def _upload_info(upload_id: str, rec: dict) -> UploadInfo:
    return UploadInfo(rec["key"], upload_id, rec["initiated"], rec["h"], rec["c"], rec.get("ca"))


def _refs(m: dict | None) -> list[ChunkRef]:
    """The chunk references a manifest holds: one per extent naming a chunk (holes name
    none; a link's stub holds none -- its inode record does)."""
    if not m:
        return []
    return [r for r in X.from_manifest(m.get("ch")) if not r.hole]


def _ref_ids(m: dict | None) -> Counter:
    """`_refs` counted by chunk id, straight from the manifest (no extents decoded:
    a commit of a file with many slices counts them on every change)."""
    return X.ref_ids(m.get("ch") if m else None)


def _later(a: str | None, b: str | None) -> bool:
    """Whether the number a is larger than b (decimal strings; a missing b is smaller)."""
    try:
        return b is None or (a is not None and Decimal(a) > Decimal(b))
    except (InvalidOperation, ValueError):
        return True


def _chunk_etag(chunks: list[ChunkRef]) -> str:
    """A stable ETag for a manifest assembled from chunks (no whole-content MD5)."""
    h = hashlib.md5(b"".join(c.id for c in chunks))
    return f"{h.hexdigest()}-{len(chunks)}"


def _resolve_range(rng: Range | None, size: int, what: str) -> tuple[int, int]:
    if rng is None:
        return 0, size
    if rng.suffix is not None:
        if rng.suffix <= 0:
            raise InvalidRange(f"{what}: empty suffix range")
        n = min(rng.suffix, size)
        if n == 0:
            raise InvalidRange(f"{what}: range not satisfiable for an empty object")
        return size - n, n
    off = rng.offset or 0
    if off < 0 or off >= size:
        raise InvalidRange(f"{what}: range start {off} is beyond the object size {size}")
    length = size - off if rng.length is None else min(rng.length, size - off)
    if length <= 0:
        raise InvalidRange(f"{what}: empty range")
    return off, length


async def _hashed(md5: Any, piece: bytes | memoryview) -> bytes | memoryview:
    """`piece`, once fed to `md5` (a big one in a worker thread: hashlib releases the GIL)."""
    if len(piece) > 65536:
        await _in_thread(md5.update, piece)
    else:
        md5.update(piece)
    return piece


async def _pieces(value: PutValue, size: int, md5: Any) -> AsyncIterator[bytes | memoryview]:
    """The input cut into pieces of exactly `size` bytes (the last may be shorter),
    each fed to `md5` (the ETag) in order before it is yielded.

    The MD5 of a joined piece is taken in the same worker-thread hop as the
    join: a put then costs two thread hops per chunk (join + hash, store), not
    three plus a task and an event per chunk to keep the hashes in order
    (measured: the hops and their wake-ups were a tenth of a put's CPU).

    Each piece costs at most one copy: parts of a stream are joined once
    (immutable `bytes` parts are kept by reference until then; anything else
    is copied at once, as a producer may reuse its buffer), and a part that
    is exactly one piece is passed on as it is. Measured: the former
    `buf += part; bytes(buf[:size])` cost three copies of every byte, a
    fifth of a put's CPU on the trio thread.
    """
    if value is None:
        return
    if isinstance(value, (bytes, bytearray, memoryview)):
        if isinstance(value, bytes) and len(value) <= size:
            if value:
                yield await _hashed(md5, value)
            return
        mv = memoryview(value)
        for off in range(0, len(mv), size):
            yield await _hashed(md5, bytes(mv[off:off + size]))
        return
    if hasattr(value, "read") and not hasattr(value, "__aiter__"):
        f: BinaryIO = value  # type: ignore[assignment]
        while True:
            piece = await _in_thread(f.read, size)
            if not piece:
                return
            while len(piece) < size:  # short reads from pipes
                more = await _in_thread(f.read, size - len(piece))
                if not more:
                    break
                piece += more
            yield await _hashed(md5, piece)
            if len(piece) < size:
                return
    else:
        parts: list[tuple[bytes, int, int]] = []  # (piece, start, length): no slicing
        have = 0
        async for part in value:  # type: ignore[union-attr]
            if not part:
                continue
            if not isinstance(part, bytes):
                part = bytes(part)
            if not have and len(part) == size:
                yield await _hashed(md5, part)
                continue
            start = 0
            while have + len(part) - start >= size:
                take = size - have
                parts.append((part, start, take))
                start += take
                yield await _join(parts, md5)
                parts, have = [], 0
            if start < len(part):
                parts.append((part, start, len(part) - start))
                have += len(part) - start
        if parts:
            yield await _join(parts, md5)


async def _join(parts: list[tuple[bytes, int, int]], md5: Any) -> bytes | memoryview:
    """The parts (piece, start, length) as one buffer, fed to `md5`. A big one is copied into a
    pooled buffer (`chunks.borrow`; the consumer hands it back with
    `chunks.give_back`) in a worker thread, so the copy neither blocks the trio
    loop nor faults in fresh pages -- and through memmove, which releases the
    GIL: as slice assignments these copies were a put's largest GIL holder
    (0.3 s per GiB), stalling the loop and every other worker meanwhile."""
    piece, start, length = parts[0]
    if len(parts) == 1 and start == 0 and length == len(piece):
        return await _hashed(md5, piece)
    total = sum(n for _, _, n in parts)
    if total < 1 << 20:
        return await _hashed(md5, b"".join(memoryview(p)[s:s + n] for p, s, n in parts))

    def copy() -> memoryview:
        out = borrow(total)
        target = (ctypes.c_char * total).from_buffer(out)
        try:
            dst = ctypes.addressof(target)
            off = 0
            for p, s, n in parts:
                src = ctypes.cast(ctypes.c_char_p(p), ctypes.c_void_p).value or 0
                ctypes.memmove(dst + off, src + s, n)
                off += n
        finally:
            del target  # the buffer export: give_back must be able to release `out`
        md5.update(out)
        return out

    return await _in_thread(copy)


class _Ingested:
    __slots__ = ("chunks", "size", "md5", "inline", "batch")

    def __init__(self) -> None:
        self.chunks: list[ChunkRef] = []
        self.size = 0
        self.md5 = hashlib.md5()
        self.inline: bytes | None = None
        self.batch = ChunkBatch()  # the chunks' records, committed with the manifest


# --- reading ---------------------------------------------------------------------


class ObjectBody:
    """A GET result: the object's metadata plus a streamed body.

    `info` is the manifest snapshot the body is read from: a concurrent
    overwrite does not change what this body returns (its chunks are immutable;
    they stay readable until gc's grace period has passed).
    """

    def __init__(self, bucket: "Bucket", info: ObjectInfo, offset: int, length: int) -> None:
        self.bucket = bucket
        self.info = info
        self.offset = offset
        self.length = length
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.bucket._iter_range(self.info, self.offset, self.length)

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self])

    async def aclose(self) -> None:
        self._closed = True


#: A listing of fewer keys likely fits the first page an engine reads (MetaEngine.view).
FIRST_PAGE_HINT = 60


class Bucket:
    """A handle on one bucket; cheap to make. Operations raise NoSuchBucket."""

    def __init__(self, cluster: "Cluster", name: str, *, max_key: int = MAX_KEY_BYTES) -> None:
        self.cluster = cluster
        self.name = name
        #: longest key this handle writes: S3's 1,024 bytes, or PATH_MAX for a mount
        self.max_key = max_key

    def __repr__(self) -> str:
        return f"<Bucket {self.name}>"

    # --- helpers -------------------------------------------------------------------

    def _what(self, key: str) -> str:
        return f"{self.name}/{key}"

    def _require_bucket(self, txn: Any) -> dict:
        rec = self.cluster.meta.get(txn, "buckets", self.name.encode())
        if rec is None:
            raise NoSuchBucket(f"no such bucket: {self.name}")
        return rec

    def _check_key(self, key: str) -> bytes:
        return check_key(key, self.max_key)

    def _prefetch(self, txn: Any, keys: Iterable[str], touch: Sequence[DirTouch] = ()) -> None:
        """The bucket record and these keys (and the touched markers) in one round trip
        where the engine is networked (PostgreSQL); a no-op on LMDB."""
        self.cluster.meta.prefetch(txn, [("buckets", self.name.encode())],
                                   [(self.name, k) for k in (*keys, *(t.key for t in touch))])

    def _get(self, txn: Any, key: str) -> dict | None:
        """The manifest `key` stands for (a hard link's resolved through its inode)."""
        meta = self.cluster.meta
        return inodes.effective(meta, txn, meta.objects.get(txn, self.name, key))

    def _replace_object(self, txn: Any, key: str, manifest: dict, *, bucket: str | None = None,
                        ref_new: bool = True, keep_links: bool = False) -> dict | None:
        """Install `manifest` at key; moves refcounts (new +1 unless ref_new=False, old -1).

        Inode numbers: a manifest without one keeps the number of the object it
        replaces, or gets a new one. A hard link at `key` is replaced by the new
        object (its other names keep the old content) -- unless `keep_links`: a
        write through the mount changes the content all names share.
        """
        c = self.cluster
        b = bucket or self.name
        what = f"{b}/{key}"
        manifest = dict(manifest)  # (a transaction may be run again: the caller's stays as it is)
        new_refs = _ref_ids(manifest) if ref_new else Counter()
        old = c.meta.objects.get(txn, b, key)
        if inodes.is_stub(old):
            if keep_links and not inodes.is_stub(manifest):
                c._reref(txn, new_refs, lambda: _ref_ids(
                    inodes.replace_content(c.meta, txn, b, old, manifest)), context=what)
                return old
            c._reref(txn, new_refs, lambda: _ref_ids(inodes.drop_name(c.meta, txn, b, key, old)),
                     context=what)
            if "i" not in manifest:
                manifest["i"] = inodes.allocate(c.meta, txn)  # a new file at this name
        else:
            c._reref(txn, new_refs, lambda: _ref_ids(old), context=what)
        if "i" not in manifest:
            manifest["i"] = old["i"] if old is not None and "i" in old else \
                inodes.allocate(c.meta, txn)
        c.meta.objects.put(txn, b, key, manifest)
        c.meta.record_change(txn, b, key)
        return old

    def _drop(self, txn: Any, key: str) -> dict | None:
        """Remove the name `key`; its entry, or None. Releases what nothing names any more."""
        c = self.cluster
        old = c.meta.objects.delete(txn, self.name, key)
        if old is None:
            return None
        if inodes.is_stub(old):
            c._unref(txn, _refs(inodes.drop_name(c.meta, txn, self.name, key, old)))
        else:
            c._unref(txn, _refs(old))
        c.meta.record_change(txn, self.name, key)
        return old

    # --- reads ---------------------------------------------------------------------

    def _touch(self, txn: Any, touches: Sequence[DirTouch]) -> None:
        """Inside a change's transaction: set the given custom-metadata entries on
        directory markers (the parent's mtime/ctime), creating a missing one
        (an implicit directory) when the touch says how."""
        meta = self.cluster.meta
        for t in touches:
            self._check_key(t.key)
            raw = meta.objects.get(txn, self.name, t.key)
            if raw is None:
                if t.create is None:
                    continue
                marker = _manifest(size=0, etag=hashlib.md5(b"").hexdigest(), chunks=(),
                                   http=None, custom={**t.create, **t.entries},
                                   inline=self.cluster._seal_inline_now(b""))
                self._replace_object(txn, t.key, marker)
                continue
            cur = inodes.effective(meta, txn, raw) or raw
            if t.newer is not None and not _later(t.entries.get(t.newer),
                                                  (cur.get("c") or {}).get(t.newer)):
                continue
            new = dict(cur)
            new.pop("nl", None)
            new["c"] = {**(cur.get("c") or {}), **t.entries}
            new["ver"] = uuid.uuid4().hex
            if inodes.is_stub(raw):
                inodes.replace_content(meta, txn, self.name, raw, new)
            else:
                meta.objects.put(txn, self.name, t.key, new)
                meta.record_change(txn, self.name, t.key)

    async def head(self, key: str) -> ObjectInfo:
        return self.head_now(key)

    def head_now(self, key: str) -> ObjectInfo:
        """`head` without the event loop, for a caller on another thread (a mount's request
        thread answers an open from it when the metadata is embedded: a read of LMDB's map
        does not wait for the network; on PostgreSQL it would)."""
        self._check_key(key)

        def look(txn: Any) -> dict | None:
            self._prefetch(txn, (key,))
            self._require_bucket(txn)
            return self._get(txn, key)

        m = self.cluster.meta.view(look)
        if m is None:
            raise NoSuchKey(f"no such key: {self._what(key)}")
        return _info(self.name, key, m)

    async def head_and_first(self, key: str, prefix: str) -> tuple[ObjectInfo | None,
                                                                   ObjectInfo | None]:
        """The object at `key` and the first object under `prefix` (None where there is
        none), from one consistent view: what a mount's lookup of a name asks (a file
        there, else a directory there?), in one metadata round trip on PostgreSQL."""
        self._check_key(key)
        meta = self.cluster.meta

        def look(txn: Any) -> tuple[dict | None, tuple[str, dict] | None]:
            meta.prefetch(txn, [("buckets", self.name.encode())], [(self.name, key)],
                          [(self.name, prefix, None, 1)])
            self._require_bucket(txn)
            m = self._get(txn, key)
            if m is not None:
                return m, None
            for k, first in meta.objects.scan(txn, self.name, prefix):
                return None, (k, inodes.effective(meta, txn, first) or first)
            return None, None

        m, first = meta.view(look)
        return (None if m is None else _info(self.name, key, m),
                None if first is None else _info(self.name, first[0], first[1]))

    async def get(self, key: str, *, range: Range | None = None,
                  only_if: Conditional | None = None) -> ObjectBody:
        info = await self.head(key)
        conditions.check_read(info, only_if)
        off, length = _resolve_range(range, info.size, self._what(key)) if range else (0, info.size)
        return ObjectBody(self, info, off, length)

    async def read_range(self, info: ObjectInfo, offset: int, length: int, *,
                         view: bool = False) -> bytes | memoryview:
        """Bytes [offset, offset+length) of the snapshot `info`, clipped to its size.

        Goes through the read tiers; a reader continuing where its last read of
        this version ended is sequential and gets the next chunks read ahead.
        `view=True` allows a read-only-by-convention memoryview instead of a copy,
        for callers that only pass the bytes on (the mount's read replies).
        """
        end = min(info.size, offset + length)
        if offset >= end:
            return b""
        if info.inline:
            return b"".join([p async for p in self._iter_range(info, offset, end - offset)])
        return await self.cluster.reader.read_range(info, offset, end, context=self._what(info.key),
                                                    view=view)

    async def _iter_range(self, info: ObjectInfo, offset: int, length: int) -> AsyncIterator[bytes]:
        end = offset + length
        if info.inline:
            data = await self.cluster._open_inline(info)
            if end > offset:
                yield data[offset:end]
            return
        async for start, data in self.cluster.reader.chunks(info, offset, end,
                                                            context=self._what(info.key)):
            lo, hi = max(offset, start) - start, min(end, start + len(data)) - start
            yield data if (lo == 0 and hi == len(data)) else data[lo:hi]

    async def list(self, *, prefix: str = "", delimiter: str | None = None,
                   cursor: str | None = None, start_after: str | None = None,
                   limit: int = 1000) -> ObjectList:
        after: bytes | None = start_after.encode("utf-8") if start_after else None
        if cursor:
            try:
                c = base64.urlsafe_b64decode(cursor.encode()).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InvalidRange(f"invalid listing cursor {cursor!r}") from None
            cb = c.encode("utf-8")
            if delimiter and c.startswith(prefix) and delimiter in c[len(prefix):]:
                cb += b"\xff"  # the cursor was a common prefix: skip everything under it
            after = cb if after is None or cb > after else after
        meta = self.cluster.meta
        start = after

        def walk(txn: Any) -> tuple[list[ObjectInfo], list[str], str | None, bool]:
            # (run again from the start if the engine needs to: see MetaEngine.view)
            objects: list[ObjectInfo] = []
            prefixes: list[str] = []
            last = None
            truncated = False
            after = start
            meta.prefetch(txn, [("buckets", self.name.encode())],
                          scans=[(self.name, prefix, after, min(limit + 1, 1000))])
            self._require_bucket(txn)
            if limit <= 0:
                return objects, prefixes, last, truncated
            while True:
                restart = None
                for key, m in meta.objects.scan(txn, self.name, prefix, after):
                    m = inodes.effective(meta, txn, m) or m
                    if len(objects) + len(prefixes) >= limit:
                        truncated = True
                        break
                    if delimiter:
                        i = key.find(delimiter, len(prefix))
                        if i >= 0:
                            cp = key[:i + len(delimiter)]
                            prefixes.append(cp)
                            last = cp
                            restart = cp.encode("utf-8") + b"\xff"
                            break
                    objects.append(_info(self.name, key, m))
                    last = key
                if restart is None or truncated:
                    break
                after = restart
            return objects, prefixes, last, truncated

        if limit < FIRST_PAGE_HINT and not delimiter:  # likely one statement: no transaction
            objects, prefixes, last, truncated = meta.view(walk)
        else:
            with meta.read() as txn:
                objects, prefixes, last, truncated = walk(txn)
        next_cursor = None
        if truncated and last is not None:
            next_cursor = base64.urlsafe_b64encode(last.encode("utf-8")).decode()
        return ObjectList(objects, prefixes, truncated, next_cursor)

    # --- writes ----------------------------------------------------------------------

    async def _ingest(self, value: PutValue, *, allow_inline: bool) -> _Ingested:
        """Cut, hash, encrypt, erasure-code and store the input's chunks.

        At most PUT_INFLIGHT_BYTES of chunks are in flight at once (bounded
        memory). The MD5 for the ETag is fed in order as `_pieces` cuts the
        input, in worker threads, concurrently with the storing of the chunks
        before it (hashlib releases the GIL, so the cores share the hashes). The chunk records wait in
        `out.batch` for the caller's commit; on failure their files are removed.
        """
        c = self.cluster
        out = _Ingested()
        results: dict[int, ChunkRef] = {}
        slots = trio.Semaphore(max(2, PUT_INFLIGHT_BYTES // c.config.chunk_size))
        try:
            with _single_errors():
                async with trio.open_nursery() as nursery:
                    await self._feed(value, out, nursery, slots, results, allow_inline)
        except BaseException:
            await c.writer.discard(out.batch)
            raise
        out.chunks = [results[i] for i in range(len(results))]
        if allow_inline and out.size == 0:
            out.inline = await c._seal_inline(b"")
        return out

    async def _feed(self, value: PutValue, out: _Ingested, nursery: trio.Nursery,
                    slots: trio.Semaphore, results: dict[int, ChunkRef],
                    allow_inline: bool) -> None:
        c = self.cluster
        index = 0
        # aclosing: the inline case returns mid-iteration; close the generator here,
        # not later in trio's finaliser (a ResourceWarning on every small PUT).
        async with aclosing(_pieces(value, c.config.chunk_size, out.md5)) as pieces:
            async for piece in pieces:
                if index == 0 and allow_inline and len(piece) < c.config.chunk_size and \
                        len(piece) <= c.config.inline_threshold:
                    # Shorter than a chunk: this is the whole object.
                    out.size = len(piece)
                    out.inline = await c._seal_inline(piece)
                    return
                out.size += len(piece)
                await slots.acquire()
                if out.batch.due():
                    await c.writer.flush(out.batch)
                nursery.start_soon(self._one_chunk, index, piece, out, results, slots)
                index += 1

    async def _one_chunk(self, index: int, piece: bytes, out: _Ingested,
                         results: dict[int, ChunkRef], slots: trio.Semaphore) -> None:
        """Store one chunk (its MD5 was taken in order by `_pieces`)."""
        try:
            results[index] = await self.cluster.writer.write(piece, bucket=self.name,
                                                             batch=out.batch)
        finally:
            give_back(piece)
            slots.release()

    async def put(self, key: str, value: PutValue, *, http_metadata: dict[str, str] | None = None,
                  custom_metadata: dict[str, str] | None = None,
                  only_if: Conditional | None = None,
                  content_md5: bytes | None = None,
                  checksums: dict[str, str] | None = None,
                  keep_links: bool = False, touch: Sequence[DirTouch] = (),
                  ino: int | None = None) -> ObjectInfo:
        """Store a whole object; atomic: readers see the old or the new version.

        `value` may be bytes, an async iterable of bytes (a streamed HTTP body:
        if it raises, nothing is committed), a binary file object, or None.
        `content_md5` (raw digest) is verified -> BadDigest. `checksums` are
        stored as given; the dict is read only at commit time, after the body
        was consumed, so a caller may fill it from a trailer at the stream's
        end. `only_if` is checked again inside the commit transaction.
        A put to one name of a hard-linked file gives that name a new object
        (the other names keep theirs), as S3 PUT replaces what a key names;
        `keep_links` (the mount's writes) changes the content all names share.
        `touch`: directory markers whose times change in the same commit.
        `ino`: the inode number the new object gets (one the mount reserved for a
        file it created; `Cluster.reserve_inodes`), else it keeps the old one.
        """
        self._check_key(key)
        what = self._what(key)
        small = (isinstance(value, (bytes, bytearray, memoryview))
                 and len(value) <= self.cluster.config.inline_threshold)
        if not small:  # fail fast, before storing any data (a small one stores none: the
            # commit's own checks suffice, and a metadata round trip is saved)
            with self.cluster.meta.read() as txn:
                self._require_bucket(txn)
                if only_if is not None:
                    cur = self._get(txn, key)
                    conditions.check_write(_info(self.name, key, cur) if cur else None, only_if,
                                           what)
        got = await self._ingest(value, allow_inline=True)
        try:
            digest = got.md5.digest()
            if content_md5 is not None and content_md5 != digest:
                raise BadDigest(
                    f"{what}: the Content-MD5 you specified did not match what was received")
            manifest = _manifest(size=got.size, etag=digest.hex(), chunks=got.chunks,
                                 http=http_metadata, custom=custom_metadata, checksums=checksums,
                                 inline=got.inline)
            if ino:
                manifest["i"] = ino
            return await self._commit(key, manifest, only_if, got.batch, keep_links, touch)
        except BaseException:
            await self.cluster.writer.discard(got.batch)
            raise

    async def put_many(self, items: Sequence[PutItem]) -> list[ObjectInfo | R2fsError]:
        """Store many small objects: one sealing pass in one worker thread, one metadata commit.

        Why: one `put` per small file costs two thread hops, a seal call and a
        metadata transaction of its own; a burst of small files (the FUSE
        mount publishing what `tar`/`rsync` closed) spent most of its CPU on
        that overhead. Each item is still its own atomic put -- its own nested
        transaction, its own `only_if` checked inside it, its own change
        record -- so one failing item leaves the others committed. Returns,
        in order, each item's ObjectInfo or the R2fsError it failed with
        (PreconditionFailed, NoSuchBucket, InvalidKey...). Items too big to be
        inline are stored through `put` one after another.
        """
        results: list[ObjectInfo | R2fsError | None] = [None] * len(items)
        c = self.cluster
        small: list[int] = []
        for i, it in enumerate(items):
            try:
                self._check_key(it.key)
            except R2fsError as exc:
                results[i] = exc
                continue
            if len(it.data) <= c.config.inline_threshold and len(it.data) < c.config.chunk_size:
                small.append(i)
                continue
            try:
                results[i] = await self.put(it.key, it.data, http_metadata=it.http_metadata,
                                            custom_metadata=it.custom_metadata, only_if=it.only_if,
                                            keep_links=it.keep_links, touch=it.touch, ino=it.ino)
            except R2fsError as exc:
                results[i] = exc
        if small:
            def work() -> list[tuple[dict, Any]]:
                staged = []
                for i in small:
                    it = items[i]
                    data = bytes(it.data)
                    manifest = _manifest(size=len(data), etag=hashlib.md5(data).hexdigest(),
                                         chunks=(), http=it.http_metadata, custom=it.custom_metadata,
                                         inline=c._seal_inline_now(data))
                    if it.ino:
                        manifest["i"] = it.ino
                    staged.append((manifest, self._commit_fn(it.key, manifest, it.only_if,
                                                             keep_links=it.keep_links,
                                                             touch=it.touch)))
                _test_hook_kill_after("stored")
                keys = [items[i].key for i in small] + [t.key for i in small for t in items[i].touch]
                outcomes = c.meta.write_many([lambda txn: self._prefetch(txn, keys)]
                                             + [fn for _, fn in staged])[1:]
                _test_hook_kill_after("committed")
                return [(m, out) for (m, _), out in zip(staged, outcomes)]

            for i, (manifest, out) in zip(small, await _in_thread(work)):
                if isinstance(out, BaseException):
                    if not isinstance(out, R2fsError):
                        raise out
                    results[i] = out
                else:
                    results[i] = _info(self.name, items[i].key, out)
        return results  # type: ignore[return-value]

    def _commit_fn(self, key: str, manifest: dict, only_if: Conditional | None,
                   batch: ChunkBatch | None = None, keep_links: bool = False,
                   touch: Sequence[DirTouch] = (),
                   rebase: Callable[[dict], dict | None] | None = None) -> Callable[[Any], dict]:
        """The commit transaction of a put: bucket, condition, chunk records, manifest, change.

        `rebase(current manifest)`: an in-place update's manifest laid over what is
        there now instead (None: `manifest` as it is); see slices.update."""
        what = self._what(key)
        writer = self.cluster.writer

        def txn_fn(txn: Any) -> dict:
            self._prefetch(txn, (key,), touch)
            self._require_bucket(txn)
            m = manifest
            if only_if is not None or rebase is not None:
                cur = self._get(txn, key)
                if only_if is not None:
                    conditions.check_write(_info(self.name, key, cur) if cur else None, only_if,
                                           what)
                if rebase is not None and cur is not None:
                    m = rebase(cur) or manifest
            if batch is not None:
                writer.install(txn, batch)
            self._replace_object(txn, key, m, keep_links=keep_links)
            self._touch(txn, touch)
            return self._get(txn, key)  # type: ignore[return-value]

        return txn_fn

    async def _commit(self, key: str, manifest: dict, only_if: Conditional | None,
                      batch: ChunkBatch | None = None, keep_links: bool = False,
                      touch: Sequence[DirTouch] = (),
                      rebase: Callable[[dict], dict | None] | None = None,
                      chunks: Sequence[ChunkRef] | None = None) -> ObjectInfo:
        """One transaction: the batch's chunk records, refcounts, the manifest, a change.
        `chunks`: `manifest`'s extents, decoded (not decoded again when it is what got in)."""
        fn = self._commit_fn(key, manifest, only_if, batch, keep_links, touch, rebase)
        got = await self.cluster.writer.commit(batch, fn)
        return _info(self.name, key, got,
                     chunks if chunks is not None and got.get("ver") == manifest["ver"] else None)

    async def put_chunks(self, key: str, chunks: list[ChunkRef], *, etag: str | None = None,
                         http_metadata: dict[str, str] | None = None,
                         custom_metadata: dict[str, str] | None = None,
                         only_if: Conditional | None = None,
                         keep_links: bool = False, touch: Sequence[DirTouch] = (),
                         ino: int | None = None) -> ObjectInfo:
        """An object made of stored extents (whole chunks, slices of chunks, holes)."""
        self._check_key(key)
        chunks = X.normalise(chunks)
        size = X.total(chunks)
        X.check_size(size, self._what(key))
        if etag is None:
            etag = X.layout_etag(chunks) if X.is_layered(chunks) else _chunk_etag(chunks)
        manifest = _manifest(size=size, etag=etag, chunks=chunks, http=http_metadata,
                             custom=custom_metadata)
        if ino:
            manifest["i"] = ino
        return await self._commit(key, manifest, only_if, keep_links=keep_links, touch=touch)

    async def update_metadata(self, key: str, *, http_metadata: dict[str, str] | None = None,
                              custom_metadata: dict[str, str] | None = None,
                              only_if: Conditional | None = None) -> ObjectInfo:
        self._check_key(key)
        what = self._what(key)
        meta = self.cluster.meta

        def txn_fn(txn: Any) -> dict:
            self._require_bucket(txn)
            raw = meta.objects.get(txn, self.name, key)
            cur = inodes.effective(meta, txn, raw)
            if cur is None:
                raise NoSuchKey(f"no such key: {what}")
            conditions.check_write(_info(self.name, key, cur), only_if, what)
            new = dict(cur)
            new.pop("nl", None)
            new["ver"] = uuid.uuid4().hex
            if http_metadata is not None:
                new["h"] = dict(http_metadata)
            if custom_metadata is not None:
                new["c"] = dict(custom_metadata)
            if inodes.is_stub(raw):  # a hard link: the attributes all names share
                inodes.replace_content(meta, txn, self.name, raw, new)
                return self._get(txn, key)
            meta.objects.put(txn, self.name, key, new)
            meta.record_change(txn, self.name, key)
            return new

        return _info(self.name, key, await self.cluster.transact(txn_fn))

    async def delete(self, keys: str | Iterable[str], *,
                     touch: Sequence[DirTouch] = ()) -> list[str]:
        keys = [keys] if isinstance(keys, str) else list(keys)
        for k in keys:
            self._check_key(k)
        c = self.cluster

        def txn_fn(txn: Any) -> list[str]:
            self._prefetch(txn, keys, touch)
            self._require_bucket(txn)
            gone = [k for k in keys if self._drop(txn, k) is not None]
            if gone:
                self._touch(txn, touch)
            return gone

        return await self.cluster.transact(txn_fn)

    async def copy(self, src_key: str, dst_key: str, *, dst_bucket: str | None = None,
                   http_metadata: dict[str, str] | None = None,
                   custom_metadata: dict[str, str] | None = None,
                   only_if: Conditional | None = None) -> ObjectInfo:
        self._check_key(src_key)
        self._check_key(dst_key)
        dst = dst_bucket or self.name
        target = self.cluster.bucket(dst)
        meta = self.cluster.meta

        def txn_fn(txn: Any) -> dict:
            self._require_bucket(txn)
            target._require_bucket(txn)
            src = self._get(txn, src_key)
            if src is None:
                raise NoSuchKey(f"no such key: {self._what(src_key)}")
            conditions.check_write(_info(self.name, src_key, src), only_if, self._what(src_key))
            new = dict(src)
            for field in ("i", "nl", "lk"):  # a copy is a new file
                new.pop(field, None)
            new["ver"] = uuid.uuid4().hex
            new["u"] = time.time()
            if http_metadata is not None:
                new["h"] = dict(http_metadata)
            if custom_metadata is not None:
                new["c"] = dict(custom_metadata)
            target._replace_object(txn, dst_key, new)
            return target._get(txn, dst_key)

        return _info(dst, dst_key, await self.cluster.transact(txn_fn))

    async def rename(self, src_key: str, dst_key: str, *, replace: bool = True,
                     touch: Sequence[DirTouch] = ()) -> ObjectInfo:
        self._check_key(src_key)
        self._check_key(dst_key)
        meta = self.cluster.meta

        def txn_fn(txn: Any) -> dict:
            self._prefetch(txn, (src_key, dst_key), touch)
            self._require_bucket(txn)
            src = meta.objects.get(txn, self.name, src_key)
            if src is None:
                raise NoSuchKey(f"no such key: {self._what(src_key)}")
            if src_key == dst_key:
                return self._get(txn, src_key)
            dst = meta.objects.get(txn, self.name, dst_key)
            if not replace and dst is not None:
                raise KeyExists(f"{self._what(dst_key)} already exists")
            if inodes.is_stub(src) and inodes.is_stub(dst) and src["i"] == dst["i"]:
                return self._get(txn, src_key)  # two names of one file: POSIX does nothing
            self._move(txn, src_key, dst_key, src)
            self._touch(txn, touch)
            return self._get(txn, dst_key)

        return _info(self.name, dst_key, await self.cluster.transact(txn_fn))

    async def update(self, key: str, *, base: ObjectInfo | None, size: int,
                     writes: Sequence[tuple[int, int]], read: ReadFn, limit: int | None = None,
                     stored: Sequence[tuple[int, ChunkRef]] = (),
                     custom_metadata: dict[str, str] | None = None,
                     http_metadata: dict[str, str] | None = None,
                     only_if: Conditional | None = None, keep_links: bool = True,
                     touch: Sequence[DirTouch] = (), ino: int | None = None) -> ObjectInfo:
        """Commit the version `base` changed in place, storing only what was written.

        `writes`: (offset, length) ranges whose new bytes `read(offset, length)`
        returns; base bytes at or past `limit` (default: base's size) read as
        zeros; the new size is `size` (up to extents.MAX_FILE_SIZE, else
        EntityTooLarge) -- a truncate is an update with no writes and costs the
        same whatever the size. Small ranges become slices in the metadata,
        merged into whole chunks in the background (slices.py).
        """
        self._check_key(key)
        lim = (base.size if base is not None else 0) if limit is None else limit
        return await _update(self, key, base=base, limit=lim, size=size, writes=writes,
                             read=read, stored=stored, custom_metadata=custom_metadata,
                             http_metadata=http_metadata, only_if=only_if, keep_links=keep_links,
                             touch=touch, ino=ino)

    def _move(self, txn: Any, src_key: str, dst_key: str, src: dict) -> None:
        """The entry `src` at src_key now is at dst_key (replacing what was there)."""
        meta = self.cluster.meta
        meta.objects.delete(txn, self.name, src_key)
        meta.record_change(txn, self.name, src_key)
        if inodes.is_stub(src):
            inodes.rename_name(meta, txn, src, src_key, dst_key)
        self._replace_object(txn, dst_key, src, ref_new=False)

    async def link(self, src_key: str, dst_key: str, *,
                   custom_metadata: dict[str, str] | None = None,
                   touch: Sequence[DirTouch] = ()) -> ObjectInfo:
        """A hard link: dst_key becomes another name of the file at src_key.

        Both names then share content and metadata (`custom_metadata`, if
        given, replaces the shared custom metadata in the same commit: the
        mount's new ctime). A GET of either returns the content. Only files:
        a directory marker cannot be linked (NotLinkable).
        """
        self._check_key(src_key)
        self._check_key(dst_key)
        meta = self.cluster.meta
        if src_key.endswith("/") or dst_key.endswith("/"):
            raise NotLinkable(f"{self._what(src_key)}: directories cannot be hard-linked")

        def txn_fn(txn: Any) -> dict:
            self._require_bucket(txn)
            src = meta.objects.get(txn, self.name, src_key)
            if src is None:
                raise NoSuchKey(f"no such key: {self._what(src_key)}")
            if meta.objects.get(txn, self.name, dst_key) is not None:
                raise KeyExists(f"{self._what(dst_key)} already exists")
            out = inodes.make_link(meta, txn, self.name, src_key, src, dst_key, custom_metadata)
            self._touch(txn, touch)
            return out

        return _info(self.name, dst_key, await self.cluster.transact(txn_fn))

    async def rename_prefix(self, src_prefix: str, dst_prefix: str, *,
                            replace_keys: Iterable[str] = (),
                            touch: Sequence[DirTouch] = ()) -> int:
        if not src_prefix or not dst_prefix:
            raise InvalidRange("rename_prefix needs non-empty prefixes")
        replaceable = set(replace_keys)
        meta = self.cluster.meta
        c = self.cluster

        def txn_fn(txn: Any) -> int:
            self._require_bucket(txn)
            moving = list(meta.objects.scan(txn, self.name, src_prefix))
            src_keys = {k for k, _ in moving}
            plan = []
            for k, m in moving:
                dk = dst_prefix + k[len(src_prefix):]
                self._check_key(dk)
                if dk not in src_keys and dk not in replaceable and \
                        meta.objects.get(txn, self.name, dk) is not None:
                    raise KeyExists(f"{self._what(dk)} already exists")
                plan.append((k, dk, m))
            for k in replaceable:
                self._drop(txn, k)
            for k, _, _ in plan:
                meta.objects.delete(txn, self.name, k)
                meta.record_change(txn, self.name, k)
            for k, dk, m in plan:
                if inodes.is_stub(m):
                    inodes.rename_name(meta, txn, m, k, dk)
                self._replace_object(txn, dk, m, ref_new=False)
            self._touch(txn, touch)
            return len(plan)

        return await self.cluster.transact(txn_fn)

    # --- multipart ----------------------------------------------------------------

    def _require_upload(self, txn: Any, key: str, upload_id: str) -> dict:
        up = self.cluster.meta.get(txn, "uploads", upload_id.encode())
        if up is None or up["bucket"] != self.name or up["key"] != key:
            raise NoSuchUpload(f"no such upload {upload_id} for {self._what(key)}")
        return up

    @staticmethod
    def _part_key(upload_id: str, part_number: int) -> bytes:
        return upload_id.encode() + part_number.to_bytes(4, "big")

    async def create_multipart_upload(self, key: str, *, http_metadata: dict[str, str] | None = None,
                                      custom_metadata: dict[str, str] | None = None,
                                      checksum_algorithm: str | None = None) -> str:
        """A new upload id. `checksum_algorithm` (S3's x-amz-checksum-algorithm) is
        kept with the upload so the gateway can build the object's composite checksum."""
        self._check_key(key)
        upload_id = uuid.uuid4().hex
        meta = self.cluster.meta

        def txn_fn(txn: Any) -> None:
            self._require_bucket(txn)
            meta.put(txn, "uploads", upload_id.encode(), {
                "bucket": self.name, "key": key, "initiated": time.time(),
                "h": dict(http_metadata or {}), "c": dict(custom_metadata or {}),
                "ca": checksum_algorithm})

        await self.cluster.transact(txn_fn)
        return upload_id

    async def upload_info(self, key: str, upload_id: str) -> UploadInfo:
        """One in-progress upload (NoSuchUpload if it is not, or no longer, in progress)."""
        with self.cluster.meta.read() as txn:
            self._require_bucket(txn)
            return _upload_info(upload_id, self._require_upload(txn, key, upload_id))

    async def _commit_part(self, key: str, upload_id: str, part_number: int,
                           got: _Ingested, checksums: dict[str, str] | None = None) -> PartInfo:
        meta = self.cluster.meta
        c = self.cluster
        rec = {"etag": got.md5.hexdigest(), "md5": got.md5.digest(), "size": got.size,
               "uploaded": time.time(), "ch": [[r.id, r.size] for r in got.chunks],
               "ck": dict(checksums or {})}

        def txn_fn(txn: Any) -> None:
            self._require_bucket(txn)
            self._require_upload(txn, key, upload_id)
            pk = self._part_key(upload_id, part_number)
            c.writer.install(txn, got.batch)
            c._ref(txn, got.chunks, context=self._what(key))
            old = meta.get(txn, "parts", pk)
            if old is not None:
                c._unref(txn, _refs(old))
            meta.put(txn, "parts", pk, rec)

        try:
            await c.writer.commit(got.batch, txn_fn)
        except BaseException:
            await c.writer.discard(got.batch)
            raise
        return PartInfo(part_number, rec["etag"], got.size, rec["uploaded"], tuple(got.chunks), rec["ck"])

    def _check_part_number(self, part_number: int) -> None:
        if not 1 <= part_number <= MAX_PARTS:
            raise InvalidPart(f"part number must be between 1 and {MAX_PARTS} (got {part_number})")

    async def upload_part(self, key: str, upload_id: str, part_number: int, value: PutValue, *,
                          content_md5: bytes | None = None,
                          checksums: dict[str, str] | None = None) -> PartInfo:
        """Store one part. `checksums` is read at commit time, after `value` was
        consumed (as in `put`), and kept with the part."""
        self._check_key(key)
        self._check_part_number(part_number)
        with self.cluster.meta.read() as txn:
            self._require_bucket(txn)
            self._require_upload(txn, key, upload_id)
        got = await self._ingest(value, allow_inline=False)
        if content_md5 is not None and content_md5 != got.md5.digest():
            await self.cluster.writer.discard(got.batch)
            raise BadDigest(f"{self._what(key)} part {part_number}: Content-MD5 mismatch")
        return await self._commit_part(key, upload_id, part_number, got, checksums)

    async def upload_part_copy(self, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, *, range: Range | None = None,
                               only_if: Conditional | None = None) -> PartInfo:
        self._check_key(key)
        self._check_part_number(part_number)
        with self.cluster.meta.read() as txn:
            self._require_bucket(txn)
            self._require_upload(txn, key, upload_id)
        src = self.cluster.bucket(src_bucket)
        info = await src.head(src_key)
        conditions.check_write(info, only_if, src._what(src_key))
        off, length = _resolve_range(range, info.size, src._what(src_key)) if range else (0, info.size)
        body = ObjectBody(src, info, off, length)
        got = await self._ingest(body, allow_inline=False)
        return await self._commit_part(key, upload_id, part_number, got)

    async def complete_multipart_upload(self, key: str, upload_id: str,
                                        parts: list[tuple[int, str]], *,
                                        only_if: Conditional | None = None,
                                        checksums: dict[str, str] | None = None) -> ObjectInfo:
        """Assemble the listed parts into the object at `key`, in one transaction.

        The object remembers its upload id: completing an upload again while
        the object it made is still current returns that object (as S3 does for
        a retried Complete) instead of NoSuchUpload."""
        self._check_key(key)
        meta = self.cluster.meta
        c = self.cluster
        what = self._what(key)

        def txn_fn(txn: Any) -> dict:
            self._require_bucket(txn)
            if meta.get(txn, "uploads", upload_id.encode()) is None:
                done = self._get(txn, key)
                if done is not None and done.get("mp") == upload_id:
                    return done
            up = self._require_upload(txn, key, upload_id)
            if not parts:
                raise InvalidPart(f"{what}: a multipart upload needs at least one part")
            if only_if is not None:
                cur = self._get(txn, key)
                conditions.check_write(_info(self.name, key, cur) if cur else None, only_if, what)
            prev = 0
            chosen = []
            for i, (pn, etag) in enumerate(parts):
                if pn <= prev:
                    raise InvalidPartOrder(f"{what}: parts must be listed in ascending order")
                prev = pn
                rec = meta.get(txn, "parts", self._part_key(upload_id, pn))
                if rec is None or rec["etag"] != etag.strip().strip('"'):
                    raise InvalidPart(f"{what}: part {pn} was not uploaded or its ETag differs")
                if i < len(parts) - 1 and rec["size"] < MIN_PART_SIZE:
                    raise EntityTooSmall(f"{what}: part {pn} is smaller than 5 MiB")
                chosen.append(rec)
            chosen_pns = {pn for pn, _ in parts}
            all_parts = list(meta.scan(txn, "parts", upload_id.encode()))
            for pk, rec in all_parts:
                if int.from_bytes(pk[-4:], "big") not in chosen_pns:
                    c._unref(txn, _refs(rec))
                meta.delete(txn, "parts", pk)
            meta.delete(txn, "uploads", upload_id.encode())
            chunks = [r for rec in chosen for r in _refs(rec)]
            etag = hashlib.md5(b"".join(bytes(r["md5"]) for r in chosen)).hexdigest()
            manifest = _manifest(size=sum(r["size"] for r in chosen), etag=f"{etag}-{len(chosen)}",
                                 chunks=chunks, http=up["h"], custom=up["c"], checksums=checksums,
                                 parts=[r["size"] for r in chosen])
            manifest["mp"] = upload_id
            self._replace_object(txn, key, manifest, ref_new=False)
            return manifest

        return _info(self.name, key, await self.cluster.transact(txn_fn))

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        def txn_fn(txn: Any) -> None:
            self._require_bucket(txn)
            self._require_upload(txn, key, upload_id)
            self.cluster._drop_upload(txn, upload_id)

        await self.cluster.transact(txn_fn)

    async def list_parts(self, key: str, upload_id: str, *, part_number_marker: int = 0,
                         max_parts: int = 1000) -> tuple[list[PartInfo], bool]:
        meta = self.cluster.meta
        out: list[PartInfo] = []
        truncated = False
        with meta.read() as txn:
            self._require_bucket(txn)
            self._require_upload(txn, key, upload_id)
            start = self._part_key(upload_id, part_number_marker + 1)
            for pk, rec in meta.scan(txn, "parts", upload_id.encode(), start=start):
                if len(out) >= max_parts:
                    truncated = True
                    break
                out.append(PartInfo(int.from_bytes(pk[-4:], "big"), rec["etag"], rec["size"],
                                    rec["uploaded"], tuple(_refs(rec)), dict(rec.get("ck") or {})))
        return out, truncated

    async def list_multipart_uploads(self, *, prefix: str = "", key_marker: str = "",
                                     upload_id_marker: str = "",
                                     limit: int = 1000) -> tuple[list[UploadInfo], bool]:
        meta = self.cluster.meta
        with meta.read() as txn:
            self._require_bucket(txn)
            ups = [_upload_info(uid.decode(), u) for uid, u in meta.scan(txn, "uploads")
                   if u["bucket"] == self.name and u["key"].startswith(prefix)]
        ups.sort(key=lambda u: (u.key.encode(), u.initiated, u.upload_id))
        if key_marker:
            ups = [u for u in ups if u.key > key_marker or
                   (u.key == key_marker and upload_id_marker and u.upload_id > upload_id_marker)]
        return ups[:limit], len(ups) > limit


class Cluster(Core):
    """An open cluster (metadata engine + node stores + master key) and its store API."""

    def __init__(self, path: str, config: cfgmod.ClusterConfig, master: MasterKey,
                 meta: MetaEngine) -> None:
        super().__init__(path, config, master, meta)
        self.writer = ChunkWriter(self)
        self.reader = ChunkReader(self)
        self.merger = Merger(self)  # background merge of slices (slices.py)
        self.healer = Healer(self)  # heal on read: reads that decoded around damage
        self.chunks.on_damage = self.healer.schedule

    # --- lifecycle -------------------------------------------------------------------

    @classmethod
    def init(cls, path: str, *, nodes: int = 6, k: int = 4, m: int = 2,
             chunk_size: int = 4 * MiB, regions: dict[str, int] | None = None,
             meta_url: str | None = None) -> "Cluster":
        """Create a cluster at `path`; its metadata in `meta_url` (postgresql://...) if
        given, else in the embedded LMDB environment `path`/meta."""
        path = os.path.abspath(path)
        cfgmod.validate_layout(nodes, k, m, chunk_size)
        if meta_url is not None:
            cfgmod.check_meta_url(meta_url)
        if os.path.exists(os.path.join(path, cfgmod.CONFIG_FILE)):
            raise ClusterExists(f"a cluster already exists at {path}")
        os.makedirs(path, exist_ok=True)
        key_path = os.path.join(path, "master.key")
        if os.path.exists(key_path):
            raise ClusterExists(f"{path} holds a master key but no cluster.toml "
                                "(a half-made cluster?); refusing to overwrite it")
        master = MasterKey.create(key_path)
        cfg = cfgmod.new_config(path, nodes=nodes, k=k, m=m, chunk_size=chunk_size,
                                regions=regions, key_check=master.check_value())
        cfg.meta_url = meta_url
        for n in cfg.nodes:
            os.makedirs(n.path, exist_ok=True)
        for sub in ("staging", "cache"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        try:
            create_engine(path, cfg).close()
        except BaseException:
            os.unlink(key_path)  # nothing was made: `init` may be run again
            raise
        tmp = os.path.join(path, cfgmod.CONFIG_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(cfgmod.render(cfg, path))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(path, cfgmod.CONFIG_FILE))  # the cluster exists from here
        return cls.open(path)

    @classmethod
    def open(cls, path: str, *, create: bool = False) -> "Cluster":
        path = os.path.abspath(path)
        if not os.path.exists(os.path.join(path, cfgmod.CONFIG_FILE)):
            if not create:
                raise ClusterNotFound(f"no r2fs cluster at {path} (run `r2fs init`)")
            try:
                return cls.init(path)
            except ClusterExists:
                if not os.path.exists(os.path.join(path, cfgmod.CONFIG_FILE)):
                    raise
        cfg = cfgmod.load(path)
        master = MasterKey.load(os.path.join(path, "master.key"))
        if master.check_value() != cfg.key_check:
            raise WrongMasterKey(f"{os.path.join(path, 'master.key')} is not the master key of "
                                 f"the cluster at {path}; nothing was decrypted")
        meta = open_engine(path, cfg)
        try:
            inodes.upgrade(meta)
            return cls(path, cfg, master, meta)
        except BaseException:
            meta.close()
            raise

    def close(self) -> None:
        try:
            self.healer.close()
            self.reader.close()
        finally:
            self.meta.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- buckets -----------------------------------------------------------------------

    async def reserve_inodes(self, n: int) -> list[int]:
        """Reserve `n` inode numbers (one commit). A mount numbers the files it creates
        from them before they exist in the bucket. Not necessarily contiguous: on
        PostgreSQL each comes from the shared sequence (meta.next_id)."""
        return await self.transact(
            lambda txn: [inodes.allocate(self.meta, txn) for _ in range(n)])

    def bucket(self, name: str, *, max_key: int = MAX_KEY_BYTES) -> Bucket:
        """A handle on bucket `name`; `max_key` is the longest key it may write
        (a mount passes names.MAX_MOUNT_KEY_BYTES for PATH_MAX paths)."""
        return Bucket(self, name, max_key=max_key)

    @staticmethod
    def _bucket_info(name: str, rec: dict) -> BucketInfo:
        return BucketInfo(name, rec["created"], rec.get("location"), dict(rec.get("settings") or {}))

    async def create_bucket(self, name: str, *, location: str | None = None) -> BucketInfo:
        check_bucket_name(name)
        rec = {"created": time.time(), "location": location, "settings": {}}

        def txn_fn(txn: Any) -> None:
            if self.meta.get(txn, "buckets", name.encode()) is not None:
                raise BucketAlreadyExists(f"bucket {name} already exists")
            self.meta.put(txn, "buckets", name.encode(), rec)

        await self.transact(txn_fn)
        return self._bucket_info(name, rec)

    async def delete_bucket(self, name: str) -> None:
        def txn_fn(txn: Any) -> None:
            if self.meta.get(txn, "buckets", name.encode()) is None:
                raise NoSuchBucket(f"no such bucket: {name}")
            if self.meta.objects.bucket_has_objects(txn, name):
                raise BucketNotEmpty(f"bucket {name} is not empty")
            # In-progress uploads do not keep a bucket alive (as on S3): they are aborted.
            for uid, up in list(self.meta.scan(txn, "uploads")):
                if up["bucket"] == name:
                    self._drop_upload(txn, uid.decode())
            self.meta.delete(txn, "buckets", name.encode())

        await self.transact(txn_fn)

    async def head_bucket(self, name: str) -> BucketInfo:
        with self.meta.read() as txn:
            rec = self.meta.get(txn, "buckets", name.encode())
        if rec is None:
            raise NoSuchBucket(f"no such bucket: {name}")
        return self._bucket_info(name, rec)

    async def list_buckets(self) -> list[BucketInfo]:
        with self.meta.read() as txn:
            return [self._bucket_info(k.decode(), v) for k, v in self.meta.scan(txn, "buckets")]

    async def update_bucket_settings(self, name: str, **settings: Any) -> BucketInfo:
        def txn_fn(txn: Any) -> dict:
            rec = self.meta.get(txn, "buckets", name.encode())
            if rec is None:
                raise NoSuchBucket(f"no such bucket: {name}")
            s = dict(rec.get("settings") or {})
            for k, v in settings.items():
                if v is None:
                    s.pop(k, None)
                else:
                    s[k] = v
            rec["settings"] = s
            self.meta.put(txn, "buckets", name.encode(), rec)
            return rec

        return self._bucket_info(name, await self.transact(txn_fn))

    def _drop_upload(self, txn: Any, upload_id: str) -> None:
        """Abort an upload inside `txn`: its parts' chunk references go, then its records."""
        for pk, rec in list(self.meta.scan(txn, "parts", upload_id.encode())):
            self._unref(txn, _refs(rec))
            self.meta.delete(txn, "parts", pk)
        self.meta.delete(txn, "uploads", upload_id.encode())

    # --- chunks ------------------------------------------------------------------------

    def _ref(self, txn: Any, refs: Iterable[ChunkRef], *, context: str) -> None:
        """+1 per occurrence; refuses (ChunkMissing) chunks gc removed or is removing."""
        self._ref_counts(txn, Counter(r.id for r in refs), context=context)

    def _ref_counts(self, txn: Any, counts: Counter, *, context: str) -> None:
        for cid, n in counts.items():
            rec = self.meta.get(txn, "chunks", cid)
            if rec is None or rec["s"] != CHUNK_LIVE:
                raise ChunkMissing(f"{context}: chunk {cid.hex()} was garbage-collected while "
                                   "it was being written; retry the write")
            if rec["r"] == 0:
                self.meta.delete(txn, "gcq", cid)
            rec["r"] += n
            self.meta.put(txn, "chunks", cid, rec)

    def _unref(self, txn: Any, refs: Iterable[ChunkRef]) -> None:
        self._unref_counts(txn, Counter(r.id for r in refs))

    def _reref(self, txn: Any, plus: Counter, old: Callable[[], Counter], *,
               context: str) -> None:
        """`_ref` of the `plus` references (per chunk id) and `_unref` of the `old()`
        ones, in one step that touches only the chunk records whose counts change.
        Why: an in-place update keeps almost every extent of the file; taking and
        dropping a reference on each rewrote every chunk record of the file (the
        slices kept in the metadata, with their bytes) in every commit: ~1.3 MB of
        LMDB pages per 4 KiB sqlite page. `old` is called once, before any count
        changes (it may change other tables: an inode record)."""
        minus = old()
        up = plus - minus
        down = minus - plus
        if up:
            self._ref_counts(txn, up, context=context)
        if down:
            self._unref_counts(txn, down)

    def _unref_counts(self, txn: Any, counts: Counter) -> None:
        for cid, n in counts.items():
            rec = self.meta.get(txn, "chunks", cid)
            if rec is None:
                continue
            rec["r"] = max(0, rec["r"] - n)
            if rec["r"] == 0:
                self.meta.queue_for_gc(txn, cid)
            self.meta.put(txn, "chunks", cid, rec)

    def _seal_inline_now(self, data: bytes) -> bytes:
        """The inline blob of a small object: chunk id + sealed content (blocking)."""
        cid = self.master.chunk_id(data)
        return cid + self.chunks.seal(cid, data)

    async def _seal_inline(self, data: bytes) -> bytes:
        if len(data) <= SMALL_INLINE_CRYPTO:
            return self._seal_inline_now(data)
        return await _in_thread(self._seal_inline_now, data)

    async def _open_inline(self, info: ObjectInfo) -> bytes:
        if len(info.inline_data or b"") <= SMALL_INLINE_CRYPTO:
            return self.open_inline_now(info)
        return await _in_thread(self.open_inline_now, info)

    def open_inline_now(self, info: ObjectInfo) -> bytes:
        """The content of an inline object (decrypted here: no event loop needed)."""
        blob = info.inline_data or b""
        try:
            return self.chunks.unseal(blob[:32], blob[32:])
        except DataUnavailable as exc:
            raise type(exc)(f"{info.bucket}/{info.key}: {exc}") from None

    async def write_chunk(self, data: bytes, *, bucket: str | None = None) -> ChunkRef:
        """Store one chunk (dedup: an existing chunk is only touched).

        `bucket` lets placement follow the bucket's home region.
        """
        return await self.writer.write(bytes(data), bucket=bucket)

    def chunks_of_bucket(self, bucket: str) -> set[bytes]:
        """Ids of the chunks a bucket's objects and multipart parts reference (scrub --bucket)."""
        out: set[bytes] = set()
        with self.meta.read() as txn:
            if self.meta.get(txn, "buckets", bucket.encode()) is None:
                raise NoSuchBucket(f"no such bucket: {bucket}")
            for _, m in self.meta.objects.scan(txn, bucket):
                out.update(r.id for r in _refs(inodes.effective(self.meta, txn, m) or m))
            for uid, up in self.meta.scan(txn, "uploads"):
                if up["bucket"] == bucket:
                    for _, part in self.meta.scan(txn, "parts", uid):
                        out.update(r.id for r in _refs(part))
        return out

    async def read_chunk(self, ref: ChunkRef, *, context: str = "") -> bytes:
        """Plaintext of a chunk, through the read tiers; DataUnavailable naming `context`."""
        return await self.reader.read(ref, context=context)

    def seal_secret(self, plaintext: bytes, context: str) -> bytes:
        return self.master.seal_secret(plaintext, context)

    def open_secret(self, sealed: bytes, context: str) -> bytes:
        return self.master.open_secret(sealed, context)

    async def add_counters(self, bucket: str, deltas: dict[str, int]) -> None:
        def txn_fn(txn: Any) -> None:
            for name, d in deltas.items():
                k = bucket.encode() + b"\0" + name.encode()
                self.meta.put(txn, "counters", k, (self.meta.get(txn, "counters", k) or 0) + d)
        await self.transact(txn_fn)

    def counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self.meta.read() as txn:
            for k, v in self.meta.scan(txn, "counters"):
                b, _, name = k.decode().partition("\0")
                out.setdefault(b, {})[name] = v
        return out

    # --- change feed, status, gc -----------------------------------------------------

    def changes_since(self, seq: int, limit: int = 10000) -> list[Change]:
        oldest, changes = self.meta.changes_since(seq, limit)
        if seq + 1 < oldest:
            return [Change(self.change_seq(), "", "")]
        return [Change(s, b, k) for s, b, k in changes]

    async def status(self) -> ClusterStatus:
        """Counts from the metadata and the nodes, plus `extra` sections from the
        read tiers and the writer (cache hits, replication backlog...)."""
        def gather() -> ClusterStatus:
            # imported here, not at the top: every `r2fs` command (ls...) starts without them
            from . import space
            from .maintenance import durability_status

            self.refresh_config()
            nodes = []
            stored = 0
            health = space.health(self)
            states = {n.id: n.state for n in self.config.nodes}
            for n in self.nodes.values():
                ok = n.available()
                usage = space.node_usage(n.entries() if ok else ())
                stored += usage.total_disk
                shards = dataclasses.asdict(health.nodes.get(n.id) or space.NodeHealth())
                nodes.append(NodeStatus(
                    n.id, n.location, n.region, n.free_bytes() if ok else 0,
                    usage.files["object_data"], usage.bytes["object_data"], ok,
                    disk_bytes=usage.total_disk, state=states.get(n.id, "active"),
                    kinds={k: {"bytes": usage.bytes[k], "disk_bytes": usage.disk[k],
                               "files": usage.files[k]} for k in space.KINDS},
                    shards=shards))
            with self.meta.read() as txn:
                buckets = self.meta.count(txn, "buckets")
                objects = logical = 0
                for _, _, m in self.meta.objects.scan_all(txn):
                    objects += 1
                    logical += m.get("s", 0)  # (a hard link's stub: counted below)
                logical += sum(inodes.sizes(self.meta, txn))
                chunks = unique = 0
                for _, rec in self.meta.scan(txn, "chunks"):
                    chunks += 1
                    unique += rec["n"]
            st = ClusterStatus(self.path, self.config.k, self.config.m, self.config.chunk_size,
                               nodes, buckets, objects, chunks, logical, unique, stored,
                               self.counters())
            st.health = {"chunks_on_nodes": health.chunks, "degraded_chunks": health.degraded,
                         "lost_chunks": health.lost, "staged_chunks": health.staged,
                         "examples": health.examples}
            st.local = space.local_usage(self)
            st.durability = durability_status(self)
            for part in (self.reader, self.writer):
                st.extra.update(part.status())
            return st
        return await _in_thread(gather)

    async def gc(self, *, grace: float = 60.0, orphan_grace: float = 600.0) -> GcReport:
        """Remove shards of chunks unreferenced for at least `grace` seconds and
        orphaned shard files older than `orphan_grace`."""
        from .gc import collect_garbage  # (here: see status)
        return await collect_garbage(self, grace=grace, orphan_grace=orphan_grace)
