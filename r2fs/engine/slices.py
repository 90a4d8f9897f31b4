"""In-place updates that cost what was written: slices over older chunks, merged later.

Why: a mount committed an update by re-storing every chunk-sized slot it
touched, so an fsync after one 4 KiB database page wrote a 4 MiB chunk
RS-coded into 6 shards (sqlite: 67 ms per commit). As in JuiceFS's
chunk/slice/block model, an update now stores only the bytes written, as
slices the manifest layers over the older chunks (`extents.overlay`):

* a written range of at most SLICE_INLINE_MAX bytes becomes a small chunk
  kept in the metadata (writer.LOC_META: its sealed bytes are in its chunk
  record, committed in the same transaction as the manifest -- one LMDB
  commit, nothing on the nodes);
* a larger range is cut on the chunk grid and stored as ordinary chunks (a
  whole slot becomes a whole chunk again; edges below SLICE_INLINE_MAX go
  to the metadata);
* a truncate cuts the extent list or appends a hole: it costs nothing
  whatever the new size (up to extents.MAX_FILE_SIZE).

`Merger` then re-stores fragmented chunk slots as whole chunks in the
background (after MERGE_DELAY of quiet on that object, or at once when it
has more than MERGE_EXTENTS extents), committed only if the object is
unchanged meanwhile; the content, and so the ETag, stay the same. All
references go through the usual refcounts, so gc, dedup and snapshots
need nothing special.
"""

from __future__ import annotations

import bisect
import logging
import math
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Sequence

import trio

from . import extents as X, inodes
from .errors import ChunkMissing, R2fsError
from .types import ChunkRef, Conditional, DirTouch, ObjectInfo
from .writer import ChunkBatch

if TYPE_CHECKING:
    from .store import Bucket, Cluster

log = logging.getLogger(__name__)

#: Written ranges up to this size are stored in the metadata, not on the nodes.
SLICE_INLINE_MAX = 64 * 1024
#: Chunks an update stores concurrently.
UPDATE_INFLIGHT = 3
#: An object is merged once it was left alone this long after an update...
MERGE_DELAY = 2.0
#: ...or at once when its manifest holds more extents than this...
MERGE_EXTENTS = 1024
#: ...and a slot (chunk-grid slot) at once when it is cut into more extents than this.
SLOT_EXTENTS = 48

ReadFn = Callable[[int, int], Awaitable[bytes | memoryview]]


async def update(bucket: "Bucket", key: str, *, base: ObjectInfo | None, limit: int, size: int,
                 writes: Sequence[tuple[int, int]], read: ReadFn,
                 stored: Sequence[tuple[int, ChunkRef]] = (),
                 custom_metadata: dict[str, str] | None, http_metadata: dict[str, str] | None,
                 only_if: Conditional | None, keep_links: bool = True,
                 touch: Sequence[DirTouch] = (), ino: int | None = None) -> ObjectInfo:
    """Commit `base` changed in place: bytes of `base` at or past `limit` are gone
    (zeros), the size is `size`, and each (offset, length) of `writes` holds the
    bytes `read(offset, length)` returns. Stores only the written bytes.
    `stored`: (offset, chunk) already stored and recorded (a writer's whole chunks
    encoded in the background), laid in as they are; disjoint from `writes`."""
    c = bucket.cluster
    cs = c.config.chunk_size
    what = bucket._what(key)
    X.check_size(size, what)
    writes = [(o, min(n, size - o)) for o, n in writes if o < size and n > 0]
    if size <= c.config.inline_threshold and size < cs and not stored:  # small: inline
        data = bytearray(size)
        if base is not None and limit > 0:
            old = await bucket.read_range(base, 0, min(limit, size))
            data[:len(old)] = old
        for o, n in writes:
            data[o:o + n] = await read(o, n)
        return await bucket.put(key, bytes(data), custom_metadata=custom_metadata,
                                http_metadata=http_metadata, only_if=only_if,
                                keep_links=keep_links, touch=touch, ino=ino)
    base_refs = list(base.chunks) if base is not None and not base.inline else []
    if base is not None and base.inline and limit > 0:  # grows out of its manifest: its
        old = bytes(await bucket.read_range(base, 0, min(limit, base.size, size)))  # bytes
        read = _over(old, writes, read)  # are written again, with the new ones over them
        kept = subtract([(0, len(old))], sorted((o, r.size) for o, r in stored))
        writes = _union([*kept, *writes])
    batch = ChunkBatch()
    try:
        slices = await _store(bucket, batch, writes, read, cs, in_meta_ok=base is not None)
        pieces = [*slices, *((o, [r]) for o, r in stored)]

        def layout(refs: Sequence[ChunkRef]) -> list[ChunkRef]:
            cur = X.total(refs)
            if min(limit, cur) != cur:
                refs = X.resize(refs, limit)
            if size != min(limit, cur):
                refs = X.resize(refs, size)
            return X.overlay_many(refs, pieces)

        def manifest_of(refs: list[ChunkRef]) -> dict:
            etag = X.layout_etag(refs) if X.is_layered(refs) else None
            manifest = _manifest_of(bucket, refs, etag, custom_metadata, http_metadata, size)
            if ino:
                manifest["i"] = ino
            return manifest

        def rebase(cur: dict) -> dict | None:
            """The same change laid over `cur` instead: a background merge (same
            content, same ETag, another layout) committed since `base` was read.
            Without this, a file kept open (a database) would put the old slices
            back with every commit and undo every merge."""
            if base is None or cur.get("ver") == base.version or cur.get("e") != base.etag \
                    or cur.get("in") is not None or base.inline:
                return None
            refs = layout(X.from_manifest(cur.get("ch")))
            return manifest_of(refs)

        while True:
            refs = layout(base_refs)
            manifest = manifest_of(refs)
            try:
                info = await bucket._commit(key, manifest, only_if, batch, keep_links, touch,
                                            rebase=rebase, chunks=refs)
                break
            except ChunkMissing:
                # the merge replaced base's chunks and gc took them: the same content
                # (same ETag) under the new layout is as good a base
                if base is None:
                    raise
                now = await bucket.head(key)
                if now.etag != base.etag or now.inline:
                    raise
                base, base_refs = now, list(now.chunks)
    except BaseException:
        await c.writer.discard(batch)
        raise
    if X.is_layered(info.chunks):
        c.merger.schedule(bucket, key, info.chunks, [o for o, _ in pieces])
    return info


def _manifest_of(bucket: "Bucket", refs: list[ChunkRef], etag: str | None,
                 custom: dict[str, str] | None, http: dict[str, str] | None, size: int) -> dict:
    from .store import _chunk_etag, _manifest
    return _manifest(size=size, etag=etag or _chunk_etag(refs), chunks=refs,
                     http=http, custom=custom)


def subtract(ranges: Sequence[tuple[int, int]],
             cut: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) `ranges` without the bytes of `cut` (both sorted and disjoint)."""
    out = []
    for off, n in ranges:
        pos, end = off, off + n
        for c, cn in cut:
            if c + cn <= pos or c >= end:
                continue
            if c > pos:
                out.append((pos, c - pos))
            pos = max(pos, c + cn)
        if pos < end:
            out.append((pos, end - pos))
    return out


def _union(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) ranges merged into disjoint ones, in order."""
    out: list[list[int]] = []
    for o, n in sorted(ranges):
        if out and o <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], o + n - out[-1][0])
        else:
            out.append([o, n])
    return [(o, n) for o, n in out]


def _over(old: bytes, writes: Sequence[tuple[int, int]], read: ReadFn) -> ReadFn:
    """A read of the new content where `old` is what lies under the `writes`."""
    spans = list(writes)

    async def reader(offset: int, length: int) -> bytes | memoryview:
        buf = bytearray(old[offset:offset + length])
        buf.extend(bytes(length - len(buf)))
        for wo, wn in spans:
            a, b = max(offset, wo), min(offset + length, wo + wn)
            if a < b:
                buf[a - offset:b - offset] = await read(a, b - a)
        return bytes(buf)
    return reader


async def _store(bucket: "Bucket", batch: ChunkBatch, writes: Sequence[tuple[int, int]],
                 read: ReadFn, cs: int, *,
                 in_meta_ok: bool = True) -> list[tuple[int, list[ChunkRef]]]:
    """Store the written ranges; (offset, extents) of each piece, in order.
    `in_meta_ok`: small pieces may be sealed into the metadata (an in-place change
    of an existing object); a new object's pieces are all chunks, stored (and
    replicated, in local write mode) as a put stores them."""
    pieces: list[tuple[int, int]] = []
    for off, n in writes:
        pos, end = off, off + n
        while pos < end:  # cut on the chunk grid: whole slots become whole chunks
            stop = min(end, (pos // cs + 1) * cs)
            pieces.append((pos, stop - pos))
            pos = stop
    out: list[tuple[int, list[ChunkRef]] | None] = [None] * len(pieces)
    limit = trio.Semaphore(UPDATE_INFLIGHT)
    writer = bucket.cluster.writer

    async def one(i: int, off: int, n: int) -> None:
        try:
            data = bytes(await read(off, n))
            ref = await writer.write(data, bucket=bucket.name, batch=batch,
                                     in_meta=in_meta_ok and n <= SLICE_INLINE_MAX)
            out[i] = (off, [ref])
        finally:
            limit.release()

    async with trio.open_nursery() as nursery:
        for i, (off, n) in enumerate(pieces):
            await limit.acquire()
            nursery.start_soon(one, i, off, n)
    return out  # type: ignore[return-value]


# --- the background merge ----------------------------------------------------------------------


def slot_extents(refs: Sequence[ChunkRef], cs: int) -> dict[int, list[ChunkRef]]:
    """The extents naming chunks in each chunk-grid slot with data, cut to the slot
    (holes cost nothing and are left out)."""
    data: dict[int, list[ChunkRef]] = {}
    pos = 0
    for r in refs:
        if not r.hole:
            for slot in range(pos // cs, (pos + r.size - 1) // cs + 1):
                lo, hi = max(pos, slot * cs), min(pos + r.size, (slot + 1) * cs)
                data.setdefault(slot, []).append(ChunkRef(r.id, hi - lo, r.offset + lo - pos))
        pos += r.size
    return data


def fragmented_slots(refs: Sequence[ChunkRef], cs: int) -> list[int]:
    """Chunk-grid slots a merge re-stores whole: those with more than one extent
    naming a chunk, or with a piece from inside another chunk (offset > 0).
    Only slots with data are looked at (a sparse file's holes cost nothing)."""
    return sorted(slot for slot, items in slot_extents(refs, cs).items()
                  if len(items) > 1 or any(r.offset for r in items))


def crowded_slots(refs: Sequence[ChunkRef], cs: int, offsets: Iterable[int],
                  most: int) -> list[int]:
    """Of the slots holding `offsets`, those cut into more than `most` extents."""
    starts = X.starts(refs)
    out = []
    for slot in sorted({o // cs for o in offsets}):
        lo = bisect.bisect_right(starts, slot * cs) - 1
        hi = bisect.bisect_left(starts, (slot + 1) * cs)
        if hi - lo > most:
            out.append(slot)
    return out


async def merge(bucket: "Bucket", key: str, only: Iterable[int] | None = None) -> bool:
    """Re-store fragmented slots of `key` as whole chunks (same content, same ETag),
    all of them or those in `only`. Each slot is its own commit, made only if that
    slot still holds what was read (a change elsewhere in the file does not drop
    it: a database written all the time still gets merged). True if any slot was."""
    c = bucket.cluster
    cs = c.config.chunk_size
    try:
        info = await bucket.head(key)
    except R2fsError:
        return False
    if info.inline:
        return False
    todo = fragmented_slots(info.chunks, cs)
    if only is not None:
        wanted = set(only)
        todo = [s for s in todo if s in wanted]
    done = False
    for slot in todo:
        try:
            info = await bucket.head(key)
        except R2fsError:
            return done
        if info.inline:
            return done
        if await _merge_slot(bucket, key, info, slot):
            done = True
    return done


async def _merge_slot(bucket: "Bucket", key: str, info: ObjectInfo, slot: int) -> bool:
    c = bucket.cluster
    cs = c.config.chunk_size
    start = slot * cs
    end = min(start + cs, info.size)
    if end <= start:
        return False
    was = X.cut(info.chunks, start, end)
    if all(r.hole for r in was) or (len(was) == 1 and not was[0].offset):
        return False
    batch = ChunkBatch()
    meta = c.meta
    try:
        data = bytes(await bucket.read_range(info, start, end - start))
        ref = await c.writer.write(data, bucket=bucket.name, batch=batch)

        def txn_fn(txn: Any) -> None:
            cur = bucket._get(txn, key)
            if cur is None or cur.get("in") is not None:
                raise _Changed(f"{bucket._what(key)} changed while it was merged")
            refs = X.from_manifest(cur.get("ch"))
            if X.total(refs) < end:
                raise _Changed(f"{bucket._what(key)} changed while it was merged")
            slot_now = X.cut(refs, start, end)
            merged = relayer(was, slot_now, ref)
            if merged == slot_now:
                raise _Changed(f"{bucket._what(key)} changed while it was merged")
            c.writer.install(txn, batch)
            new = dict(cur)
            new.pop("nl", None)
            new["ch"] = X.to_manifest(X.overlay(refs, start, merged))
            new["ver"] = uuid.uuid4().hex  # (the layout changed: caches keyed by version)
            raw = meta.objects.get(txn, bucket.name, key)
            if inodes.is_stub(raw):
                c._reref(txn, X.ref_ids(new["ch"]), lambda: X.ref_ids(inodes.replace_content(
                    meta, txn, bucket.name, raw, new).get("ch")), context=bucket._what(key))
            else:
                bucket._replace_object(txn, key, new)

        if c.merger.expect is not None:
            c.merger.expect(bucket.name, key)
        try:
            await c.writer.commit(batch, txn_fn)
        except BaseException:
            if c.merger.unexpect is not None:
                c.merger.unexpect(bucket.name, key)
            raise
        return True
    except (_Changed, ChunkMissing):
        await c.writer.discard(batch)
        return False
    except BaseException:
        await c.writer.discard(batch)
        raise


def relayer(was: Sequence[ChunkRef], now: Sequence[ChunkRef], ref: ChunkRef) -> list[ChunkRef]:
    """A slot's extents `now` with every piece that is still what it was when the
    slot (extents `was`, same span) was read and stored as chunk `ref` replaced by
    that piece of `ref`. Pieces written since stay on top: a merge of a slot that
    keeps being written (a database's first page) still lands."""
    out: list[ChunkRef] = []
    st = X.starts(was)
    pos = 0
    for r in now:
        i = bisect.bisect_right(st, pos) - 1
        if 0 <= i < len(was) and pos + r.size <= st[i + 1] and was[i].id == r.id and \
                (r.hole or was[i].offset + pos - st[i] == r.offset):
            out.append(ChunkRef(ref.id, r.size, pos))  # the same bytes, from the merged chunk
        else:
            out.append(r)
        pos += r.size
    return X.normalise(out)


class _Changed(R2fsError):
    """The slot was rewritten while it was being merged: that merge is dropped."""


class Merger:
    """Runs `merge` in the background for objects updated in place by this process.

    Two triggers: an object left alone for MERGE_DELAY gets all its fragmented
    slots merged; a slot cut into more than SLOT_EXTENTS extents (or an object
    with more than MERGE_EXTENTS) is merged at once, while writes go on. Why not
    every slot at once: re-storing a 4 MiB chunk for every few 4 KiB pages a
    database changes is the write amplification slices are there to avoid.
    """

    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster
        self._due: dict[tuple[str, str], float] = {}
        self._now: dict[tuple[str, str], set[int]] = {}  # slots to merge at once
        self._wake: trio.Event | None = None
        self._token: Any = None
        self._lock_of: tuple[Any, trio.Lock] | None = None
        self.merged = 0
        #: called with (bucket, key) before a merge commits, and `unexpect` if it does
        #: not: a mount counts the merge's change record as its own (it changes no content)
        self.expect: Callable[[str, str], None] | None = None
        self.unexpect: Callable[[str, str], None] | None = None

    def schedule(self, bucket: "Bucket", key: str, refs: Sequence[ChunkRef],
                 offsets: Iterable[int] = ()) -> None:
        """`key` now has extents `refs`; the update wrote at `offsets`."""
        now = trio.current_time()
        cs = self.cluster.config.chunk_size
        k = (bucket.name, key)
        self._due[k] = now + MERGE_DELAY
        if len(refs) > MERGE_EXTENTS:
            self._due[k] = now
        else:
            crowded = crowded_slots(refs, cs, offsets, SLOT_EXTENTS)
            if crowded:
                self._now.setdefault(k, set()).update(crowded)
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:  # first use in this trio run: start the task
            self._token = token
            self._wake = trio.Event()
            trio.lowlevel.spawn_system_task(self._run, name="r2fs-slice-merge")
        elif self._wake is not None and (self._now or self._due[k] <= now):
            self._wake.set()

    @property
    def _lock(self) -> trio.Lock:
        """One merge at a time (a trio lock per trio run: tests run many)."""
        token = trio.lowlevel.current_trio_token()
        if self._lock_of is None or self._lock_of[0] is not token:
            self._lock_of = (token, trio.Lock())
        return self._lock_of[1]

    def pending(self) -> int:
        return len(self._due)

    async def _merge(self, name: str, key: str, only: Iterable[int] | None) -> None:
        try:
            async with self._lock:
                if await merge(self.cluster.bucket(name, max_key=1 << 30), key, only):
                    self.merged += 1
        except Exception as exc:  # noqa: BLE001 - the next update schedules it again
            log.warning("merging the slices of %s/%s failed: %s", name, key, exc)

    async def _run(self) -> None:
        while True:
            while self._now:
                (name, key), slots = self._now.popitem()
                await self._merge(name, key, slots)
            now = trio.current_time()
            ready = [k for k, t in self._due.items() if t <= now]
            for name, key in ready:
                self._due.pop((name, key), None)
                self._now.pop((name, key), None)
                await self._merge(name, key, None)
            nxt = min(self._due.values(), default=math.inf)
            self._wake = trio.Event()
            if self._now:
                continue
            with trio.move_on_at(nxt):
                await self._wake.wait()

    async def drain(self) -> None:
        """Merge everything scheduled now (tests, shutdown), after the merge in flight."""
        async with self._lock:
            for name, key in list({*self._due, *self._now}):
                self._due.pop((name, key), None)
                self._now.pop((name, key), None)
                if await merge(self.cluster.bucket(name, max_key=1 << 30), key):
                    self.merged += 1
