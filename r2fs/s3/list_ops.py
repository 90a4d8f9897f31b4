"""Listing: ListObjects (v1), ListObjectsV2, ListObjectVersions.

All three page through `Bucket.list`. V2 hands the store's cursor to the
client as an opaque continuation token; v1 and versions continue after a
marker key. `encoding-type=url` percent-encodes keys and prefixes the way
botocore decodes them.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from ..engine.errors import InvalidRange
from ..engine.types import ObjectInfo, ObjectList
from .bucket_ops import xml_response
from .context import OWNER_ID, Ctx, etag_header
from .errors import S3Error
from .http import Response
from .xmlio import Node, document, iso8601

MAX_KEYS = 1000
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


def _max_keys(ctx: Ctx, name: str = "max-keys") -> int:
    value = ctx.req.query.get(name, str(MAX_KEYS))
    if not value.isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer")
    return min(int(value), MAX_KEYS)


def _encoder(ctx: Ctx):
    kind = ctx.req.query.get("encoding-type")
    if kind is None:
        return lambda s: s
    if kind != "url":
        raise S3Error("InvalidArgument", "encoding-type must be url")
    return lambda s: quote(s, safe="/") if s else s


def _after_marker(prefix: str, delimiter: str | None, marker: str) -> str:
    """Where listing resumes after `marker`. A marker that is itself a rolled-up
    common prefix (ends with the delimiter) skips everything under it."""
    if delimiter and marker.startswith(prefix) and marker.endswith(delimiter) and len(marker) > len(prefix):
        return marker + "\U0010ffff"
    return marker


async def _page(ctx: Ctx, *, prefix: str, delimiter: str | None, cursor: str | None,
                start_after: str | None, limit: int) -> ObjectList:
    if limit == 0:
        return ObjectList([], [], False, None)
    try:
        return await ctx.bucket.list(prefix=prefix, delimiter=delimiter or None, cursor=cursor,
                                     start_after=start_after or None, limit=limit)
    except InvalidRange:  # the store's word for a cursor it cannot decode
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None


def _contents(obj: ObjectInfo, enc, owner: bool) -> Node:
    children: list[Node] = [("Key", enc(obj.key)), ("LastModified", iso8601(obj.uploaded)),
                            ("ETag", etag_header(obj.etag)), ("Size", obj.size),
                            ("StorageClass", "STANDARD")]
    if owner:
        children.append(("Owner", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]))
    return ("Contents", children)


def _common(page: ObjectList, enc) -> list[Node]:
    return [("CommonPrefixes", [("Prefix", enc(p))]) for p in page.delimited_prefixes]


async def list_objects_v2(ctx: Ctx) -> Response:
    q = ctx.req.query
    enc = _encoder(ctx)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter") or None
    limit = _max_keys(ctx)
    token = q.get("continuation-token")
    cursor = None
    if token:  # an empty continuation-token is no token (echoed back empty, as S3)
        if not _TOKEN.match(token):
            raise S3Error("InvalidArgument", "The continuation token provided is incorrect")
        cursor = token  # the store's own opaque cursor
    start_after = q.get("start-after") or None
    page = await _page(ctx, prefix=prefix, delimiter=delimiter, cursor=cursor,
                       start_after=None if cursor else start_after, limit=limit)
    owner = q.get("fetch-owner", "").lower() == "true"
    children: list[Node] = [("Name", ctx.bucket_name), ("Prefix", enc(prefix)),
                            ("Delimiter", enc(delimiter)) if delimiter else None,
                            ("MaxKeys", limit), ("KeyCount", len(page.objects) + len(page.delimited_prefixes)),
                            ("IsTruncated", page.truncated),
                            ("ContinuationToken", token) if token is not None else None,
                            ("StartAfter", enc(start_after)) if start_after else None]
    if page.truncated and page.cursor:
        children.append(("NextContinuationToken", page.cursor))
    if "encoding-type" in q:
        children.append(("EncodingType", "url"))
    children += [_contents(o, enc, owner) for o in page.objects]
    children += _common(page, enc)
    return xml_response(document("ListBucketResult", children))


async def list_objects_v1(ctx: Ctx) -> Response:
    q = ctx.req.query
    enc = _encoder(ctx)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter") or None
    limit = _max_keys(ctx)
    marker = q.get("marker", "")
    page = await _page(ctx, prefix=prefix, delimiter=delimiter, cursor=None,
                       start_after=_after_marker(prefix, delimiter, marker) if marker else None, limit=limit)
    children: list[Node] = [("Name", ctx.bucket_name), ("Prefix", enc(prefix)), ("Marker", enc(marker)),
                            ("MaxKeys", limit), ("Delimiter", enc(delimiter)) if delimiter else None,
                            ("IsTruncated", page.truncated)]
    if page.truncated:
        last = max([o.key for o in page.objects[-1:]] + page.delimited_prefixes[-1:])
        children.append(("NextMarker", enc(last)))
    if "encoding-type" in q:
        children.append(("EncodingType", "url"))
    children += [_contents(o, enc, True) for o in page.objects]
    children += _common(page, enc)
    return xml_response(document("ListBucketResult", children))


async def list_object_versions(ctx: Ctx) -> Response:
    """Every object as its single `null` version: buckets are unversioned."""
    q = ctx.req.query
    enc = _encoder(ctx)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter") or None
    limit = _max_keys(ctx)
    marker = q.get("key-marker", "")
    page = await _page(ctx, prefix=prefix, delimiter=delimiter, cursor=None,
                       start_after=_after_marker(prefix, delimiter, marker) if marker else None, limit=limit)
    children: list[Node] = [("Name", ctx.bucket_name), ("Prefix", enc(prefix)), ("KeyMarker", enc(marker)),
                            ("VersionIdMarker", q.get("version-id-marker", "")),
                            ("MaxKeys", limit), ("Delimiter", enc(delimiter)) if delimiter else None,
                            ("IsTruncated", page.truncated)]
    if page.truncated:
        last = max([o.key for o in page.objects[-1:]] + page.delimited_prefixes[-1:])
        children += [("NextKeyMarker", enc(last)), ("NextVersionIdMarker", "null")]
    if "encoding-type" in q:
        children.append(("EncodingType", "url"))
    for o in page.objects:
        children.append(("Version", [("Key", enc(o.key)), ("VersionId", "null"), ("IsLatest", True),
                                     ("LastModified", iso8601(o.uploaded)), ("ETag", etag_header(o.etag)),
                                     ("Size", o.size), ("StorageClass", "STANDARD"),
                                     ("Owner", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)])]))
    children += _common(page, enc)
    return xml_response(document("ListVersionsResult", children))

