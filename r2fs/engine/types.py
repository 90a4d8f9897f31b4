"""Plain values that cross the store API: what callers get back and pass in.

They are frozen dataclasses so that a manifest handed to the FUSE layer or the
S3 layer can be kept as a snapshot (an open file keeps reading the version it
opened) without anyone mutating it underneath.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

#: HTTP metadata keys the store keeps (lowercase header names).
HTTP_METADATA_KEYS = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
)


#: The id of a hole extent: `size` zero bytes, no chunk behind them.
HOLE = b""


@dataclass(frozen=True)
class ChunkRef:
    """One extent of an object: bytes [offset, offset+size) of an immutable,
    content-addressed chunk -- or, with id HOLE, `size` zero bytes (a hole of a
    sparse file, stored as nothing). Plain objects use whole chunks (offset 0);
    slices and holes come from in-place updates (see `r2fs/engine/extents.py`).
    """

    id: bytes  # 32-byte keyed BLAKE2b of the chunk's plaintext, or HOLE
    size: int  # bytes of this extent
    offset: int = 0  # where the extent starts inside the chunk

    @property
    def hex(self) -> str:
        return self.id.hex()

    @property
    def hole(self) -> bool:
        return not self.id


@dataclass(frozen=True)
class ObjectInfo:
    """An object's manifest as callers see it (R2's `R2Object`)."""

    bucket: str
    key: str
    size: int
    etag: str  # MD5 hex, or "<hex>-N" for multipart / chunk-assembled objects; no quotes
    uploaded: float  # seconds since the epoch (time of the write that made this version)
    version: str  # unique per write; changes on every put/copy/metadata update
    http_metadata: dict[str, str] = field(default_factory=dict)
    custom_metadata: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)  # e.g. {"crc32": base64}
    parts: tuple[int, ...] | None = None  # part sizes of a multipart object
    chunks: tuple[ChunkRef, ...] = ()
    #: sealed (encrypted) content kept in the manifest itself (small objects)
    inline_data: bytes | None = field(default=None, repr=False, compare=False)
    #: persistent inode number (kept across rename and overwrite; 0: none yet)
    ino: int = 0
    #: names of this content (hard links); 1 for an object with one name
    nlink: int = 1

    @property
    def inline(self) -> bool:
        return self.inline_data is not None

    def chunk_spans(self) -> list[tuple[int, ChunkRef]]:
        """(offset, chunk) for every chunk, in order."""
        spans, off = [], 0
        for ref in self.chunks:
            spans.append((off, ref))
            off += ref.size
        return spans


@dataclass(frozen=True)
class Range:
    """A byte range: `offset` (+ optional `length`), or the last `suffix` bytes."""

    offset: int | None = None
    length: int | None = None
    suffix: int | None = None


@dataclass(frozen=True)
class DirTouch:
    """Custom-metadata entries to set on a directory marker in the same commit as a
    change inside that directory (the mount's parent mtime/ctime, POSIX).

    `create`: the marker's custom metadata if it does not exist (an implicit
    directory gets a marker then); None: a missing marker is left alone.
    """

    key: str  # the marker's key, ending in "/"
    entries: dict[str, str]
    create: dict[str, str] | None = None
    #: apply only if entries[newer] is a larger number than the marker's value of
    #: that entry (a late publication must not undo a later explicit utimes)
    newer: str | None = None


@dataclass(frozen=True)
class Conditional:
    """R2's `onlyIf`: S3's If-Match / If-None-Match / If-(Un)Modified-Since.

    `etag_matches` / `etag_does_not_match` take an ETag without quotes, or "*".
    Times are seconds since the epoch. S3 precedence rules apply (see
    `r2fs/engine/conditions.py`).
    """

    etag_matches: str | None = None
    etag_does_not_match: str | None = None
    uploaded_before: float | None = None  # If-Unmodified-Since
    uploaded_after: float | None = None  # If-Modified-Since


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created: float
    location: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # public, cors, ... (owned by layers above)


@dataclass
class ObjectList:
    objects: list[ObjectInfo]
    delimited_prefixes: list[str]
    truncated: bool
    cursor: str | None  # pass back as `cursor=` to continue; None when not truncated


@dataclass(frozen=True)
class PartInfo:
    part_number: int
    etag: str
    size: int
    uploaded: float
    chunks: tuple[ChunkRef, ...] = ()
    checksums: dict[str, str] = field(default_factory=dict)  # e.g. {"crc32": base64} as uploaded


@dataclass(frozen=True)
class UploadInfo:
    key: str
    upload_id: str
    initiated: float
    http_metadata: dict[str, str] = field(default_factory=dict)
    custom_metadata: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None  # the gateway's checksum setting (opaque to the engine)


@dataclass(frozen=True)
class Change:
    """One committed change to a key, in commit order (for cache invalidation)."""

    seq: int
    bucket: str
    key: str


@dataclass
class NodeStatus:
    id: str
    path: str
    region: str
    free_bytes: int
    shard_count: int
    shard_bytes: int
    available: bool
    #: the whole node directory: storage used (what `du -s -B1` reports) and, per kind
    #: (object_data, metadata_snapshots, temp, other, directories), bytes/disk_bytes/files
    disk_bytes: int = 0
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    state: str = "active"
    #: shards the chunk records place here: expected, present, missing, damaged
    shards: dict[str, int] = field(default_factory=dict)


@dataclass
class ClusterStatus:
    path: str
    k: int
    m: int
    chunk_size: int
    nodes: list[NodeStatus]
    buckets: int
    objects: int
    chunks: int
    logical_bytes: int  # sum of object sizes
    unique_bytes: int  # sum of distinct chunk plaintext sizes (after dedup)
    stored_bytes: int  # storage used by the node directories, all kinds (sum of their `du`)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # bucket -> name -> n
    extra: dict[str, Any] = field(default_factory=dict)  # sections added by other subsystems
    #: chunks on the nodes / degraded (< k+m good shards) / lost (< k) / still staged
    health: dict[str, Any] = field(default_factory=dict)
    #: this machine's areas of the cluster directory: metadata, staging, cache, run
    local: dict[str, dict[str, int]] = field(default_factory=dict)
    #: last scrub, heal-on-read queue, moves in progress
    durability: dict[str, Any] = field(default_factory=dict)


@dataclass
class GcReport:
    chunks_removed: int = 0
    shards_removed: int = 0
    bytes_freed: int = 0
    orphans_removed: int = 0
    held_for_snapshot: int = 0  # unreferenced since the newest metadata snapshot began


def now() -> float:
    return time.time()
