"""Checking one chunk's shards and rewriting the bad ones from any k good ones.

The pieces scrub, heal-on-read, `node replace` and rebalancing share:

* `inspect(c, cid, rec)` reads every shard of a chunk and verifies its header
  (chunk id, index, layout) and checksum; it reports each bad one and why.
* `rewrite(c, cid, rec, indices, good)` decodes the sealed chunk from k good
  shard payloads, re-encodes it (RS encoding is deterministic, so the result
  is byte-identical to what was lost) and writes the shards `indices` to
  their placement: a temp file, fdatasync, rename over the damaged file,
  directory fsync -- so a kill leaves either the old file or the new one.
* `Healer`: the queue behind heal-on-read (as MinIO's MRF queue): a read that
  had to decode around a bad or missing shard hands the chunk id here, a
  background thread repairs it.

Nothing here decrypts: the shard checksums say which shards are good, and
decoding k good shards gives exactly the sealed chunk that was stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from . import chunks as chunkmod
from .chunkwalk import NAMESPACE, crash_point, live_on_nodes
from .errors import DataUnavailable, UnsupportedFormat
from .nodes import NodeUnavailable
from .shards import ShardInvalid

if TYPE_CHECKING:
    from .store import Cluster

log = logging.getLogger("r2fs.repair")

#: records-table prefix of known, unrepaired damage: + chunk id -> {t, bad: {index: kind}}
BAD_PREFIX = NAMESPACE.encode() + b"\0bad/"
MISSING = "missing"
CORRUPT = "corrupt"
UNAVAILABLE = "unavailable"


class Counters:
    """Process-wide scrub and repair progress, for Prometheus (`render_metrics`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = dict.fromkeys(("scrub_chunks", "scrub_bytes", "scrub_damaged_shards",
                                     "repair_shards", "repair_bytes", "repair_failed_chunks"), 0)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                self.values[k] += v

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


COUNTERS = Counters()


@dataclass
class Inspection:
    """What `inspect` found: bad shards (index -> (kind, detail)) and good payload views."""
    bad: dict[int, tuple[str, str]] = field(default_factory=dict)
    good: dict[int, memoryview] = field(default_factory=dict)
    ok: int = 0
    read_bytes: int = 0

    def release(self) -> None:
        chunkmod._release_all(self.good)


def _classify(error: Exception) -> tuple[str, str]:
    if isinstance(error, FileNotFoundError):
        return MISSING, "missing"
    if isinstance(error, (ShardInvalid, UnsupportedFormat)):
        return CORRUPT, str(error)
    if isinstance(error, NodeUnavailable):
        return UNAVAILABLE, str(error)
    if isinstance(error, OSError):
        return UNAVAILABLE, error.strerror or str(error)
    raise error


def inspect(c: "Cluster", cid: bytes, rec: dict, *, keep: int = 0,
            skip: Sequence[int] = ()) -> Inspection:
    """Read and verify every shard of the chunk (but `skip`); keep up to `keep` good payloads.

    Shards are read one after another with O_DIRECT into pooled buffers; the
    caller runs several chunks at once for throughput. The caller must
    `release()` the result.
    """
    cs = c.chunks
    names = cs.shard_names(cid, rec["g"])
    out = Inspection()
    try:
        for i, node_id in enumerate(rec["p"]):
            if i in skip:
                continue
            try:
                view = cs._fetch(cid, names[i], i, node_id, False, True)
            except Exception as e:  # noqa: BLE001 -- classified (or re-raised) below
                out.bad[i] = _classify(e)
                continue
            assert view is not None
            out.ok += 1
            out.read_bytes += len(view)
            if len(out.good) < keep:
                out.good[i] = view
            else:
                chunkmod._release(view)
    except BaseException:
        out.release()
        raise
    return out


def gather_good(c: "Cluster", cid: bytes, rec: dict, exclude: Sequence[int]) -> dict[int, memoryview]:
    """At least k verified payloads of shards other than `exclude` (data shards first).

    Raises DataUnavailable if fewer than k are good. The caller releases them.
    """
    placement = [("" if i in exclude else nid) for i, nid in enumerate(rec["p"])]
    return c.chunks._gather(cid, rec["g"], placement, f"repair of chunk {cid.hex()}", notify=False)


def rewrite(c: "Cluster", cid: bytes, rec: dict, indices: Sequence[int],
            good: dict[int, memoryview]) -> int:
    """Write shards `indices` of the chunk, decoded from `good` (released here); bytes written.

    Raises NodeUnavailable if a target node refuses (the other shards are still written).
    """
    cs = c.chunks
    buf = chunkmod._buffers.get(rec["l"])
    try:
        sealed = memoryview(buf)[:rec["l"]]
        cs.erasure.decode(good, rec["l"], out=sealed)
        chunkmod._release_all(good)
        files, direct = cs._encode_shards(cid, sealed)
        del sealed
        names = cs.shard_names(cid, rec["g"])
        written = 0
        errors = []
        try:
            for i in indices:
                node = cs.nodes.get(rec["p"][i])
                if node is None:
                    errors.append(f"shard {i}: node {rec['p'][i]} is not part of this cluster")
                    continue
                try:
                    node.write_parts(names[i], files[i], scratch=chunkmod._buffers)
                except (OSError, NodeUnavailable) as e:
                    errors.append(f"shard {i} on {rec['p'][i]}: {getattr(e, 'strerror', None) or e}")
                    continue
                written += sum(len(p) for p in files[i])
                crash_point("repair:written")
        finally:
            files.clear()
            if direct is not None:
                for b, _ in direct:
                    chunkmod._buffers.put(b)
    finally:
        chunkmod._release_all(good)
        chunkmod._buffers.put(buf)
    if errors:
        raise NodeUnavailable(f"chunk {cid.hex()}: could not rewrite {'; '.join(errors)}")
    return written


@dataclass
class RepairResult:
    bad: dict[int, tuple[str, str]]
    repaired: int = 0  # shards rewritten
    written_bytes: int = 0
    read_bytes: int = 0
    error: str | None = None  # why the chunk could not be (fully) repaired
    unreadable: bool = False  # fewer than k good shards: the chunk's data is lost


def check_and_repair(c: "Cluster", cid: bytes, rec: dict, *, repair: bool) -> RepairResult:
    """Verify every shard of the chunk; with `repair`, rewrite the bad ones.

    Memory: one shard buffer at a time while verifying; only a damaged chunk
    being repaired reads k good shards again (from the page cache, mostly).
    """
    k = c.config.k
    found = inspect(c, cid, rec)
    found.release()
    result = RepairResult(found.bad, read_bytes=found.read_bytes)
    if not found.bad:
        return result
    if found.ok < k:
        result.error = f"only {found.ok} good shards of {k} needed"
        result.unreadable = True
        return result
    if not repair:
        return result
    current = c.chunk_record(cid)  # gc or a rebalance may have changed it meanwhile
    if not live_on_nodes(current) or current["g"] != rec["g"] or current["p"] != rec["p"]:
        result.bad = {}
        return result
    fixable = [i for i in sorted(found.bad) if _writable(c, rec["p"][i])]
    stuck = [i for i in sorted(found.bad) if i not in fixable]
    try:
        if fixable:
            good = gather_good(c, cid, rec, exclude=sorted(found.bad))
            result.written_bytes = rewrite(c, cid, rec, fixable, good)
            result.repaired = len(fixable)
    except (NodeUnavailable, DataUnavailable) as e:
        result.error = str(e)
    if stuck and result.error is None:
        down = sorted({rec["p"][i] for i in stuck})
        result.error = (f"{len(stuck)} shards are on unavailable nodes ({', '.join(down)}): "
                        "bring them back or `r2fs node replace` them")
    return result


def _writable(c: "Cluster", node_id: str) -> bool:
    node = c.chunks.node(node_id)
    return node is not None and node.available()


def repair_chunk(c: "Cluster", cid: bytes) -> RepairResult | None:
    """Check and repair one chunk by id (heal-on-read); None if it is not on the nodes."""
    rec = c.chunk_record(cid)
    if not live_on_nodes(rec):
        return None
    assert rec is not None
    return check_and_repair(c, cid, rec, repair=True)


def _bad_key(cid: bytes) -> bytes:
    return BAD_PREFIX + cid


def note_damage(c: "Cluster", cid: bytes, bad: dict[int, tuple[str, str]] | None) -> None:
    """Remember (or, with `bad` empty/None, forget) a chunk's known damage."""
    def txn_fn(txn: object) -> None:
        if bad:
            c.meta.put(txn, "records", _bad_key(cid),
                       {"t": time.time(), "bad": {str(i): kind for i, (kind, _) in bad.items()}})
        else:
            c.meta.delete(txn, "records", _bad_key(cid))
    c.meta.write(txn_fn)


def known_damage(c: "Cluster") -> dict[bytes, dict]:
    """Chunk id -> {"bad": {index: kind}} of damage found and not repaired yet."""
    out = {}
    with c.meta.read() as txn:
        for k, v in c.meta.scan(txn, "records", BAD_PREFIX):
            out[k[len(BAD_PREFIX):]] = v
    return out


class Healer:
    """Chunks reads found damaged, repaired by one background thread (heal on read).

    Bounded: at most `MAX_QUEUED` distinct chunks wait; more are dropped (a
    scrub finds them). `close(wait=)` lets a short-lived process (`r2fs get`)
    finish the repairs its read scheduled before it exits.
    """

    MAX_QUEUED = 1024

    def __init__(self, c: "Cluster") -> None:
        self.c = c
        self._queue: OrderedDict[bytes, None] = OrderedDict()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = False
        self.scheduled = 0
        self.repaired_shards = 0
        self.repaired_bytes = 0
        self.failed = 0

    def schedule(self, cid: bytes, problems: list[str] | None = None) -> None:
        with self._cv:
            if self._closed or cid in self._queue or len(self._queue) >= self.MAX_QUEUED:
                return
            self._queue[cid] = None
            self.scheduled += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="r2fs-heal", daemon=True)
                self._thread.start()
            self._cv.notify()
        log.info("chunk %s read around damaged shards (%s); repair scheduled", cid.hex(),
                 "; ".join(problems or []))

    def pending(self) -> int:
        with self._cv:
            return len(self._queue) + (1 if self._busy else 0)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                cid, _ = self._queue.popitem(last=False)
                self._busy = True
            try:
                result = repair_chunk(self.c, cid)
                if result is not None:
                    self.repaired_shards += result.repaired
                    self.repaired_bytes += result.written_bytes
                    COUNTERS.add(repair_shards=result.repaired, repair_bytes=result.written_bytes,
                                 repair_failed_chunks=1 if result.error else 0)
                    note_damage(self.c, cid, result.bad if result.error else None)
                    if result.error:  # (a node down: not for every read to shout about)
                        self.failed += 1
                        log.info("heal of chunk %s incomplete: %s", cid.hex(), result.error)
            except Exception as e:  # noqa: BLE001 - background work; a scrub finds it again
                self.failed += 1
                log.warning("heal of chunk %s failed: %s", cid.hex(), e)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def close(self, wait: float = 10.0) -> None:
        """Finish the queued repairs (up to `wait` seconds), then stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(wait)
