"""What a bucket name and an object key may be (S3/R2 rules)."""

from __future__ import annotations

import re

from .errors import InvalidBucketName, InvalidKey, KeyTooLong

MAX_KEY_BYTES = 1024
#: Keys a mount may create: PATH_MAX (4,096 bytes) paths; S3 clients can list them
#: but not name them in a request (S3's own limit is MAX_KEY_BYTES).
MAX_MOUNT_KEY_BYTES = 4096
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
#: S3's further rules: no empty or hyphen-edged DNS labels, no reserved prefixes/suffixes.
_BAD_PARTS = ("..", ".-", "-.")
_RESERVED_PREFIXES = ("xn--", "sthree-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3")


def check_bucket_name(name: str) -> str:
    """S3's bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens,
    starting and ending with a letter or digit, no adjacent dots (nor a dot next
    to a hyphen), not shaped like an IPv4 address, no reserved prefix/suffix."""
    if (not isinstance(name, str) or not _BUCKET_RE.match(name) or _IP_RE.match(name)
            or any(p in name for p in _BAD_PARTS) or name.startswith(_RESERVED_PREFIXES)
            or name.endswith(_RESERVED_SUFFIXES)):
        raise InvalidBucketName(
            f"invalid bucket name {name!r}: use 3-63 lowercase letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit, without adjacent dots, not like an IP address")
    return name


def check_key(key: str, limit: int = MAX_KEY_BYTES) -> bytes:
    """The key's UTF-8 bytes; InvalidKey / KeyTooLong (longer than `limit`) otherwise."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(f"object key {key!r} is not valid UTF-8") from None
    if len(raw) > limit:
        raise KeyTooLong(f"object key is {len(raw)} bytes; the limit is {limit}")
    return raw
