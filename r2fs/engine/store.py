"""The store API: the one interface the FUSE layer, the S3 layer and users share.

Modelled on R2's Workers bucket binding, async on trio. Everything below it
(LMDB, shard files, caches) is private to `r2fs.engine`.

CONTRACT SKELETON -- bodies are being filled in; signatures are final.
"""

from __future__ import annotations

from typing import Any, AsyncIterable, AsyncIterator, BinaryIO, Iterable

from .types import (
    BucketInfo,
    Change,
    ChunkRef,
    ClusterStatus,
    Conditional,
    GcReport,
    ObjectInfo,
    ObjectList,
    PartInfo,
    Range,
    UploadInfo,
)

PutValue = bytes | bytearray | memoryview | AsyncIterable[bytes] | BinaryIO | None


class ObjectBody:
    """A GET result: the object's metadata plus a streamed body.

    `info` is the manifest snapshot the body is read from (a concurrent
    overwrite does not change what this body returns). `offset`/`length` give
    the range actually served.
    """

    info: ObjectInfo
    offset: int
    length: int

    def __aiter__(self) -> AsyncIterator[bytes]:  # yields pieces of at most one chunk
        raise NotImplementedError

    async def read(self) -> bytes:
        """The whole (ranged) body in memory; for small objects and tests."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class Bucket:
    """A handle on one bucket; cheap to make. Operations raise NoSuchBucket."""

    name: str

    async def head(self, key: str) -> ObjectInfo:
        """Raises NoSuchKey."""
        raise NotImplementedError

    async def get(self, key: str, *, range: Range | None = None,
                  only_if: Conditional | None = None) -> ObjectBody:
        """Raises NoSuchKey, InvalidRange, PreconditionFailed, NotModified."""
        raise NotImplementedError

    async def read_range(self, info: ObjectInfo, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the given manifest snapshot (clipped to its size).

        Touches only the chunks in the range. Used by FUSE reads of an open file.
        """
        raise NotImplementedError

    async def put(self, key: str, value: PutValue, *, http_metadata: dict[str, str] | None = None,
                  custom_metadata: dict[str, str] | None = None,
                  only_if: Conditional | None = None,
                  content_md5: bytes | None = None,
                  checksums: dict[str, str] | None = None) -> ObjectInfo:
        """Store a whole object; atomic: readers see the old or the new version.

        `value` may be bytes, an async iterable of bytes (e.g. a streamed HTTP
        body -- if it raises, nothing is committed), a binary file object, or None.
        `content_md5` (raw 16-byte digest) is verified -> BadDigest.
        `checksums` are stored as given (the S3 layer verifies them).
        `only_if` is checked against the current version in the commit
        transaction -> PreconditionFailed (etag_does_not_match="*" = create only).
        """
        raise NotImplementedError

    async def put_chunks(self, key: str, chunks: list[ChunkRef], *, etag: str | None = None,
                         http_metadata: dict[str, str] | None = None,
                         custom_metadata: dict[str, str] | None = None,
                         only_if: Conditional | None = None) -> ObjectInfo:
        """Commit a manifest made of chunks already stored with `Cluster.write_chunk`.

        For writers that re-encode only changed chunks (the FUSE layer). The
        size is the sum of the chunk sizes. `etag=None` derives a stable
        "<hex>-N" ETag from the chunk ids. Raises ChunkMissing if a chunk was
        garbage-collected meanwhile.
        """
        raise NotImplementedError

    async def update_metadata(self, key: str, *, http_metadata: dict[str, str] | None = None,
                              custom_metadata: dict[str, str] | None = None,
                              only_if: Conditional | None = None) -> ObjectInfo:
        """Replace the given metadata dicts (None = keep), no data moved. New version."""
        raise NotImplementedError

    async def delete(self, keys: str | Iterable[str]) -> list[str]:
        """Delete one or many keys in one transaction; missing keys are ignored.

        Returns the keys that existed.
        """
        raise NotImplementedError

    async def list(self, *, prefix: str = "", delimiter: str | None = None,
                   cursor: str | None = None, start_after: str | None = None,
                   limit: int = 1000) -> ObjectList:
        """Keys in UTF-8 byte order, like S3. `cursor` continues a truncated listing."""
        raise NotImplementedError

    async def copy(self, src_key: str, dst_key: str, *, dst_bucket: str | None = None,
                   http_metadata: dict[str, str] | None = None,
                   custom_metadata: dict[str, str] | None = None,
                   only_if: Conditional | None = None) -> ObjectInfo:
        """Copy without moving data (chunk refcounts only).

        Metadata None = copied from the source (S3 COPY directive); given =
        replaced (REPLACE). `only_if` applies to the source. Copying a key onto
        itself with new metadata is allowed.
        """
        raise NotImplementedError

    async def rename(self, src_key: str, dst_key: str, *, replace: bool = True) -> ObjectInfo:
        """Atomic metadata-only rename. NoSuchKey; KeyExists when replace=False."""
        raise NotImplementedError

    async def rename_prefix(self, src_prefix: str, dst_prefix: str, *,
                            replace_keys: Iterable[str] = ()) -> int:
        """Move every key under src_prefix to dst_prefix in one transaction.

        Refuses with KeyExists if any destination key exists, except those in
        `replace_keys`, which are deleted in the same transaction (POSIX
        rename of a directory over an empty one). Returns the number moved.
        """
        raise NotImplementedError

    # --- multipart -------------------------------------------------------------

    async def create_multipart_upload(self, key: str, *, http_metadata: dict[str, str] | None = None,
                                      custom_metadata: dict[str, str] | None = None) -> str:
        raise NotImplementedError

    async def upload_part(self, key: str, upload_id: str, part_number: int, value: PutValue, *,
                          content_md5: bytes | None = None) -> PartInfo:
        raise NotImplementedError

    async def upload_part_copy(self, key: str, upload_id: str, part_number: int,
                               src_bucket: str, src_key: str, *, range: Range | None = None,
                               only_if: Conditional | None = None) -> PartInfo:
        raise NotImplementedError

    async def complete_multipart_upload(self, key: str, upload_id: str,
                                        parts: list[tuple[int, str]], *,
                                        only_if: Conditional | None = None) -> ObjectInfo:
        """parts: (part_number, etag) ascending. InvalidPart, InvalidPartOrder,
        EntityTooSmall (every part but the last >= 5 MiB). ETag "<md5 of part md5s>-N"."""
        raise NotImplementedError

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        raise NotImplementedError

    async def list_parts(self, key: str, upload_id: str, *, part_number_marker: int = 0,
                         max_parts: int = 1000) -> tuple[list[PartInfo], bool]:
        """(parts, truncated)."""
        raise NotImplementedError

    async def list_multipart_uploads(self, *, prefix: str = "", key_marker: str = "",
                                     upload_id_marker: str = "",
                                     limit: int = 1000) -> tuple[list[UploadInfo], bool]:
        raise NotImplementedError


class Cluster:
    """An open cluster: LMDB metadata + node directories + master key."""

    path: str

    @classmethod
    def init(cls, path: str, *, nodes: int = 6, k: int = 4, m: int = 2,
             chunk_size: int = 4 * 1024 * 1024, regions: dict[str, int] | None = None) -> "Cluster":
        """Create a new cluster (ClusterExists, InvalidClusterConfig) and open it."""
        raise NotImplementedError

    @classmethod
    def open(cls, path: str, *, create: bool = False) -> "Cluster":
        """Open (ClusterNotFound, WrongMasterKey, UnsupportedFormat); create=True
        makes the embedded default cluster if nothing is there."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def bucket(self, name: str) -> Bucket:
        raise NotImplementedError

    async def create_bucket(self, name: str, *, location: str | None = None) -> BucketInfo:
        """InvalidBucketName, BucketAlreadyExists."""
        raise NotImplementedError

    async def delete_bucket(self, name: str) -> None:
        """NoSuchBucket, BucketNotEmpty (objects or multipart uploads in progress)."""
        raise NotImplementedError

    async def head_bucket(self, name: str) -> BucketInfo:
        raise NotImplementedError

    async def list_buckets(self) -> list[BucketInfo]:
        raise NotImplementedError

    async def update_bucket_settings(self, name: str, **settings: Any) -> BucketInfo:
        """Set (value) or remove (None) entries of BucketInfo.settings: public, cors..."""
        raise NotImplementedError

    # --- chunks (for writers that manage their own chunking: FUSE) ---------------

    async def write_chunk(self, data: bytes) -> ChunkRef:
        """Store one chunk (dedup: an existing chunk is only touched)."""
        raise NotImplementedError

    async def read_chunk(self, ref: ChunkRef, *, context: str = "") -> bytes:
        """Plaintext of a chunk; DataUnavailable naming `context` (bucket/key) on failure."""
        raise NotImplementedError

    # --- records for other subsystems (access keys, meters) ----------------------

    async def put_record(self, namespace: str, name: str, value: dict[str, Any]) -> None:
        raise NotImplementedError

    async def get_record(self, namespace: str, name: str) -> dict[str, Any] | None:
        raise NotImplementedError

    async def delete_record(self, namespace: str, name: str) -> bool:
        raise NotImplementedError

    async def list_records(self, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        raise NotImplementedError

    def seal_secret(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt a small secret with a key derived from the master key."""
        raise NotImplementedError

    def open_secret(self, sealed: bytes, context: str) -> bytes:
        raise NotImplementedError

    async def add_counters(self, bucket: str, deltas: dict[str, int]) -> None:
        """Add to per-bucket operation counters (class_a, class_b, ...)."""
        raise NotImplementedError

    # --- change feed, status, gc ---------------------------------------------------

    def change_seq(self) -> int:
        """The sequence number of the latest committed change (cheap)."""
        raise NotImplementedError

    def changes_since(self, seq: int, limit: int = 10000) -> list[Change]:
        """Changes after `seq`, oldest first. If `seq` is older than the kept
        history, returns one Change with key "" meaning: everything may have changed."""
        raise NotImplementedError

    async def status(self) -> ClusterStatus:
        raise NotImplementedError

    async def gc(self, *, grace: float = 60.0) -> GcReport:
        """Remove shards of chunks unreferenced for at least `grace` seconds and
        orphaned shard files older than `grace`."""
        raise NotImplementedError
