"""Metadata snapshots: the LMDB environment, encrypted and RS-coded onto the nodes.

Why: objects of at most `inline_threshold` bytes live only inside their
manifest, and every manifest lives only in `meta/`. Losing that one LMDB file
would lose those objects outright and make every other object unreachable.
So the metadata is protected like data (DESIGN.md): a consistent copy of the
environment is cut into pieces, each piece sealed with AES-256-GCM and coded
RS(k, m) into one shard per node, and a small authenticated descriptor is
written to every node. `restore` rebuilds `meta/` from any k good shards per
piece.

Layout on every node directory (beside `shards/`, which gc never leaves)::

    meta-snapshots/<id>/<piece:06d>.<shard index>   shard files (shards.py format 1)
    meta-snapshots/<id>/descriptor                   on every node, written last

A snapshot exists once one authentic descriptor exists: descriptors are
written only after every shard of every piece is durable, and a snapshot is
deleted descriptor-first, so no reader ever sees an incomplete one as
complete.

Piece seal (format `PIECE_VERSION` = 1)::

    version (1) | nonce (12) | AES-256-GCM ciphertext | tag (16)

key = MasterKey.derive("meta-snapshot"), a purpose of its own (never a chunk
key); AAD = "r2fs-meta-snapshot" | version | snapshot id | u32 piece index, so
a piece only opens as the piece it was written as. The shard header's
"chunk id" is BLAKE2b(snapshot id, piece index), so a shard file copied over
another snapshot's or piece's fails its header check before any decoding.

Descriptor (format `DESCRIPTOR_VERSION` = 1)::

    magic b"R2MSNAP\\0" | u16 version | u32 body length | msgpack body | HMAC-SHA256

HMAC key = MasterKey.derive("meta-snapshot-descriptor"), over everything
before it. The body names the snapshot (id, time, change sequence, LMDB
transaction id), its sizes, piece count, RS layout, placement and a BLAKE2b
digest of the whole LMDB file; a restore checks that digest before it
installs anything. The version is checked before the MAC so that a newer
format is refused by name rather than reported as tampering.

Recovery point: a restore brings back the metadata as of the snapshot's read
transaction. Changes committed after it are lost (their objects vanish or
revert); chunks they wrote become orphans that gc removes. See
docs/architecture.md, "Metadata snapshots".
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import glob
import hashlib
import hmac
import logging
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lmdb
import msgpack
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import config as cfgmod
from .erasure import Erasure
from .errors import (
    ClusterError,
    ClusterNotFound,
    DataUnavailable,
    InvalidClusterConfig,
    UnsupportedFormat,
    WrongMasterKey,
)
from .keys import MasterKey
from .meta.lmdb import SCHEMA_VERSION
from .fileio import fsync_dir, write_all, file_lock
from .nodes import LocalNode, NodeUnavailable, place
from .shards import ShardInvalid, pack_shard_parts, read_shard
from .simulate import build_nodes

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("r2fs.metasnap")

SNAPSHOT_DIR = "meta-snapshots"
DESCRIPTOR = "descriptor"
DESCRIPTOR_MAGIC = b"R2MSNAP\0"
DESCRIPTOR_VERSION = 1
PIECE_VERSION = 1
#: Plaintext bytes per piece: bounds memory (a piece, its seal and its shards).
PIECE_SIZE = 4 * 1024 * 1024
DEFAULT_KEEP = 3
#: Seconds between automatic snapshots: the recovery point of a crash that loses meta/.
DEFAULT_INTERVAL = 300.0
#: cluster.toml table with optional `keep` and `interval` overrides.
CONFIG_TABLE = "meta_snapshots"
LOCK_FILE = os.path.join("run", "meta-snapshot.lock")

_DESC_HEAD = struct.Struct("<8sHI")
_MAC_SIZE = 32
_NONCE = 12
_TAG = 16
_SEAL_OVERHEAD = 1 + _NONCE + _TAG
_AAD_LABEL = b"r2fs-meta-snapshot"
_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
_PIECE_RE = re.compile(r"^(\d{6})\.(\d+)$")

Node = LocalNode  # or a SimulatedNode: the same interface


# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotInfo:
    """What a descriptor says about one complete snapshot."""

    id: str
    created: float
    seq: int             # change sequence number in the snapshot
    txnid: int           # LMDB transaction id the copy was read at (live env's numbering)
    db_size: int         # bytes of the LMDB file
    stored: int          # bytes of shard files written
    pieces: int
    piece_size: int
    k: int
    m: int
    stripe_size: int
    codec: int
    placement: tuple[str, ...]
    digest: bytes        # BLAKE2b-256 of the LMDB file
    cluster_id: str
    schema: int
    copies: tuple[str, ...] = ()  # nodes holding an authentic descriptor (filled by listing)
    #: `state_fingerprint` of the copy (None in descriptors written before it existed; an
    #: optional body key, so older builds read newer descriptors and vice versa)
    fingerprint: bytes | None = None

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "seq": self.seq, "txnid": self.txnid,
                "db_size": self.db_size, "stored": self.stored, "pieces": self.pieces,
                "piece_size": self.piece_size, "k": self.k, "m": self.m,
                "stripe_size": self.stripe_size, "codec": self.codec,
                "placement": list(self.placement), "digest": self.digest,
                "cluster_id": self.cluster_id, "schema": self.schema,
                **({"fp": self.fingerprint} if self.fingerprint is not None else {})}

    @classmethod
    def from_body(cls, b: dict[str, Any]) -> SnapshotInfo:
        return cls(id=str(b["id"]), created=float(b["created"]), seq=int(b["seq"]),
                   txnid=int(b["txnid"]), db_size=int(b["db_size"]), stored=int(b["stored"]),
                   pieces=int(b["pieces"]), piece_size=int(b["piece_size"]), k=int(b["k"]),
                   m=int(b["m"]), stripe_size=int(b["stripe_size"]), codec=int(b["codec"]),
                   placement=tuple(str(p) for p in b["placement"]), digest=bytes(b["digest"]),
                   cluster_id=str(b["cluster_id"]), schema=int(b["schema"]),
                   fingerprint=bytes(b["fp"]) if b.get("fp") is not None else None)


@dataclass
class Listing:
    """Authentic snapshots (newest first) and why others could not be used, per snapshot id."""

    snapshots: list[SnapshotInfo] = field(default_factory=list)
    problems: dict[str, ClusterError] = field(default_factory=dict)
    reports: list[ScanReport] = field(default_factory=list)  # filled by verify

    def find(self, snapshot_id: str) -> SnapshotInfo | None:
        return next((s for s in self.snapshots if s.id == snapshot_id), None)

    def require(self, snapshot_id: str) -> SnapshotInfo:
        """The snapshot, or the error that explains why it cannot be used."""
        info = self.find(snapshot_id)
        if info is not None:
            return info
        why = self.problems.get(snapshot_id)
        if why is not None:
            raise type(why)(f"snapshot {snapshot_id} cannot be used: {why}")
        raise ClusterError(f"no snapshot {snapshot_id} (see `r2fs meta snapshots`)")


@dataclass
class ScanReport:
    """Result of reading a snapshot back: the damage seen (and worked around, if complete)."""

    snapshot: SnapshotInfo
    damaged: list[str] = field(default_factory=list)  # "piece 3 shard 1 on n2: checksum mismatch"
    error: str | None = None  # set by verify when the snapshot cannot be restored at all


@dataclass
class DataCheck:
    """Chunks the restored metadata names whose data is gone (collected after the snapshot)."""

    chunks: int = 0
    lost: int = 0
    objects_affected: int = 0
    examples: list[str] = field(default_factory=list)  # a few "bucket/key" that will not read


@dataclass
class RestoreReport(ScanReport):
    previous: str | None = None     # where the old meta/ was moved, if there was one
    skipped: list[str] = field(default_factory=list)  # newer snapshots that could not be read
    check: DataCheck | None = None  # None when the check was not asked for


# --- where snapshots live: config, key and nodes, without the LMDB ---------------------------


class Site:
    """A cluster's snapshot storage: its config, master key and nodes.

    Needs no metadata, so that snapshots can be listed and restored exactly
    when `meta/` is gone (`Cluster.open` refuses then).
    """

    def __init__(self, root: str, config: cfgmod.ClusterConfig, master: MasterKey,
                 nodes: Mapping[str, Node]) -> None:
        self.root = root
        self.config = config
        self.master = master
        self.nodes = nodes
        self._piece_key = master.derive("meta-snapshot")
        self._mac_key = master.derive("meta-snapshot-descriptor")

    @classmethod
    def of(cls, cluster: Core) -> Site:
        return cls(cluster.path, cluster.config, cluster.master, cluster.nodes)

    @classmethod
    def open(cls, root: str) -> Site:
        """Config + master key + nodes of the cluster at `root` (key checked, meta not needed)."""
        root = os.path.abspath(root)
        if not os.path.exists(os.path.join(root, cfgmod.CONFIG_FILE)):
            raise ClusterNotFound(f"no r2fs cluster at {root} (cluster.toml is missing)")
        config = cfgmod.load(root)
        key_path = os.path.join(root, "master.key")
        master = MasterKey.load(key_path)
        if not master.matches(config.key_check):
            raise WrongMasterKey(f"{key_path} is not the master key of the cluster at {root}; "
                                 "nothing was decrypted")
        return cls(root, config, master, build_nodes(config, root))

    @property
    def meta_dir(self) -> str:
        return os.path.join(self.root, "meta")

    # --- locking -------------------------------------------------------------------------

    @contextmanager
    def lock(self, *, wait: bool = True) -> Iterator[bool]:
        """The cluster-wide snapshot lock (flock on run/meta-snapshot.lock).

        Yields False without waiting when `wait` is False and another process
        or thread holds it. Taken by snapshot and restore, so that two
        processes never cut or prune snapshots at once and a restore never
        reads a snapshot that is being pruned.
        """
        with file_lock(os.path.join(self.root, LOCK_FILE), wait=wait) as locked:
            yield locked

    # --- crypto --------------------------------------------------------------------------

    @staticmethod
    def _aad(snapshot_id: str, index: int) -> bytes:
        return _AAD_LABEL + bytes([PIECE_VERSION]) + snapshot_id.encode() + struct.pack("<I", index)

    def seal_piece(self, snapshot_id: str, index: int, plaintext: bytes | memoryview) -> bytes:
        nonce = os.urandom(_NONCE)
        ct = AESGCM(self._piece_key).encrypt(nonce, bytes(plaintext), self._aad(snapshot_id, index))
        return bytes([PIECE_VERSION]) + nonce + ct

    def open_piece(self, snapshot_id: str, index: int, sealed: bytes | memoryview) -> bytes:
        view = memoryview(sealed)
        if len(view) < _SEAL_OVERHEAD:
            raise DataUnavailable(f"snapshot {snapshot_id}: piece {index} is truncated")
        if view[0] != PIECE_VERSION:
            raise UnsupportedFormat(f"snapshot {snapshot_id}: piece {index} has seal format "
                                    f"{view[0]}; this r2fs reads format {PIECE_VERSION}")
        try:
            return AESGCM(self._piece_key).decrypt(view[1:1 + _NONCE], view[1 + _NONCE:],
                                                   self._aad(snapshot_id, index))
        except InvalidTag:
            raise DataUnavailable(f"snapshot {snapshot_id}: piece {index} failed authentication "
                                  "(tampered shards or wrong master key)") from None

    def pack_descriptor(self, info: SnapshotInfo) -> bytes:
        body = msgpack.packb(info.body(), use_bin_type=True)
        head = _DESC_HEAD.pack(DESCRIPTOR_MAGIC, DESCRIPTOR_VERSION, len(body)) + body
        return head + hmac.new(self._mac_key, head, hashlib.sha256).digest()

    def parse_descriptor(self, blob: bytes, where: str) -> SnapshotInfo:
        """An authentic descriptor, or UnsupportedFormat / WrongMasterKey / ClusterError."""
        if len(blob) < _DESC_HEAD.size or blob[:8] != DESCRIPTOR_MAGIC:
            raise ClusterError(f"{where}: not a snapshot descriptor")
        _, version, length = _DESC_HEAD.unpack_from(blob)
        if version != DESCRIPTOR_VERSION:
            raise UnsupportedFormat(f"{where}: snapshot descriptor format {version} is not "
                                    f"supported by this r2fs (it reads format {DESCRIPTOR_VERSION})")
        end = _DESC_HEAD.size + length
        if len(blob) != end + _MAC_SIZE:
            raise ClusterError(f"{where}: snapshot descriptor is truncated or has trailing bytes")
        mac = hmac.new(self._mac_key, blob[:end], hashlib.sha256).digest()
        if not hmac.compare_digest(mac, blob[end:]):
            raise WrongMasterKey(f"{where}: snapshot descriptor does not authenticate with this "
                                 "master key (wrong key or tampered descriptor)")
        try:
            return SnapshotInfo.from_body(msgpack.unpackb(blob[_DESC_HEAD.size:end], raw=False))
        except (KeyError, TypeError, ValueError, msgpack.UnpackException) as e:
            raise ClusterError(f"{where}: snapshot descriptor body is malformed ({e})") from None

    # --- names -----------------------------------------------------------------------------

    @staticmethod
    def piece_id(snapshot_id: str, index: int) -> bytes:
        """The 32-byte id in a piece's shard headers: binds a shard to snapshot and piece."""
        return hashlib.blake2b(snapshot_id.encode() + struct.pack("<I", index), digest_size=32,
                               person=b"r2fs-msnap").digest()

    @staticmethod
    def shard_name(snapshot_id: str, index: int, shard: int) -> str:
        return f"{SNAPSHOT_DIR}/{snapshot_id}/{index:06d}.{shard}"

    @staticmethod
    def descriptor_name(snapshot_id: str) -> str:
        return f"{SNAPSHOT_DIR}/{snapshot_id}/{DESCRIPTOR}"

    def _ids_on(self, node: Node) -> list[str]:
        """Snapshot directories on one node (complete or not); [] if the node is unreadable.

        Reads the node directory itself: the node interface has no listing of
        arbitrary directories yet (see the report for the proposed seam).
        """
        try:
            with os.scandir(os.path.join(node.path, SNAPSHOT_DIR)) as it:
                return [e.name for e in it if _ID_RE.match(e.name) and e.is_dir()]
        except OSError:
            return []

    # --- listing ---------------------------------------------------------------------------

    def list(self) -> Listing:
        """Every snapshot with at least one authentic descriptor, newest first."""
        found: dict[str, SnapshotInfo] = {}
        copies: dict[str, list[str]] = {}
        problems: dict[str, ClusterError] = {}
        for node in self.nodes.values():
            for sid in self._ids_on(node):
                name = self.descriptor_name(sid)
                try:
                    blob = node.read(name)
                except FileNotFoundError:
                    continue  # incomplete here (or being written): not a copy
                except OSError as e:
                    problems.setdefault(sid, ClusterError(
                        f"descriptor on {node.id}: {e.strerror or e}"))
                    continue
                try:
                    info = self.parse_descriptor(blob, f"snapshot {sid} on {node.id}")
                    if info.id != sid:
                        raise ClusterError(f"snapshot {sid} on {node.id}: descriptor names "
                                           f"snapshot {info.id}")
                except ClusterError as e:
                    problems.setdefault(sid, e)
                    continue
                found.setdefault(sid, info)
                copies.setdefault(sid, []).append(node.id)
        snaps = [dataclasses.replace(s, copies=tuple(copies[s.id])) for s in found.values()]
        snaps.sort(key=lambda s: (s.created, s.id), reverse=True)
        return Listing(snaps, {k: v for k, v in problems.items() if k not in found})

    # --- deleting --------------------------------------------------------------------------

    def delete(self, snapshot_id: str) -> None:
        """Remove a snapshot: its descriptors on every node first, then its shards.

        Descriptor-first, so that a kill half-way leaves debris (removed by the
        next snapshot), never something that lists as complete but is not.
        """
        for node in self.nodes.values():
            try:
                node.delete(self.descriptor_name(snapshot_id))
            except OSError:
                pass
        for node in self.nodes.values():
            directory = os.path.join(node.path, SNAPSHOT_DIR, snapshot_id)
            try:
                with os.scandir(directory) as it:
                    names = [e.name for e in it]
            except OSError:
                continue
            for name in names:
                try:
                    node.delete(f"{SNAPSHOT_DIR}/{snapshot_id}/{name}")
                except (OSError, ValueError):
                    pass
            try:
                os.rmdir(directory)
            except OSError:
                pass

    # --- reading a snapshot back ---------------------------------------------------------------

    def pieces(self, info: SnapshotInfo, report: ScanReport, *,
               read_all: bool = False) -> Iterator[bytes]:
        """The plaintext pieces of a snapshot in order, each authenticated.

        Any k good shards per piece suffice; damage seen is added to
        `report.damaged`. read_all: read every shard (a scrub), not just
        enough to decode. DataUnavailable when a piece cannot be rebuilt.
        """
        if info.pieces < 0 or info.piece_size <= 0 or len(info.placement) != info.k + info.m:
            raise ClusterError(f"snapshot {info.id}: descriptor has an impossible layout")
        try:
            erasure = Erasure(info.k, info.m, info.stripe_size)
        except InvalidClusterConfig as e:
            raise UnsupportedFormat(f"snapshot {info.id}: {e}") from None
        if erasure.codec != info.codec:
            raise UnsupportedFormat(f"snapshot {info.id}: codec {info.codec} is not supported")
        n = info.k + info.m
        for index in range(info.pieces):
            plain_len = (info.piece_size if index < info.pieces - 1
                         else info.db_size - info.piece_size * (info.pieces - 1))
            sealed_len = plain_len + _SEAL_OVERHEAD
            pid = self.piece_id(info.id, index)
            good: dict[int, memoryview] = {}
            problems: list[str] = []
            for shard in range(n):
                if len(good) >= info.k and not read_all:
                    break
                node_id = info.placement[shard]
                where = f"piece {index} shard {shard} on {node_id}"
                node = self.nodes.get(node_id)
                if node is None:
                    problems.append(f"{where}: node is not part of this cluster")
                    continue
                try:
                    blob = node.read(self.shard_name(info.id, index, shard))
                    header, payload = read_shard(blob, expect_chunk_id=pid, expect_index=shard)
                    if (header.k, header.m, header.codec, header.stripe_size) != (
                            info.k, info.m, info.codec, info.stripe_size):
                        raise ShardInvalid("shard layout differs from the descriptor's")
                except FileNotFoundError:
                    problems.append(f"{where}: missing")
                    continue
                except (ShardInvalid, UnsupportedFormat, NodeUnavailable) as e:
                    problems.append(f"{where}: {e}")
                    continue
                except OSError as e:
                    problems.append(f"{where}: {e.strerror or e}")
                    continue
                good[shard] = payload
            report.damaged.extend(problems)
            if len(good) < info.k:
                raise DataUnavailable(
                    f"snapshot {info.id} cannot be reconstructed: piece {index} has {len(good)} "
                    f"good shards of {info.k} needed ({'; '.join(problems)})")
            try:
                sealed = erasure.decode(good, sealed_len)
            except DataUnavailable as e:
                raise DataUnavailable(f"snapshot {info.id} cannot be reconstructed: "
                                      f"piece {index}: {e}") from None
            del good
            yield self.open_piece(info.id, index, sealed)


# --- taking a snapshot ---------------------------------------------------------------------------


def settings(config: cfgmod.ClusterConfig) -> tuple[float, int]:
    """(interval seconds, snapshots kept) from cluster.toml's [meta_snapshots], else defaults."""
    table = config.raw.get(CONFIG_TABLE) or {}
    if not isinstance(table, dict):
        raise InvalidClusterConfig(f"[{CONFIG_TABLE}] in cluster.toml must be a table")
    try:
        interval = float(table.get("interval", DEFAULT_INTERVAL))
        keep = int(table.get("keep", DEFAULT_KEEP))
    except (TypeError, ValueError):
        raise InvalidClusterConfig(f"[{CONFIG_TABLE}] interval and keep must be numbers") from None
    if interval <= 0 or keep < 1:
        raise InvalidClusterConfig(f"[{CONFIG_TABLE}] needs interval > 0 and keep >= 1 "
                                   f"(got interval={interval:g}, keep={keep})")
    return interval, keep


def _new_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(4)


class _Copier:
    """The LMDB copy, streamed through a pipe by a thread of its own.

    `env.copyfd(compact=True, txn=...)` is LMDB's consistent copy (one read
    transaction, never a file copy of a live database); through a pipe the
    consumer sees it piece by piece, so memory stays at one piece whatever
    the database size. The read transaction also gives the change sequence
    and transaction id the copy contains, exactly.
    """

    def __init__(self, cluster: Core) -> None:
        self.cluster = cluster
        self.read_fd, self._write_fd = os.pipe()
        try:
            fcntl.fcntl(self._write_fd, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer wakeups
        except OSError:
            pass
        self.seq = 0
        self.txnid = 0
        self.fingerprint = b""
        self.error: BaseException | None = None
        self._finished = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="r2fs-meta-copy", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        meta = self.cluster.meta
        try:
            with meta.env.begin(write=False, buffers=False) as txn:
                self.seq = meta.get(txn, "info", b"seq") or 0
                self.txnid = txn.id()
                self.fingerprint = state_fingerprint(meta, txn)
                self._ready.set()
                meta.env.copyfd(self._write_fd, compact=True, txn=txn)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self.error = e
        finally:
            self._ready.set()
            os.close(self._write_fd)

    def read_piece(self, size: int) -> bytearray:
        """Up to `size` bytes (fewer only at the end of the copy)."""
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = os.readv(self.read_fd, [view[got:]])
            if n == 0:
                break
            got += n
        del view
        if got < size:
            del buf[got:]
        return buf

    def finish(self) -> None:
        """Stop (if still running) and wait; raise the copy's error, if any. Idempotent."""
        if not self._finished:
            self._finished = True
            os.close(self.read_fd)  # a writer still going gets EPIPE and stops
            self._thread.join()
        if self.error is not None:
            raise ClusterError(f"copying the metadata failed: {self.error}") from None


def snapshots_apply(cluster: Core) -> bool:
    """Do these snapshots apply? They copy the embedded LMDB onto local node directories."""
    return cluster.meta.url_scheme == "lmdb" and all(n.url is None for n in cluster.config.nodes)


def require_lmdb(cluster: Core) -> None:
    """Refuse, saying what to use instead, where the metadata is not in LMDB."""
    remote = [n.id for n in cluster.config.nodes if n.url is not None]
    if cluster.meta.url_scheme == "lmdb" and remote:
        raise ClusterError(f"metadata snapshots are stored on local node directories, and "
                           f"node(s) {', '.join(remote)} of this cluster are S3 buckets; copy "
                           "meta/ with `mdb_copy -c` (LMDB's tool) while it is in use instead")
    if not snapshots_apply(cluster):
        raise ClusterError(
            f"the metadata of this cluster is in {cluster.meta.describe()}, not in meta/: "
            "`r2fs meta snapshot` covers the embedded LMDB engine only. Back PostgreSQL up with "
            "its own tools: `pg_dump -Fc DATABASE` for a logical copy, or pg_basebackup with "
            "WAL archiving for point-in-time recovery (and a standby for failover); take them "
            "with the same care as the node data, since the master key decrypts both")


def take_snapshot(cluster: Core, *, keep: int | None = None, wait: bool = True,
                  piece_size: int = PIECE_SIZE) -> SnapshotInfo | None:
    """Snapshot the metadata onto the nodes; prune to the newest `keep` afterwards.

    Blocking (run it in a worker thread from trio). Holds the cluster-wide
    snapshot lock; with wait=False returns None at once if another snapshot
    is running. Raises NodeUnavailable if fewer than k+m nodes are usable:
    like a chunk, a snapshot is never stored with less redundancy than the
    cluster promises.
    """
    require_lmdb(cluster)
    site = Site.of(cluster)
    _, default_keep = settings(cluster.config)
    keep = default_keep if keep is None else keep
    if keep < 1:
        raise InvalidClusterConfig(f"at least one snapshot must be kept (got keep={keep})")
    if piece_size <= 0:
        raise ValueError("piece size must be positive")
    with site.lock(wait=wait) as locked:
        if not locked:
            return None
        info = _write_snapshot(cluster, site, piece_size)
        _prune(site, keep, current=info.id)
        return info


def _write_snapshot(cluster: Core, site: Site, piece_size: int) -> SnapshotInfo:
    cfg = cluster.config
    erasure = Erasure(cfg.k, cfg.m, cfg.stripe_size)
    n = erasure.n
    now = time.time()
    sid = _new_id(now)
    placeable = set(cfg.placeable_ids)  # not on a node being drained (it is going away)
    usable = [nid for nid, node in site.nodes.items() if node.available() and nid in placeable]
    if len(usable) < n:
        raise NodeUnavailable(f"metadata snapshot needs {n} usable nodes for RS({cfg.k},{cfg.m}), "
                              f"only {len(usable)} of {len(site.nodes)} are available")
    placement = place(site.piece_id(sid, 0), usable, n)
    digest = hashlib.blake2b(digest_size=32)
    size = stored = pieces = 0
    copier = _Copier(cluster)
    try:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="r2fs-msnap-io") as pool:
            while True:
                piece = copier.read_piece(piece_size)
                if not piece:
                    break
                digest.update(piece)
                size += len(piece)
                sealed = site.seal_piece(sid, pieces, piece)
                del piece
                parts = erasure.encode_parts(sealed)
                pid = site.piece_id(sid, pieces)
                files = [pack_shard_parts(pid, i, cfg.k, cfg.m, cfg.stripe_size, parts[i],
                                          erasure.codec) for i in range(n)]
                futures = [pool.submit(site.nodes[placement[i]].write_parts,
                                       site.shard_name(sid, pieces, i), files[i]) for i in range(n)]
                errors = []
                for i, fut in enumerate(futures):
                    try:
                        fut.result()
                    except (OSError, NodeUnavailable) as e:
                        errors.append(f"{placement[i]}: {getattr(e, 'strerror', None) or e}")
                if errors:
                    raise NodeUnavailable(f"metadata snapshot {sid}: could not store shards "
                                          f"({'; '.join(errors)})")
                stored += sum(len(p) for f in files for p in f)
                pieces += 1
                del sealed, parts, files
        copier.finish()
        if size == 0:
            raise ClusterError("copying the metadata produced no data")
        info = SnapshotInfo(id=sid, created=now, seq=copier.seq, txnid=copier.txnid,
                            db_size=size, stored=stored, pieces=pieces, piece_size=piece_size,
                            k=cfg.k, m=cfg.m, stripe_size=cfg.stripe_size, codec=erasure.codec,
                            placement=tuple(placement), digest=digest.digest(),
                            cluster_id=cfg.cluster_id, schema=SCHEMA_VERSION,
                            fingerprint=copier.fingerprint)
        blob = site.pack_descriptor(info)
        failed = []
        for nid, node in site.nodes.items():  # replicated on every node; written last
            try:
                node.write(site.descriptor_name(sid), blob)
            except (OSError, NodeUnavailable) as e:
                failed.append(nid)
                if nid in placement:
                    raise NodeUnavailable(f"metadata snapshot {sid}: could not store its "
                                          f"descriptor on {nid}: {getattr(e, 'strerror', None) or e}"
                                          ) from None
        if failed:
            log.warning("metadata snapshot %s: no descriptor copy on %s", sid, ", ".join(failed))
        return info
    except BaseException:
        _quiet(copier.finish)
        site.delete(sid)
        raise


def _quiet(fn: Any) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - cleanup after another error, which is the one raised
        log.debug("cleanup after a failed snapshot: %s", e)


def _prune(site: Site, keep: int, *, current: str) -> None:
    """Keep the newest `keep` snapshots; remove older ones and debris of killed snapshotters.

    Runs under the snapshot lock, after the new snapshot is complete: a
    snapshot directory without an authentic descriptor cannot be in progress,
    so it is debris. Snapshots whose descriptors are unreadable (unknown
    format, other key) are left alone: nothing is deleted that is not understood.
    """
    listing = site.list()
    for old in listing.snapshots[keep:]:
        if old.id != current:
            site.delete(old.id)
    known = {s.id for s in listing.snapshots} | set(listing.problems) | {current}
    for node in site.nodes.values():
        for sid in site._ids_on(node):
            if sid not in known:
                site.delete(sid)


def list_snapshots(root_or_cluster: str | Core) -> Listing:
    site = (Site.open(root_or_cluster) if isinstance(root_or_cluster, str)
            else Site.of(root_or_cluster))
    return site.list()


def gc_horizon(cluster: Core) -> float | None:
    """When the newest snapshot was taken, or None without snapshots.

    For gc: a chunk whose refcount reached 0 after this time is still named
    by the newest snapshot; keeping it until a newer snapshot exists makes a
    restore from the newest snapshot lose no data (see the report/docs).
    """
    if not snapshots_apply(cluster):
        return None  # no snapshots of ours to keep consistent (the database's backups are its own)
    newest = next(iter(Site.of(cluster).list().snapshots), None)
    return None if newest is None else newest.created


# --- automatic snapshots -----------------------------------------------------------------------


def state_fingerprint(meta: Any, txn: Any) -> bytes:
    """A digest of the metadata a snapshot must keep that the change sequence does not
    count: buckets, multipart uploads, records of other layers (access keys, settings,
    placement epochs after a rebalance) -- but not durability bookkeeping (scrub
    positions, damage notes), which changes all the time and restores nothing."""
    h = hashlib.blake2b(digest_size=16)
    for table in ("buckets", "uploads", "records"):
        h.update(table.encode() + b"\0")
        for k, v in meta.scan(txn, table):
            if table == "records" and k.startswith(b"durability\0"):
                continue
            h.update(len(k).to_bytes(4, "little") + k)
            h.update(msgpack.packb(v, use_bin_type=True))
    return h.digest()


def maybe_snapshot(cluster: Core, *, min_interval: float | None = None,
                   keep: int | None = None) -> SnapshotInfo | None:
    """Take a snapshot if the metadata changed since the newest one and `min_interval`
    seconds have passed since it; None otherwise, or if another process is taking one.

    For long-running processes (mount, gateway), called periodically from a
    worker thread. "Changed": the change sequence differs from the newest
    snapshot's, or `state_fingerprint` does (buckets, uploads, access keys...).
    Never a snapshot of an unchanged sequence and state: the LMDB transaction
    id alone (used before) also moved with every chunk touch, gc pass,
    replication lease and scrub position, so identical snapshots were taken
    seconds apart. A descriptor without a fingerprint falls back to that rule.
    """
    interval, _ = settings(cluster.config)
    interval = interval if min_interval is None else min_interval
    site = Site.of(cluster)
    newest = next(iter(site.list().snapshots), None)
    if newest is not None:
        if time.time() - newest.created < interval:
            return None
        with cluster.meta.read() as txn:
            seq = cluster.meta.get(txn, "info", b"seq") or 0
            fp = state_fingerprint(cluster.meta, txn) if newest.fingerprint is not None else None
        if seq == newest.seq:
            if newest.fingerprint is not None and fp == newest.fingerprint:
                return None
            if newest.fingerprint is None and \
                    cluster.meta.env.info()["last_txnid"] == newest.txnid:
                return None
    return take_snapshot(cluster, keep=keep, wait=False)


async def run_snapshotter(cluster: Core, stop_event: trio.Event, *,
                          interval: float | None = None, keep: int | None = None,
                          poll: float | None = None) -> None:
    """Snapshot the metadata every `interval` seconds while it changes, until `stop_event`.

    Meant to run beside the replicator in every mount and gateway: any of
    them may take a snapshot, the lock makes sure only one does at a time.
    A failure is logged and retried at the next poll, never fatal to the
    process serving files.
    """
    try:
        every, _ = settings(cluster.config)
    except InvalidClusterConfig as e:  # the mount still serves; snapshots use the defaults
        log.error("%s; using interval %gs", e, DEFAULT_INTERVAL)
        every = DEFAULT_INTERVAL
    if not snapshots_apply(cluster):
        log.info("no automatic metadata snapshots: the metadata is in %s (back it up with "
                 "its own tools)", cluster.meta.describe())
        return
    every = every if interval is None else interval
    poll = min(every, 60.0) if poll is None else poll
    while True:
        # Wait first: a short-lived process (a quick mount, a test) costs nothing,
        # and one that lives on snapshots within `poll` of starting.
        with trio.move_on_after(poll):
            await stop_event.wait()
        if stop_event.is_set():
            return
        try:
            info = await trio.to_thread.run_sync(
                lambda: maybe_snapshot(cluster, min_interval=every, keep=keep))
            if info is not None:
                log.info("metadata snapshot %s taken (seq %d, %d bytes)", info.id, info.seq,
                         info.db_size)
        except Exception as e:  # noqa: BLE001 - a mount keeps serving; retried next poll
            log.warning("metadata snapshot failed, will retry: %s", e)


# --- restore ------------------------------------------------------------------------------------


def meta_state(meta_dir: str) -> str:
    """"missing", "unreadable" or "live" (opens and has a schema record).

    The probe runs in a child process: LMDB may crash a process that reads
    a damaged file, and the probe must not disturb this process's own locks.
    """
    if not os.path.exists(os.path.join(meta_dir, "data.mdb")):
        return "missing"
    probe = ("import lmdb,sys\n"
             "e=lmdb.open(sys.argv[1],readonly=True,lock=False,subdir=True,max_dbs=32)\n"
             "t=e.begin(); d=e.open_db(b'info',txn=t,create=False)\n"
             "sys.exit(0 if t.get(b'schema',db=d) is not None else 3)\n")
    try:
        proc = subprocess.run([sys.executable, "-c", probe, meta_dir], check=False,
                              capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return "unreadable"
    return "live" if proc.returncode == 0 else "unreadable"


def _in_use(meta_dir: str) -> bool:
    """Does another process have this LMDB environment open?

    Every process with the environment open holds a shared fcntl lock on
    byte 0 of lock.mdb; a non-blocking exclusive lock fails while one does.
    Only call this in a process that does not have the environment open
    itself (closing any descriptor of lock.mdb would drop its own lock).
    """
    path = os.path.join(meta_dir, "lock.mdb")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume yes, and refuse
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)


def _aside_name(root: str, stem: str) -> str:
    base = os.path.join(root, f"{stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    path, i = base, 1
    while os.path.exists(path):
        path, i = f"{base}.{i}", i + 1
    return path


def _process_has_env(meta_dir: str) -> bool:
    from .meta import lmdb as metamod
    return os.path.realpath(meta_dir) in metamod._ENVS


def restore(root: str, *, snapshot_id: str | None = None, force: bool = False,
            check: bool = True) -> RestoreReport:
    """Rebuild `meta/` from a snapshot (the newest readable one unless `snapshot_id`).

    Refuses while any process has the metadata open, and over a readable
    `meta/` unless `force`. The old `meta/` is moved aside (meta.replaced-TIME),
    never deleted. The new one is written beside it, checked (size, digest,
    opens as LMDB with our schema) and only then renamed into place.
    check: afterwards, look for the data of every chunk the restored metadata
    names (`check_data`), so the user learns what the recovery point cost.
    """
    site = Site.open(root)
    meta_dir = site.meta_dir
    if snapshot_id is not None and not _ID_RE.match(snapshot_id):
        raise ClusterError(f"{snapshot_id!r} is not a snapshot id (see `r2fs meta snapshots`)")
    if _process_has_env(meta_dir) or _in_use(meta_dir):
        raise ClusterError(f"the metadata at {meta_dir} is in use by a running r2fs process "
                           "(a mount or gateway); stop it before restoring")
    state = meta_state(meta_dir)
    if state == "live" and not force:
        raise ClusterError(f"the metadata at {meta_dir} is present and readable; refusing to "
                           "replace it (use --force: it is moved aside, not deleted)")
    with site.lock(wait=True):
        for stale in glob.glob(os.path.join(site.root, ".meta.restoring-*")):
            shutil.rmtree(stale, ignore_errors=True)  # a killed restore's (we hold the lock)
        listing = site.list()
        candidates = (listing.snapshots if snapshot_id is None
                      else [listing.require(snapshot_id)])
        if not candidates:
            if listing.problems:
                _, why = max(listing.problems.items())
                raise type(why)(f"no usable metadata snapshot: {why}")
            raise ClusterError(f"no metadata snapshot found on the nodes of {site.root}; "
                               "nothing to restore from")
        skipped: list[str] = []
        last_error: Exception | None = None
        for info in candidates:
            report = RestoreReport(info, skipped=list(skipped))
            try:
                staged = _rebuild(site, info, report)
            except (DataUnavailable, UnsupportedFormat) as e:
                skipped.append(f"{info.id}: {e}")
                last_error = e
                continue
            report.previous = _install(site, staged)
            if check:
                report.check = check_data(site)
            return report
        assert last_error is not None
        if len(candidates) == 1:
            raise last_error
        raise type(last_error)(f"no snapshot can be reconstructed; newest: {skipped[0]}")


def _rebuild(site: Site, info: SnapshotInfo, report: RestoreReport) -> str:
    """Write the snapshot's LMDB file into a fresh directory beside meta/; its path."""
    if info.cluster_id != site.config.cluster_id:
        raise DataUnavailable(f"snapshot {info.id} belongs to cluster {info.cluster_id}, "
                              f"not {site.config.cluster_id}")
    if info.schema != SCHEMA_VERSION:
        raise UnsupportedFormat(f"snapshot {info.id} holds metadata schema {info.schema}; this "
                                f"r2fs reads schema {SCHEMA_VERSION}")
    staged = os.path.join(site.root, f".meta.restoring-{info.id}-{secrets.token_hex(3)}")
    os.mkdir(staged, 0o755)
    try:
        digest = hashlib.blake2b(digest_size=32)
        size = 0
        fd = os.open(os.path.join(staged, "data.mdb"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            for piece in site.pieces(info, report):
                digest.update(piece)
                size += len(piece)
                write_all(fd, [piece])
            os.fsync(fd)
        finally:
            os.close(fd)
        if size != info.db_size or not hmac.compare_digest(digest.digest(), info.digest):
            raise DataUnavailable(f"snapshot {info.id}: reassembled metadata does not match its "
                                  "descriptor (size or digest)")
        _check_lmdb(staged, info.id)
        fsync_dir(staged)
        return staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _check_lmdb(path: str, sid: str) -> None:
    try:
        env = lmdb.open(path, readonly=True, lock=False, subdir=True, max_dbs=32)
    except lmdb.Error as e:
        raise DataUnavailable(f"snapshot {sid}: restored file is not an LMDB environment ({e})"
                              ) from None
    try:
        with env.begin() as txn:
            db = env.open_db(b"info", txn=txn, create=False)
            raw = txn.get(b"schema", db=db)
        if raw is None or msgpack.unpackb(raw) != SCHEMA_VERSION:
            raise DataUnavailable(f"snapshot {sid}: restored metadata has no schema {SCHEMA_VERSION}")
    except lmdb.Error as e:
        raise DataUnavailable(f"snapshot {sid}: restored metadata is unreadable ({e})") from None
    finally:
        env.close()


def _install(site: Site, staged: str) -> str | None:
    """Move meta/ aside (if any) and the rebuilt one into place; the old one's new path."""
    meta_dir = site.meta_dir
    if _in_use(meta_dir):  # again: a process may have opened it while we rebuilt
        shutil.rmtree(staged, ignore_errors=True)
        raise ClusterError(f"the metadata at {meta_dir} was opened by an r2fs process during "
                           "the restore; stop it and restore again")
    previous = None
    if os.path.lexists(meta_dir):
        previous = _aside_name(site.root, "meta.replaced")
        os.rename(meta_dir, previous)
    os.rename(staged, meta_dir)
    fsync_dir(site.root)
    return previous


def check_data(site: Site) -> DataCheck:
    """Which chunks named by the metadata in meta/ have lost their data, and which objects.

    A restored snapshot may name chunks that gc removed after it was taken
    (their objects were deleted or overwritten later). Costs a stat per shard
    file: run once after a restore, with no process using the cluster.
    """
    from .chunks import ChunkStore
    from .meta import unpack
    from .staging import Staging

    out = DataCheck()
    store = ChunkStore(site.master, site.nodes, site.config.k, site.config.m,
                       site.config.stripe_size)
    staging = Staging(site.root)
    lost: set[bytes] = set()
    env = lmdb.open(site.meta_dir, readonly=True, lock=False, subdir=True, max_dbs=32)
    try:
        with env.begin() as txn:
            chunks_db = env.open_db(b"chunks", txn=txn, create=False)
            for cid, raw in txn.cursor(db=chunks_db):
                rec = unpack(raw)
                if rec["r"] == 0:
                    continue  # nothing reads it; gc forgets the record (and any data left)
                out.chunks += 1
                if rec.get("loc") == "staging":
                    if not os.path.exists(staging.path_of(cid, rec["g"])):
                        lost.add(bytes(cid))
                    continue
                names = store.shard_names(cid, rec["g"])
                present = sum(1 for name, nid in zip(names, rec["p"])
                              if nid in site.nodes and site.nodes[nid].size_of(name) is not None)
                if present < site.config.k:
                    lost.add(bytes(cid))
            if lost:
                objects_db = env.open_db(b"objects", txn=txn, create=False)
                for lkey, raw in txn.cursor(db=objects_db):
                    bucket, _, head = bytes(lkey).partition(b"\0")
                    for rest, manifest in unpack(raw):
                        if any(bytes(c[0]) in lost for c in manifest.get("ch") or ()):
                            out.objects_affected += 1
                            if len(out.examples) < 5:
                                key = (head + bytes(rest)).decode("utf-8", "replace")
                                out.examples.append(f"{bucket.decode()}/{key}")
    finally:
        env.close()
    out.lost = len(lost)
    return out


def verify(root_or_cluster: str | Core, snapshot_id: str | None = None) -> Listing:
    """Read every shard of the snapshot(s) and check each piece and the whole digest.

    A scrub: `damaged` lists what a restore would work around; `error` is set
    on a snapshot that could not be restored at all. Returns the listing
    (whose problems are the snapshots that could not even be read) and the
    reports, one per snapshot checked.
    """
    site = (Site.open(root_or_cluster) if isinstance(root_or_cluster, str)
            else Site.of(root_or_cluster))
    with site.lock(wait=True):
        listing = site.list()
        targets = (listing.snapshots if snapshot_id is None
                   else [listing.require(snapshot_id)])
        if snapshot_id is not None:
            listing.problems = {}
        for info in targets:
            report = ScanReport(info)
            digest = hashlib.blake2b(digest_size=32)
            size = 0
            try:
                for piece in site.pieces(info, report, read_all=True):
                    digest.update(piece)
                    size += len(piece)
                if size != info.db_size or not hmac.compare_digest(digest.digest(), info.digest):
                    raise DataUnavailable("reassembled metadata does not match its descriptor "
                                          "(size or digest)")
            except (DataUnavailable, UnsupportedFormat, ClusterError) as e:
                report.error = str(e)
            listing.reports.append(report)
        return listing
