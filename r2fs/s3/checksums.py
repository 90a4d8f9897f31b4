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


#: reflected polynomial and width of the CRC algorithms
CRC_POLYS = {"crc32": (0xEDB88320, 32), "crc32c": (0x82F63B78, 32), "crc64nvme": (0x9A6C9329AC4BC9B5, 64)}
_py_crc32c = _table_crc(*CRC_POLYS["crc32c"])
_py_crc64nvme = _table_crc(*CRC_POLYS["crc64nvme"])

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


def checksum_type(values: dict[str, str]) -> str:
    """S3's x-amz-checksum-type of an object's stored checksums (composite: `-N`)."""
    return "COMPOSITE" if any("-" in v for v in values.values()) else "FULL_OBJECT"


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


def _multmodp(a: int, b: int, poly: int, width: int) -> int:
    """a * b modulo the CRC polynomial, in the reflected bit order CRCs use."""
    m, p = 1 << (width - 1), 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1


class _CrcCombiner:
    """crc(A + B) from crc(A), crc(B) and len(B), as zlib's crc32_combine: crc(A)
    times x^(8 len(B)) plus crc(B). A multipart object's FULL_OBJECT checksum is
    its parts' CRCs combined so, without reading the data again."""

    def __init__(self, poly: int, width: int) -> None:
        self.poly, self.width = poly, width
        self.x2n = [1 << (width - 2)]  # x^(2^k) for k = 0, 1, ...
        for _ in range(67):
            self.x2n.append(_multmodp(self.x2n[-1], self.x2n[-1], poly, width))
        self._shift: dict[int, int] = {}

    def _x8n(self, n: int) -> int:
        """x^(8n) mod p (cached: parts mostly share one size)."""
        hit = self._shift.get(n)
        if hit is None:
            hit, k, rest = 1 << (self.width - 1), 3, n
            while rest:
                if rest & 1:
                    hit = _multmodp(self.x2n[k], hit, self.poly, self.width)
                rest >>= 1
                k += 1
            self._shift[n] = hit
        return hit

    def combine(self, crc_a: int, crc_b: int, len_b: int) -> int:
        return _multmodp(self._x8n(len_b), crc_a, self.poly, self.width) ^ crc_b


def full_object(algorithm: str, parts: list[tuple[str, int]]) -> str:
    """The CRC of a multipart object's whole content from its parts' (checksum, size)."""
    poly, width = CRC_POLYS[algorithm]
    combiner = _CrcCombiner(poly, width)
    crc = None
    for value, size in parts:
        raw = decode(algorithm, value)
        if raw is None:
            raise S3Error("InvalidPart", f"a part's {algorithm} checksum is malformed")
        part = int.from_bytes(raw, "big")
        crc = part if crc is None else combiner.combine(crc, part, size)
    return base64.b64encode((crc or 0).to_bytes(width // 8, "big")).decode()
