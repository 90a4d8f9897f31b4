"""Errors with meaning.

Every layer raises these; the FUSE layer maps them to errno in one place
(`r2fs/fuse/errmap.py`), the S3 layer to S3 codes in one place
(`r2fs/s3/errors.py`), and the CLI prints `str(error)` as its one line.
Messages are written for a human: they name the bucket, key or path involved.
"""

from __future__ import annotations


class R2fsError(Exception):
    """Base of every error r2fs raises on purpose."""


# --- cluster -----------------------------------------------------------------

class ClusterError(R2fsError):
    """The cluster directory cannot be used (missing, damaged, wrong key...)."""


class ClusterExists(ClusterError):
    pass


class ClusterNotFound(ClusterError):
    pass


class InvalidClusterConfig(ClusterError):
    """cluster.toml or `init` arguments are not acceptable (k+m > nodes...)."""


class WrongMasterKey(ClusterError):
    """The master key does not belong to this cluster; nothing was decrypted."""


class MetadataUnavailable(ClusterError):
    """The metadata engine cannot be reached (PostgreSQL down or unreachable); nothing was
    changed unless the message says the outcome of a commit is unknown."""


class UnsupportedFormat(ClusterError):
    """An on-disk format version this build does not know (newer, or unknown)."""


# --- buckets -----------------------------------------------------------------

class InvalidBucketName(R2fsError):
    pass


class NoSuchBucket(R2fsError):
    pass


class BucketAlreadyExists(R2fsError):
    """S3 calls this BucketAlreadyOwnedByYou: there is one owner per cluster."""


class BucketNotEmpty(R2fsError):
    pass


# --- objects -----------------------------------------------------------------

class InvalidKey(R2fsError):
    """Key empty, not UTF-8, or containing NUL."""


class KeyTooLong(InvalidKey):
    """Key longer than 1024 bytes in UTF-8."""


class NoSuchKey(R2fsError):
    pass


class NotLinkable(R2fsError):
    """A hard link was asked of something that cannot have two names (a directory)."""


class KeyExists(R2fsError):
    """A no-replace rename or create found its target already there."""


class PreconditionFailed(R2fsError):
    """An only_if condition (If-Match, If-None-Match, dates) was not met."""


class IfMatchOnMissingKey(PreconditionFailed):
    """If-Match named a key that has no current object (S3 answers 404 NoSuchKey)."""


class NotModified(R2fsError):
    """A GET condition says the client's copy is current (S3 304)."""


class InvalidRange(R2fsError):
    """The range does not overlap the object (S3 416)."""


class BadDigest(R2fsError):
    """The content does not match the MD5 or checksum the client sent."""


class EntityTooLarge(R2fsError):
    pass


# --- data --------------------------------------------------------------------

class DataUnavailable(R2fsError):
    """More than m shards of a chunk are unreadable: the object cannot be read.

    Raised instead of ever returning wrong bytes.
    """


class ChunkCorrupt(DataUnavailable):
    """A chunk failed authentication after decoding (tampered or wrong key)."""


class ChunkMissing(R2fsError):
    """A commit referenced a chunk that garbage collection removed meanwhile.

    The commit is refused (nothing dangling becomes visible); the writer may
    store the chunk again and retry.
    """


# --- multipart ---------------------------------------------------------------

class NoSuchUpload(R2fsError):
    pass


class InvalidPart(R2fsError):
    pass


class InvalidPartOrder(R2fsError):
    pass


class EntityTooSmall(R2fsError):
    pass
