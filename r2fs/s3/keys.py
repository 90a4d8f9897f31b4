"""S3 access keys: created by `r2fs keys create`, checked by the gateway.

Stored as cluster records (namespace "s3-keys", one record per key id); the
secret is sealed with a key derived from the cluster's master key, so a copy
of the metadata alone does not give API access. The gateway keeps opened keys
for a few seconds (`KeyCache`) so a busy client does not cost a metadata read
and a decryption per request; a deleted key stops working within that time.
"""

from __future__ import annotations

import base64
import secrets
import string
import time
from dataclasses import dataclass

from ..engine.store import Cluster

NAMESPACE = "s3-keys"
_ID_ALPHABET = string.ascii_uppercase + string.digits
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class AccessKey:
    id: str
    secret: str  # "" when listed (secrets are shown once, at creation)
    bucket: str | None  # scoped to this bucket only
    read_only: bool
    created: float

    def allows(self, bucket: str | None, write: bool) -> bool:
        """May this key perform an operation (on `bucket`, None = account level)?"""
        if write and self.read_only:
            return False
        if self.bucket is not None and bucket != self.bucket:
            return False
        return True


def _context(key_id: str) -> str:
    return f"s3-key/{key_id}"


async def create_key(cluster: Cluster, *, bucket: str | None = None, read_only: bool = False,
                     label: str | None = None) -> AccessKey:
    """A new key pair; `label` names keys made by tools (the demo reuses its own)."""
    key_id = "R2FS" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
    secret = base64.b64encode(secrets.token_bytes(30)).decode().replace("+", "A").replace("/", "B")
    sealed = cluster.seal_secret(secret.encode(), _context(key_id))
    key = AccessKey(key_id, secret, bucket, read_only, time.time())
    await cluster.put_record(NAMESPACE, key_id, {
        "secret": base64.b64encode(sealed).decode(), "bucket": bucket,
        "read_only": read_only, "created": key.created, "label": label})
    return key


async def labelled_key(cluster: Cluster, label: str) -> AccessKey:
    """The key created with `label` (secret opened), made on first use."""
    for key_id, rec in await cluster.list_records(NAMESPACE):
        if rec.get("label") == label:
            return _from_record(cluster, key_id, rec)
    return await create_key(cluster, label=label)


def _from_record(cluster: Cluster | None, key_id: str, rec: dict) -> AccessKey:
    secret = ""
    if cluster is not None:
        secret = cluster.open_secret(base64.b64decode(rec["secret"]), _context(key_id)).decode()
    return AccessKey(key_id, secret, rec.get("bucket"), bool(rec.get("read_only")),
                     float(rec.get("created", 0)))


async def get_key(cluster: Cluster, key_id: str) -> AccessKey | None:
    rec = await cluster.get_record(NAMESPACE, key_id)
    return None if rec is None else _from_record(cluster, key_id, rec)


async def list_keys(cluster: Cluster) -> list[AccessKey]:
    return [_from_record(None, k, rec) for k, rec in await cluster.list_records(NAMESPACE)]


async def delete_key(cluster: Cluster, key_id: str) -> bool:
    return await cluster.delete_record(NAMESPACE, key_id)


class KeyCache:
    """Opened keys for CACHE_SECONDS (misses are cached too, against key-guessing load)."""

    def __init__(self, cluster: Cluster, ttl: float = CACHE_SECONDS) -> None:
        self._cluster = cluster
        self._ttl = ttl
        self._entries: dict[str, tuple[float, AccessKey | None]] = {}

    async def get(self, key_id: str) -> AccessKey | None:
        now = time.monotonic()
        hit = self._entries.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await get_key(self._cluster, key_id)
        if len(self._entries) > 10000:
            self._entries.clear()
        self._entries[key_id] = (now + self._ttl, key)
        return key
