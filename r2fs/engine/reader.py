"""Reading chunks: the tiers a chunk is looked for in, nearest first.

    read-ahead buffer -> L1 (local disk, sealed) -> staging (local uploads)
    -> L2 (the chunk's upper-tier peer) -> the nodes (k shards, RS decode)

Chunks are immutable and content-addressed, so no tier ever needs
invalidation. Every byte that came from outside this process's memory is
authenticated (AES-GCM) before it is returned or cached: a corrupt L1 file or
a lying peer costs a refetch, never wrong data. Concurrent reads of one chunk
share one fetch (single flight), also across trio loops of one process (a
mount's FUSE loop and its peer server's loop).

Observability: hit/miss/byte counters per tier, shown by `r2fs status` (a
configured process -- mount, gateway -- writes a snapshot of them to
`<cluster>/run/cache-<pid>.json` every few seconds, removed on exit) and as
Prometheus text by `render_metrics()`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

import trio

from . import chunks, memory
from .cache import DiskCache, default_capacity
from .crypto import open_chunk_into
from .errors import ChunkCorrupt, DataUnavailable
from .peers import Peer, PeerApp, PeerError, PeerMiss, PeerServer, PeerSet, cluster_token
from .readahead import ReadAhead
from .types import ChunkRef, ObjectInfo
from .writer import LOC_META, LOC_STAGING

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("r2fs.reader")

Buffer = bytes | bytearray | memoryview

TIERS = ("l1", "staging", "l2", "nodes")
SNAPSHOT_EVERY = 2.0
#: Buffer pools unused this long are released (a big transfer's working set does
#: not stay resident for the rest of a mount's life).
TRIM_IDLE = 4.0
#: Chunks decoded from the nodes at once, process-wide: each holds k shard
#: buffers, a sealed frame and its plaintext while it runs (~16 MiB for a 4 MiB
#: chunk), and on 2 cores decoding more at once gains nothing; read-ahead's
#: window alone let ~9 run together (a mount's 1 GiB cold read peaked at
#: 213-229 MiB RSS, with this and the smaller window and fill queue 138-144).
NODE_READS = 3
#: The maintenance round drops the LMDB map's pages (every page a metadata read
#: touched stays in the RSS) only when the file-backed and shared part of the
#: process's RSS is above UPKEEP_MAP (the map is most of it; L1's fill frames the
#: rest), or the whole RSS above UPKEEP_HIGH (a big transfer: the bound matters
#: more); both read cheaply from /proc/self/statm. Why not every round: then
#: every later metadata read was a minor fault again -- a mount's small-file
#: stat cost 50 instead of 25-30 µs of CPU per request.
UPKEEP_MAP = 32 << 20
UPKEEP_HIGH = 128 << 20
INDEX_EVERY = 10.0
#: A snapshot older than this is from a process that died without cleaning up.
SNAPSHOT_STALE = 30.0
RUN_DIR = "run"
SNAPSHOT_PREFIX = "cache-"

_readers: "weakref.WeakSet[ChunkReader]" = weakref.WeakSet()


class ReadStats:
    """Thread-safe counters: per tier hits/misses/bytes, plus named events."""

    EVENTS = ("peer_errors", "peer_misses", "peer_corrupt", "peer_requests_served",
              "peer_requests_refused", "peer_requests_missing", "peer_bytes_served")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = dict.fromkeys(TIERS, 0)
        self.misses = dict.fromkeys(TIERS, 0)
        self.bytes = dict.fromkeys(TIERS, 0)
        self.events = dict.fromkeys(self.EVENTS, 0)

    def hit(self, tier: str, nbytes: int) -> None:
        with self._lock:
            self.hits[tier] += 1
            self.bytes[tier] += nbytes

    def miss(self, tier: str) -> None:
        with self._lock:
            self.misses[tier] += 1

    def event(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.events[name] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"tiers": {t: {"hits": self.hits[t], "misses": self.misses[t],
                                  "bytes": self.bytes[t]} for t in TIERS},
                    "events": dict(self.events)}


class _Flight:
    """One fetch in progress that other readers of the same chunk wait for."""

    __slots__ = ("waiters", "result", "error")

    def __init__(self) -> None:
        self.waiters: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []
        self.result: Any = None
        self.error: BaseException | None = None


class ChunkReader:
    """The read tiers of one process (one per Cluster)."""

    def __init__(self, core: "Core") -> None:
        self.core = core
        self.stats = ReadStats()
        self.l1: DiskCache | None = None
        self.peers: PeerSet | None = None
        self.readahead = ReadAhead(self._read_tiers, hint=self._hint)
        self.server: PeerServer | None = None
        self._token: bytes | None = None
        self._flights: dict[Any, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._node_reads = threading.BoundedSemaphore(NODE_READS)
        self._maint: threading.Thread | None = None
        self._maint_stop = threading.Event()
        self._snapshot_path: str | None = None
        self.configured = False
        self.self_url: str | None = None
        self._writer_peers: dict[str, Peer] = {}  # peer endpoints of other hosts' writers
        _readers.add(self)

    # --- configuration -----------------------------------------------------------------

    @property
    def token(self) -> bytes:
        if self._token is None:
            self._token = cluster_token(self.core.master)
        return self._token

    def configure(self, *, cache_dir: str | None = None, cache_size: int | None = None,
                  peers: list[str] | None = None, readahead: bool = True,
                  peer_listen: str | None = None, self_url: str | None = None,
                  snapshots: bool = True) -> None:
        """Turn on the tiers for a long-running process (mount, gateway).

        cache_dir: L1 root (default `<cluster>/cache`); cache_size: bytes (None:
        2 GiB at most, leaving the disk >= 10% free; 0: no L1); peers: peer
        URLs (None: the `[pops]` table of cluster.toml, if any); peer_listen:
        `HOST:PORT` to serve peers on a server of this reader's own (mounts;
        port 0 picks one); self_url: this process's own peer URL when another
        server (the gateway) answers peers, so rendezvous can pick itself.
        """
        self.close()
        root = cache_dir or os.path.join(self.core.path, "cache")
        size = default_capacity(root) if cache_size is None else cache_size
        if cache_size is None and size == 0:
            log.warning("no local read cache: %s has less than 10%% of its disk free", root)
        try:
            self.l1 = DiskCache(root, size, self.open_into) if size > 0 else None
            self.readahead.enabled = readahead
            if peer_listen:
                self.server = PeerServer(self.peer_app(), peer_listen)
                self_url = self.server.start()
            if peers is None:
                pops = self.core.config.raw.get("pops") if self.core.config.raw else None
                peers = [str(u) for u in (pops or {}).values()] if isinstance(pops, dict) else []
            self.peers = PeerSet(peers, self.token, self_url=self_url) if peers else None
        except BaseException:
            self.close()  # nothing half-configured stays behind (the L1 slot lock, a server)
            raise
        self.self_url = self.server.url if self.server else self_url
        if self.server is not None:
            # chunks this process stages are recorded with this URL, so that processes on
            # other hosts read them from here until they are replicated
            self.core.staged_url = self.self_url
        self.configured = True
        if snapshots:
            self._start_maintenance()

    def close(self) -> None:
        """Stop the peer server and the snapshot thread; close pooled peer connections;
        save the L1 index."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.peers is not None:
            self.peers.close()
        if self._maint is not None:
            self._maint_stop.set()
            self._maint.join(5)
            self._maint = None
            self._maint_stop = threading.Event()
        if self._snapshot_path:
            _unlink(self._snapshot_path)
            self._snapshot_path = None
        if self.l1 is not None:
            self.l1.close()
            self.l1 = None
        self.configured = False

    def open_into(self, cid: bytes, sealed: Any, out: Any) -> None:
        """Authenticate + decrypt a sealed chunk into `out` (ChunkCorrupt on failure)."""
        open_chunk_into(self.core.master, cid, sealed, out)

    def peer_app(self) -> PeerApp:
        """The ASGI app answering peers (the gateway mounts it under /_r2fs/)."""
        outcomes = {"served": "peer_requests_served", "refused": "peer_requests_refused",
                    "missing": "peer_requests_missing", "unavailable": "peer_requests_missing"}
        return PeerApp(self.token, self.sealed_for_peer, render_metrics,
                       lambda outcome: self.stats.event(outcomes[outcome]))

    # --- reading -------------------------------------------------------------------------

    async def read(self, ref: ChunkRef, *, context: str = "") -> bytes:
        """Authenticated plaintext of a chunk (treat it as read-only: it may be shared)."""
        data = self.readahead.take(ref.id)
        if data is not None:
            return data
        return await self._read_tiers(ref, context)

    async def _read_tiers(self, ref: ChunkRef, context: str) -> bytes:
        return await self._single(ref.id, lambda: self._fetch(ref, context))

    def chunks(self, info: ObjectInfo, offset: int, end: int, *,
               context: str) -> AsyncIterator[tuple[int, bytes]]:
        """(chunk start, plaintext) for the chunks overlapping [offset, end), with read-ahead."""
        return self.readahead.chunks(info, offset, end, self._read_tiers, context)

    async def read_range(self, info: ObjectInfo, offset: int, end: int, *, context: str,
                         view: bool = False) -> bytes | memoryview:
        """Bytes [offset, end) of a chunked object (not inline), with read-ahead."""
        return await self.readahead.read(info, offset, end, self._read_tiers, context, view=view)

    def _hint(self, cids: list[bytes]) -> None:
        """Read-ahead's early notice: have the kernel start reading those L1 files."""
        l1 = self.l1
        if l1 is None or not l1.takes_hints:
            return  # (a thread hop for nothing: direct reads do not use the page cache)

        async def advise() -> None:
            try:
                await trio.to_thread.run_sync(l1.advise, cids)
            except Exception as exc:  # noqa: BLE001 - a hint; a system task must not raise
                log.debug("L1 read hint failed: %s", exc)
        trio.lowlevel.spawn_system_task(advise, name="r2fs-l1-advise")

    async def _single(self, key: Any, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """Run `fetch` once for concurrent callers with the same key."""
        while True:
            with self._flights_lock:
                flight = self._flights.get(key)
                if flight is None:
                    flight = self._flights[key] = _Flight()
                    break
                done = trio.Event()
                flight.waiters.append((trio.lowlevel.current_trio_token(), done))
            await done.wait()
            if flight.error is None:
                return flight.result
            if not isinstance(flight.error, (trio.Cancelled, KeyboardInterrupt)):
                raise flight.error
            # the leader was cancelled (its caller went away): fetch ourselves
        try:
            flight.result = await fetch()
            return flight.result
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._flights_lock:
                del self._flights[key]
                waiters, flight.waiters = flight.waiters, []
            me = trio.lowlevel.current_trio_token()
            for token, event in waiters:
                if token is me:
                    event.set()
                else:
                    try:
                        token.run_sync_soon(event.set)
                    except trio.RunFinishedError:
                        pass

    async def _fetch(self, ref: ChunkRef, context: str) -> bytes:
        cid = ref.id
        if self.l1 is not None:
            data = await trio.to_thread.run_sync(self.l1.get, cid)
            if data is not None:
                self.stats.hit("l1", len(data))
                return data
            self.stats.miss("l1")
        rec = self._record(cid, context)
        if rec.get("loc") == LOC_META:  # a small slice: sealed in its record, not on nodes
            sealed = rec["d"]
            if len(sealed) <= 65536:
                return self._open(cid, sealed, context)
            return await trio.to_thread.run_sync(self._open, cid, sealed, context)
        if rec.get("loc") == LOC_STAGING:
            data = await trio.to_thread.run_sync(self._from_staging, cid, context)
            if data is not None:
                return data
            writer = rec.get("w")
            if writer and writer != self.self_url:
                data = await self._from_writer(cid, rec, writer, context)
                if data is not None:
                    return data
        if self.peers:
            data = await self._from_peer(cid, rec, context)
            if data is not None:
                return data
        return await trio.to_thread.run_sync(self._from_nodes, cid, rec, context)

    def _record(self, cid: bytes, context: str) -> dict:
        rec = self.core.chunk_record(cid)
        if rec is None:
            where = f"{context}: " if context else ""
            raise DataUnavailable(f"{where}chunk {cid.hex()} has no record (metadata damaged?)")
        return rec

    def _open(self, cid: bytes, sealed: Any, context: str) -> bytearray:
        try:
            return self.core.chunks.unseal(cid, sealed)
        except ChunkCorrupt as e:
            raise ChunkCorrupt(f"{context}: {e}" if context else str(e)) from None

    def _from_staging(self, cid: bytes, context: str) -> bytearray | None:
        sealed = self._read_staged(cid)
        if sealed is None:
            self.stats.miss("staging")
            return None
        data = self._open(cid, sealed, context)
        self.stats.hit("staging", len(data))
        return data

    def _read_staged(self, cid: bytes) -> bytes | None:
        """The sealed chunk if it is in local staging (loc="staging"), else None. Blocking.

        Safe against the replicator finishing in between: when the chunk left
        staging after the caller looked at its record, the sealed chunk is
        read from the nodes it now lives on, so a reader holding a stale
        record never sees a spurious failure.
        """
        c = self.core
        rec = c.chunk_record(cid)
        if rec is None or rec.get("loc") != LOC_STAGING:
            return None
        sealed = c.staging.read(cid, rec["g"])
        if sealed is not None:
            return sealed
        now = c.chunk_record(cid)
        if now is None:
            return None
        if now.get("loc") == LOC_STAGING:
            if now["g"] != rec["g"]:
                sealed = c.staging.read(cid, now["g"])
                if sealed is not None:
                    return sealed
            if now.get("w") and now["w"] != self.self_url:
                return None  # staged by a process on another host: read from it (_from_writer)
            raise DataUnavailable(f"chunk {cid.hex()} is recorded in local staging but "
                                  f"{c.staging.path_of(cid, now['g'])} is missing")
        return bytes(c.chunks.read_sealed(cid, now["g"], now["p"], now["l"]))

    def _from_nodes(self, cid: bytes, rec: dict, context: str) -> bytearray:
        with self._node_reads:
            return self._decode_from_nodes(cid, rec, context)

    def _decode_from_nodes(self, cid: bytes, rec: dict, context: str) -> bytearray:
        l1 = self.l1
        # decoded straight into the L1 entry's write buffer (no copy to fill L1)
        frame = l1.frame(rec["l"]) if l1 is not None else None
        taken = False

        def fill(sealed: memoryview) -> None:
            nonlocal taken
            taken = True
            l1.put(cid, sealed, framed=sealed is frame)

        try:
            data = self.core.chunks.read(cid, rec["g"], rec["p"], rec["l"], context=context,
                                            into=frame, on_sealed=None if l1 is None else fill)
        finally:
            if not taken:
                self._release(frame)
        self.stats.hit("nodes", len(data))
        return data

    def _release(self, frame: memoryview | None) -> None:
        """Give back an L1 frame not filled (never one a cancelled, abandoned
        receive may still write into: that one is left to the garbage collector)."""
        if frame is not None and self.l1 is not None:
            self.l1.release(frame)

    async def _from_writer(self, cid: bytes, rec: dict, url: str,
                           context: str) -> bytearray | None:
        """A chunk staged by a process on another host, from that process's peer endpoint
        (it stays there until replicated); None if it cannot be had there (the caller goes on:
        a chunk replicated meanwhile is on the nodes)."""
        peer = self._writer_peers.get(url)
        if peer is None:
            if len(self._writer_peers) > 64:
                self._writer_peers.clear()
            peer = self._writer_peers[url] = Peer(url, self.token)
        try:
            sealed = await peer.fetch_chunk(cid, rec["l"])
        except (PeerMiss, PeerError) as e:
            log.info("%s: staged chunk %s not available from its writer (%s)",
                     context or "read", cid.hex(), e)
            return None
        data = await trio.to_thread.run_sync(self._open, cid, sealed, context)
        self.stats.hit("staging", len(data))  # staged, on its writer's host
        return data

    async def _from_peer(self, cid: bytes, rec: dict, context: str) -> bytearray | None:
        assert self.peers is not None
        peer = self.peers.choose(cid)
        if peer is None:
            return None
        l1 = self.l1
        frame = l1.frame(rec["l"]) if l1 is not None else None  # received where L1 writes from
        try:
            sealed = await peer.fetch_chunk(cid, rec["l"], into=frame)
        except PeerMiss:
            peer.breaker.success()
            self.stats.miss("l2")
            self.stats.event("peer_misses")
            self._release(frame)
            return None
        except PeerError as e:
            peer.breaker.failure()
            self.stats.miss("l2")
            self.stats.event("peer_errors")
            log.info("%s: %s; reading the nodes", context or "read", e)
            self._release(frame)
            return None

        def verify_and_fill() -> bytearray:
            nonlocal frame
            data = self.core.chunks.unseal(cid, sealed)
            if l1 is not None:
                framed, frame = sealed is frame, None
                l1.put(cid, sealed, framed=framed)
            return data

        try:
            data = await trio.to_thread.run_sync(verify_and_fill)
        except ChunkCorrupt:
            peer.breaker.failure()
            self.stats.miss("l2")
            self.stats.event("peer_corrupt")
            log.warning("%s: peer %s sent chunk %s that fails authentication; reading the nodes",
                        context or "read", peer.url, cid.hex())
            self._release(frame)
            return None
        peer.breaker.success()
        self.stats.hit("l2", len(data))
        return data

    # --- serving peers -------------------------------------------------------------------

    async def sealed_for_peer(self, cid: bytes) -> Buffer | None:
        """A chunk in sealed form for a peer: from L1, staging or the nodes (then
        cached in L1), authenticated here too so a bad local copy is never passed
        on. None if the cluster has no such chunk. Never asks other peers."""
        sealed = await self._single(("sealed", cid), lambda: self._sealed_local(cid))
        if sealed is not None:
            self.stats.event("peer_bytes_served", len(sealed))
        return sealed

    async def _sealed_local(self, cid: bytes) -> Buffer | None:
        return await trio.to_thread.run_sync(self._sealed_local_sync, cid)

    def _sealed_local_sync(self, cid: bytes) -> Buffer | None:
        if self.l1 is not None:
            sealed = self.l1.get_sealed(cid)
            if sealed is not None:
                self.stats.hit("l1", len(sealed))
                return sealed
            self.stats.miss("l1")
        rec = self.core.chunk_record(cid)
        if rec is None:
            return None
        context = f"peer request for chunk {cid.hex()}"
        if rec.get("loc") == LOC_STAGING:
            staged = self._read_staged(cid)
            if staged is not None:
                self._open(cid, staged, context)
                self.stats.hit("staging", len(staged))
                return staged
            self.stats.miss("staging")
        sealed = self.core.chunks.read_sealed(cid, rec["g"], rec["p"], rec["l"], context=context)
        self._open(cid, sealed, context)
        if self.l1 is not None:
            self.l1.put(cid, sealed)
        self.stats.hit("nodes", len(sealed))
        return sealed

    # --- observability -------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """This process's counters (numbers; what snapshots and metrics carry)."""
        out = self.stats.snapshot()
        out["l1"] = self.l1.status() if self.l1 is not None else None
        out["readahead"] = {"enabled": self.readahead.enabled,
                            "buffered_bytes": self.readahead.buffered_bytes(),
                            **self.readahead.counters}
        out["peers"] = self.peers.status() if self.peers else {}
        out["peer_url"] = self.self_url if self.configured else None
        return out

    def status(self) -> dict[str, Any]:
        """Sections for `ClusterStatus.extra`: the read tiers of this process (if
        configured) and of every running mount/gateway of the cluster."""
        procs: dict[str, Any] = {}
        if self.configured:
            procs[f"pid {os.getpid()} (this process)"] = _display(self.figures())
        for pid, snap in running_snapshots(self.core.path).items():
            if pid != os.getpid():
                procs[f"pid {pid} ({snap.get('command', '?')})"] = _display(snap.get("figures", {}))
        if not procs:
            return {"read cache": "no running mount or gateway"}
        return {"read cache": procs}

    def _start_maintenance(self) -> None:
        run = os.path.join(self.core.path, RUN_DIR)
        try:
            os.makedirs(run, exist_ok=True)
        except OSError as e:
            log.warning("no cache statistics for `r2fs status`: %s: %s", run, e.strerror)
            return
        self._snapshot_path = os.path.join(run, f"{SNAPSHOT_PREFIX}{os.getpid()}.json")
        self._maint = threading.Thread(target=self._maintain, name="r2fs-cache-stats", daemon=True)
        self._maint.start()

    def _maintain(self) -> None:
        """Every few seconds: write the stats snapshot; now and then: save the L1 index."""
        last_index = time.monotonic()
        while True:
            self._write_snapshot()
            if self._maint_stop.wait(SNAPSHOT_EVERY):
                return
            l1 = self.l1
            if l1 is not None and time.monotonic() - last_index >= INDEX_EVERY:
                l1.save_index()
                last_index = time.monotonic()
            self._upkeep()

    def _upkeep(self) -> None:
        """Give idle pools back, and the LMDB map's pages if they are a large part of
        the RSS (an rm -rf of a source tree touched ~90 MiB of the map in 10 s; ~4 ms
        per call, mostly walking the map's empty page tables)."""
        rss, shared = memory.resident()
        if shared > UPKEEP_MAP or rss > UPKEEP_HIGH:
            memory.release_metadata_map()
        self.trim(TRIM_IDLE)

    def trim(self, idle: float) -> int:
        """Give the memory of idle buffer pools back to the system (pools unused for
        `idle` seconds: the shared chunk buffers, L1's, read-ahead's leftovers);
        returns the bytes released. Called every few seconds by the maintenance thread."""
        freed = chunks.trim_idle(idle) + self.readahead.trim(idle)
        l1 = self.l1
        if l1 is not None:
            freed += l1.trim(idle)
        if freed:
            memory.release_free_heap()
        return freed

    def _write_snapshot(self) -> None:
        path = self._snapshot_path
        if path is None:
            return
        snap = {"pid": os.getpid(), "time": time.time(), "command": _command(),
                "figures": self.figures()}
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(snap, f)
            os.replace(tmp, path)
        except OSError as e:
            log.debug("stats snapshot %s: %s", path, e)


def running_snapshots(cluster_path: str) -> dict[int, dict[str, Any]]:
    """Snapshots of live processes (stale files of dead processes are ignored)."""
    run = os.path.join(cluster_path, RUN_DIR)
    out: dict[int, dict[str, Any]] = {}
    try:
        names = os.listdir(run)
    except OSError:
        return out
    for name in names:
        if not (name.startswith(SNAPSHOT_PREFIX) and name.endswith(".json")):
            continue
        try:
            pid = int(name[len(SNAPSHOT_PREFIX):-5])
            with open(os.path.join(run, name), encoding="utf-8") as f:
                snap = json.load(f)
        except (ValueError, OSError):
            continue
        if time.time() - float(snap.get("time", 0)) > SNAPSHOT_STALE or not _alive(pid):
            continue
        out[pid] = snap
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command() -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv else "?"
    argv = ["r2fs" if prog in ("__main__.py", "-m") else prog] + sys.argv[1:]
    text = " ".join(argv)
    return text if len(text) <= 80 else text[:77] + "..."


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _display(fig: dict[str, Any]) -> dict[str, Any]:
    """Figures as short lines for `r2fs status`."""
    out: dict[str, Any] = {}
    for tier, t in fig.get("tiers", {}).items():
        out[tier] = f"{t['hits']} hits, {t['misses']} misses, {_size(t['bytes'])} read"
    l1 = fig.get("l1")
    if l1:
        out["l1 space"] = (f"{_size(l1['used_bytes'])} of {_size(l1['capacity_bytes'])} in "
                           f"{l1['entries']} chunks, {l1['evictions']} evictions, "
                           f"{l1['corrupt']} corrupt dropped ({l1['dir']})")
    ev = fig.get("events", {})
    out["peers"] = (f"{ev.get('peer_errors', 0)} errors, {ev.get('peer_corrupt', 0)} bad chunks, "
                    f"{ev.get('peer_misses', 0)} misses; served {ev.get('peer_requests_served', 0)} "
                    f"requests ({_size(ev.get('peer_bytes_served', 0))}), refused "
                    f"{ev.get('peer_requests_refused', 0)}")
    for url, state in (fig.get("peers") or {}).items():
        out[f"peer {url}"] = state
    if fig.get("peer_url"):
        out["serving peers at"] = fig["peer_url"]
    ra = fig.get("readahead") or {}
    if ra:
        out["read-ahead"] = ("on" if ra.get("enabled") else "off") + (
            f", {ra.get('prefetched', 0)} chunks prefetched, {ra.get('used', 0)} used, "
            f"{ra.get('dropped', 0)} dropped")
    return out


def render_metrics() -> str:
    """Prometheus text exposition of this process's read tiers (for /metrics)."""
    figs = [r.figures() for r in list(_readers)]
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    def tier_sum(field: str) -> list[tuple[str, float]]:
        return [(f'{{tier="{t}"}}', sum(f["tiers"][t][field] for f in figs)) for t in TIERS]

    def ev_sum(name: str) -> float:
        return sum(f["events"].get(name, 0) for f in figs)

    def l1_sum(name: str) -> float:
        return sum((f["l1"] or {}).get(name, 0) for f in figs)

    metric("r2fs_cache_hits_total", "counter", "Chunk reads served by a tier.", tier_sum("hits"))
    metric("r2fs_cache_misses_total", "counter", "Chunk lookups a tier could not serve.",
           tier_sum("misses"))
    metric("r2fs_cache_read_bytes_total", "counter", "Plaintext bytes served by a tier.",
           tier_sum("bytes"))
    metric("r2fs_cache_l1_evictions_total", "counter", "Chunks evicted from L1.",
           [("", l1_sum("evictions"))])
    metric("r2fs_cache_l1_corrupt_total", "counter",
           "L1 entries that failed authentication and were dropped.", [("", l1_sum("corrupt"))])
    metric("r2fs_cache_l1_used_bytes", "gauge", "Bytes held by L1.", [("", l1_sum("used_bytes"))])
    metric("r2fs_cache_l1_capacity_bytes", "gauge", "L1 size bound.",
           [("", l1_sum("capacity_bytes"))])
    metric("r2fs_cache_peer_errors_total", "counter", "Peer requests that failed, by kind.",
           [('{kind="unreachable"}', ev_sum("peer_errors")),
            ('{kind="bad_chunk"}', ev_sum("peer_corrupt")),
            ('{kind="miss"}', ev_sum("peer_misses"))])
    metric("r2fs_cache_peer_requests_total", "counter", "Requests this process answered for peers.",
           [('{outcome="served"}', ev_sum("peer_requests_served")),
            ('{outcome="refused"}', ev_sum("peer_requests_refused")),
            ('{outcome="missing"}', ev_sum("peer_requests_missing"))])
    metric("r2fs_cache_readahead_chunks_total", "counter", "Chunks fetched ahead of readers.",
           [(f'{{outcome="{k}"}}', sum(f["readahead"].get(k, 0) for f in figs))
            for k in ("prefetched", "used", "dropped", "failed")])
    from .maintenance import render_metrics as durability_metrics
    return "\n".join(lines) + "\n" + durability_metrics([r.core for r in list(_readers)])


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@atexit.register
def _close_all() -> None:
    """Remove snapshot files and save L1 indexes of readers still open at exit."""
    for reader in list(_readers):
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
