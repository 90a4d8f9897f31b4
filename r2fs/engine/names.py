"""What a bucket name and an object key may be (S3/R2 rules)."""

from __future__ import annotations

import re

from .errors import InvalidBucketName, InvalidKey, KeyTooLong

MAX_KEY_BYTES = 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def check_bucket_name(name: str) -> str:
    if not isinstance(name, str) or not _BUCKET_RE.match(name) or _IP_RE.match(name):
        raise InvalidBucketName(
            f"invalid bucket name {name!r}: use 3-63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit")
    return name


def check_key(key: str) -> bytes:
    """The key's UTF-8 bytes; InvalidKey / KeyTooLong otherwise."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(f"object key {key!r} is not valid UTF-8") from None
    if len(raw) > MAX_KEY_BYTES:
        raise KeyTooLong(f"object key is {len(raw)} bytes; the limit is {MAX_KEY_BYTES}")
    return raw
