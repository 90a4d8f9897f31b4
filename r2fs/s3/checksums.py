"""The S3 flexible checksums (`x-amz-checksum-*`) as incremental hashers.

S3 clients send one of crc32, crc32c, crc64nvme, sha1 or sha256, base64 of
the big-endian digest, either as a header or as an aws-chunked trailer. The
gateway computes the same checksum while the body streams through and refuses
the upload (BadDigest) if they differ, so a corrupted upload is never stored.
crc32c / crc64nvme come from `awscrt` (what botocore itself uses for them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from typing import Protocol

from .errors import S3Error

try:  # awscrt ships C implementations; botocore uses the same package.
    from awscrt import checksums as _crt
except ImportError:  # pragma: no cover - exercised only without awscrt
    _crt = None


def _reflected_table(poly: int, width: int) -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc & ((1 << width) - 1))
    return table


def _table_crc(poly: int, width: int):
    """A pure-Python CRC (slow: ~10 MB/s), used only when awscrt is missing."""
    table = _reflected_table(poly, width)
    mask = (1 << width) - 1

    def crc(data: bytes, previous: int = 0) -> int:
        value = previous ^ mask
        for b in data:
            value = table[(value ^ b) & 0xFF] ^ (value >> 8)
        return value ^ mask
    return crc


_py_crc32c = _table_crc(0x82F63B78, 32)
_py_crc64nvme = _table_crc(0x9A6C9329AC4BC9B5, 64)

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...
    def b64digest(self) -> str: ...


class _Crc:
    """A running CRC whose state is the integer value so far."""

    def __init__(self, fn, width: int) -> None:
        self._fn = fn
        self._width = width
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._fn(data, self._value)

    def b64digest(self) -> str:
        return base64.b64encode(self._value.to_bytes(self._width, "big")).decode()


class _Hashlib:
    def __init__(self, name: str) -> None:
        self._h = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def b64digest(self) -> str:
        return base64.b64encode(self._h.digest()).decode()


def new_hasher(algorithm: str) -> Hasher:
    """A fresh hasher for a lowercase algorithm name from ALGORITHMS."""
    if algorithm == "crc32":
        return _Crc(zlib.crc32, 4)
    if algorithm == "crc32c":
        return _Crc(_crt.crc32c if _crt else _py_crc32c, 4)
    if algorithm == "crc64nvme":
        return _Crc(_crt.crc64nvme if _crt else _py_crc64nvme, 8)
    if algorithm in ("sha1", "sha256"):
        return _Hashlib(algorithm)
    raise S3Error("InvalidArgument", f"unknown checksum algorithm {algorithm!r}")


SIZES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}


def normalize_algorithm(name: str) -> str:
    """A lowercase algorithm name; AWS's InvalidRequest for an unknown one."""
    algo = name.strip().lower()
    if algo not in ALGORITHMS:
        raise S3Error("InvalidRequest", "The algorithm type you specified in x-amz-checksum- header is invalid.")
    return algo


def decode(algorithm: str, value: str) -> bytes | None:
    """The raw digest of a base64 checksum value, or None if it is not one."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == SIZES[algorithm] else None


def check_b64(algorithm: str, value: str) -> str:
    """Validate the shape of a client-sent checksum value (AWS: InvalidRequest)."""
    if decode(algorithm, value) is None:
        raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.")
    return value.strip()


def composite(algorithm: str, part_values: list[str]) -> str:
    """S3's checksum of a multipart object: the checksum of the parts' raw
    checksums concatenated, then `-N` (N parts)."""
    h = new_hasher(algorithm)
    for value in part_values:
        raw = decode(algorithm, value)
        if raw is None:
            raise S3Error("InvalidPart", f"a part's {algorithm} checksum is malformed")
        h.update(raw)
    return f"{h.b64digest()}-{len(part_values)}"


class MultiHasher:
    """MD5 (for the ETag check / Content-MD5) plus any requested flexible checksums."""

    def __init__(self, algorithms: list[str]) -> None:
        self.hashers = {a: new_hasher(a) for a in algorithms}

    def update(self, data: bytes) -> None:
        for h in self.hashers.values():
            h.update(data)

    def digests(self) -> dict[str, str]:
        return {a: h.b64digest() for a, h in self.hashers.items()}
