"""What a handler gets (`Ctx`) and the header conversions several handlers share.

Handlers are plain async functions `handler(ctx) -> Response`; they raise
S3Error / engine errors and never build error responses themselves.
"""

from __future__ import annotations

import base64
import binascii
import email.header
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from ..engine.store import Bucket, Cluster
from ..engine.types import HTTP_METADATA_KEYS, Conditional, ObjectInfo
from .checksums import checksum_type
from .errors import S3Error
from .http import Request, Response
from .keys import AccessKey
from .sigv4 import SigningContext
from .xmlio import http_date

if TYPE_CHECKING:
    from .app import Gateway

META_PREFIX = "x-amz-meta-"
MAX_USER_METADATA = 2048  # bytes of x-amz-meta-* names + values, as S3
OWNER_ID = "r2fs"
MAX_PARTS = 10000


@dataclass
class Ctx:
    gateway: "Gateway"
    req: Request
    bucket_name: str | None
    key: str | None
    signing: SigningContext | None
    identity: AccessKey | None
    request_id: str
    cors_rules: list[dict] | None = None  # the bucket's, when the request has an Origin

    @property
    def cluster(self) -> Cluster:
        return self.gateway.cluster

    @property
    def bucket(self) -> Bucket:
        assert self.bucket_name is not None
        return self.cluster.bucket(self.bucket_name)

    @property
    def resource(self) -> str:
        if self.bucket_name is None:
            return "/"
        return f"/{self.bucket_name}" + (f"/{self.key}" if self.key is not None else "")


def etag_header(etag: str) -> str:
    return f'"{etag}"'


def strip_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def parse_http_time(value: str, header: str) -> float | None:
    """Seconds since the epoch, or None for an unparseable date (S3 ignores those)."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def conditional(req: Request, prefix: str = "") -> Conditional | None:
    """If-Match / If-None-Match / If-(Un)Modified-Since (with `prefix`, the
    x-amz-copy-source-if-* variants) as the store's Conditional."""
    match = req.header(prefix + "if-match")
    none_match = req.header(prefix + "if-none-match")
    mod = req.header(prefix + "if-modified-since")
    unmod = req.header(prefix + "if-unmodified-since")
    if not any((match, none_match, mod, unmod)):
        return None
    first = lambda v: strip_etag(v.split(",")[0]) if v else None  # noqa: E731
    return Conditional(
        etag_matches=first(match),
        etag_does_not_match=first(none_match),
        uploaded_after=parse_http_time(mod, "if-modified-since") if mod else None,
        uploaded_before=parse_http_time(unmod, "if-unmodified-since") if unmod else None,
    )


def http_metadata(req: Request) -> dict[str, str]:
    out = {}
    for name in HTTP_METADATA_KEYS:
        value = req.header(name)
        if value is None:
            continue
        if name == "content-encoding":
            # aws-chunked is transport framing, not a property of the object: drop
            # that token and keep the rest byte for byte ("deflate, gzip" stays so).
            value = ",".join(v for v in value.split(",") if v.strip().lower() != "aws-chunked").strip()
            if not value:
                continue
        out[name] = value
    return out


def metadata_text(value: str) -> str:
    """A header value (latin-1 text of its bytes) as the text the client meant:
    UTF-8 bytes when they are valid UTF-8, RFC 2047 encoded-words decoded,
    otherwise the bytes as latin-1."""
    if value.isascii():
        if value.startswith("=?") and value.endswith("?=") and " " not in value:
            try:
                return str(email.header.make_header(email.header.decode_header(value)))
            except (ValueError, LookupError, UnicodeDecodeError):
                return value
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def metadata_header(value: str) -> str:
    """Stored metadata text as a header value: as is when latin-1 can carry it
    (what clients decode headers with), else RFC 2047 (as S3 does)."""
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode() + "?="


def custom_metadata(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    size = 0
    for name, value in req.headers:
        if name.startswith(META_PREFIX) and len(name) > len(META_PREFIX):
            short = name[len(META_PREFIX):]
            value = metadata_text(value)
            size += len(short) + len(value)
            out[short] = value if short not in out else out[short] + "," + value
    if size > MAX_USER_METADATA:
        raise S3Error("MetadataTooLarge", f"x-amz-meta-* headers total {size} bytes; at most "
                                          f"{MAX_USER_METADATA} are allowed")
    return out


def part_number(req: Request, *, required: bool = False) -> int | None:
    """The `partNumber` query parameter (UploadPart, GetObject by part), 1..10000."""
    value = req.query.get("partNumber")
    if value is None and not required:
        return None
    if value is None or not value.isdigit() or not 1 <= int(value) <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive")
    return int(value)


def content_md5(req: Request) -> bytes | None:
    value = req.header("content-md5")
    if value is None:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise S3Error("InvalidDigest", "Content-MD5 is not the base64 of a 16-byte MD5 digest")
    return raw


def object_headers(resp: Response, info: ObjectInfo, *, with_checksums: bool = False) -> None:
    """The headers GET and HEAD share: ETag, dates, HTTP and custom metadata."""
    resp.set("ETag", etag_header(info.etag))
    resp.set("Last-Modified", http_date(info.uploaded))
    resp.set("Accept-Ranges", "bytes")
    md = info.http_metadata
    resp.set("Content-Type", md.get("content-type", "application/octet-stream"))
    for name in HTTP_METADATA_KEYS[1:]:
        if name in md:
            resp.set(name.title(), md[name])
    for name, value in info.custom_metadata.items():
        resp.set(META_PREFIX + name, metadata_header(value))
    if info.parts:
        resp.set("x-amz-mp-parts-count", str(len(info.parts)))
    if with_checksums:
        for algo, value in info.checksums.items():
            resp.set(f"x-amz-checksum-{algo}", value)
        if info.checksums:
            resp.set("x-amz-checksum-type", checksum_type(info.checksums))
