"""Object operations: GetObject, HeadObject, PutObject, CopyObject, DeleteObject(s)."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from ..engine import errors as engine_errors
from ..engine.types import Range
from . import acl
from .context import (Ctx, conditional, content_md5, custom_metadata, etag_header, http_metadata,
                      object_headers, part_number)
from .errors import S3Error, to_s3_error
from .http import Response
from .payload import Payload, read_document
from .checksums import checksum_type
from .xmlio import CHECKSUM_TAGS, document, http_date, iso8601, parse_delete

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
MAX_OBJECT_SIZE = 5 * 1024 ** 4  # 5 TiB, as S3
MAX_SINGLE_PUT = 5 * 1024 ** 3  # 5 GiB per PUT / part, as S3


def parse_range(value: str | None) -> Range | None:
    """`bytes=a-b`, `bytes=a-`, `bytes=-n` -> Range. Anything else is refused (InvalidRange):
    S3 silently ignores malformed ranges; we say so instead of sending the whole object."""
    if value is None:
        return None
    m = _RANGE.match(value)
    if not m or (not m.group(1) and not m.group(2)):
        raise S3Error("InvalidRange", f"unsupported or malformed Range {value!r} (one bytes= range only)")
    start, end = m.group(1), m.group(2)
    if not start:
        suffix = int(end)
        if suffix == 0:
            raise S3Error("InvalidRange")
        return Range(suffix=suffix)
    if end:
        if int(end) < int(start):
            raise S3Error("InvalidRange", f"range end before start in {value!r}")
        return Range(offset=int(start), length=int(end) - int(start) + 1)
    return Range(offset=int(start))


async def _part_range(ctx: Ctx, number: int) -> Range | None:
    """The byte range of part `number`: a multipart object's part sizes are in its
    manifest; any other object is one part, the whole of it (None: empty object)."""
    info = await ctx.bucket.head(ctx.key)
    sizes = info.parts or (info.size,)
    if number > len(sizes):
        raise S3Error("InvalidPart", f"The requested partnumber is not satisfiable: the object has "
                                     f"{len(sizes)} part(s)")
    if info.size == 0:
        return None
    return Range(offset=sum(sizes[:number - 1]), length=sizes[number - 1])


async def _not_modified(ctx: Ctx, exc: engine_errors.NotModified) -> S3Error:
    """304 as S3 sends it: no body, but the current ETag and Last-Modified."""
    info = await ctx.bucket.head(ctx.key)
    return S3Error("NotModified", str(exc), headers={"ETag": etag_header(info.etag),
                                                     "Last-Modified": http_date(info.uploaded)})


async def get_object(ctx: Ctx, *, head: bool = False) -> Response:
    try:
        return await _get_object(ctx, head=head)
    except engine_errors.NotModified as exc:
        raise await _not_modified(ctx, exc) from None


async def _get_object(ctx: Ctx, *, head: bool = False) -> Response:
    req = ctx.req
    rng = parse_range(req.header("range"))
    part = part_number(req)
    if part is not None:
        if rng is not None:
            raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
        rng = await _part_range(ctx, part)
    only_if = conditional(req)
    resp = Response()
    if head:
        info = await ctx.bucket.head(ctx.key)
        if only_if is not None or rng is not None:
            # Reuse the store's precedence rules and range maths without reading data.
            body = await ctx.bucket.get(ctx.key, range=rng, only_if=only_if)
            info, offset, length = body.info, body.offset, body.length
            await body.aclose()
        else:
            offset, length = 0, info.size
    else:
        body = await ctx.bucket.get(ctx.key, range=rng, only_if=only_if)
        info, offset, length = body.info, body.offset, body.length
        resp.stream = body.__aiter__()
        resp.on_close = body.aclose
    object_headers(resp, info, with_checksums=(rng is None and
                                               (req.header("x-amz-checksum-mode") or "").upper() == "ENABLED"))
    if rng is not None or part is not None:
        resp.status = 206
        if length:
            resp.set("Content-Range", f"bytes {offset}-{offset + length - 1}/{info.size}")
        else:
            resp.status = 200  # partNumber=1 of an empty object: nothing to range over
    resp.set("Content-Length", str(length))
    if ctx.signing is not None:
        for param, header in RESPONSE_OVERRIDES.items():
            if param in req.query:
                resp.headers = [(k, v) for k, v in resp.headers if k.lower() != header.lower()]
                resp.set(header, req.query[param])
    return resp


async def head_object(ctx: Ctx) -> Response:
    return await get_object(ctx, head=True)


ATTRIBUTES = {"etag", "checksum", "objectparts", "storageclass", "objectsize"}


async def get_object_attributes(ctx: Ctx) -> Response:
    """GetObjectAttributes: ETag, Checksum, ObjectParts (a multipart object's part
    sizes), StorageClass, ObjectSize -- what `x-amz-object-attributes` asks for."""
    req = ctx.req
    wanted = {a.strip().lower() for a in (req.header("x-amz-object-attributes") or "").split(",") if a.strip()}
    if not wanted or not wanted <= ATTRIBUTES:
        raise S3Error("InvalidArgument", "Invalid attribute name specified.")
    try:
        body = await ctx.bucket.get(ctx.key, only_if=conditional(req))
    except engine_errors.NotModified as exc:
        raise await _not_modified(ctx, exc) from None
    await body.aclose()
    info = body.info
    children: list = []
    if "etag" in wanted:
        children.append(("ETag", info.etag))
    if "checksum" in wanted and info.checksums:
        children.append(("Checksum", [(CHECKSUM_TAGS[a], v) for a, v in info.checksums.items()
                                      if a in CHECKSUM_TAGS]
                         + [("ChecksumType", checksum_type(info.checksums))]))
    if "objectparts" in wanted and info.parts:
        marker_text = req.header("x-amz-part-number-marker") or "0"
        max_text = req.header("x-amz-max-parts") or "1000"
        if not marker_text.isdigit() or not max_text.isdigit():
            raise S3Error("InvalidArgument", "x-amz-part-number-marker and x-amz-max-parts must be integers")
        marker, limit = int(marker_text), min(int(max_text), 1000)
        page = list(enumerate(info.parts, 1))[marker:marker + limit]
        truncated = marker + len(page) < len(info.parts)
        children.append(("ObjectParts", [
            ("PartsCount", len(info.parts)), ("PartNumberMarker", marker),
            ("NextPartNumberMarker", page[-1][0] if page else marker), ("MaxParts", limit),
            ("IsTruncated", truncated)] + [("Part", [("PartNumber", n), ("Size", size)]) for n, size in page]))
    if "storageclass" in wanted:
        children.append(("StorageClass", "STANDARD"))
    if "objectsize" in wanted:
        children.append(("ObjectSize", info.size))
    resp = Response(body=document("GetObjectAttributesResponse", children))
    resp.set("Content-Type", "application/xml")
    resp.set("Last-Modified", http_date(info.uploaded))
    return resp


def _put_conditions(ctx: Ctx):
    """If-Match / If-None-Match on a write, as AWS: 412 when the current object
    does not match (or exists, for If-None-Match: *), 404 NoSuchKey for If-Match
    on a missing key."""
    only_if = conditional(ctx.req)
    if only_if is not None and (only_if.uploaded_after or only_if.uploaded_before):
        raise S3Error("NotImplemented", "date conditions are supported on reads only")
    return only_if


def check_size(payload: Payload) -> None:
    """A PUT or part needs its size up front, as on S3: Content-Length, or the
    decoded length of an aws-chunked body (a bare chunked transfer -> 411)."""
    if payload.length is None:
        raise S3Error("MissingContentLength")
    if payload.length > MAX_SINGLE_PUT:
        raise S3Error("EntityTooLarge", f"a single PUT or part is limited to {MAX_SINGLE_PUT} bytes; "
                                        "use multipart upload")


async def put_object(ctx: Ctx) -> Response:
    req = ctx.req
    payload = Payload(req, ctx.signing)
    check_size(payload)
    await acl.check_object_acl(ctx)
    md = http_metadata(req)
    custom = custom_metadata(req)
    md5 = content_md5(req)
    only_if = _put_conditions(ctx)
    info = await ctx.bucket.put(ctx.key, payload, http_metadata=md, custom_metadata=custom,
                                only_if=only_if, content_md5=md5, checksums=payload.checksums)
    resp = Response()
    resp.set("ETag", etag_header(info.etag))
    for algo, value in payload.checksums.items():
        resp.set(f"x-amz-checksum-{algo}", value)
    return resp


def parse_copy_source(value: str) -> tuple[str, str]:
    """`x-amz-copy-source` -> (bucket, key); only the null version exists."""
    path, _, query = value.partition("?")
    if query and query not in ("versionId=null",):
        raise S3Error("NotImplemented", "object versions are not supported (only versionId=null)")
    try:
        path = unquote_to_bytes(path.encode("latin-1")).decode("utf-8").lstrip("/")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "x-amz-copy-source is not valid UTF-8") from None
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be BUCKET/KEY")
    return bucket, key


async def copy_object(ctx: Ctx) -> Response:
    req = ctx.req
    src_bucket, src_key = parse_copy_source(req.header("x-amz-copy-source") or "")
    ctx.gateway.authorize_source(ctx, src_bucket)
    await acl.check_object_acl(ctx)
    directive = (req.header("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE")
    if directive == "COPY" and (src_bucket, src_key) == (ctx.bucket_name, ctx.key):
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                                        "to itself without changing the object's metadata")
    md = custom = None
    if directive == "REPLACE":
        md, custom = http_metadata(req), custom_metadata(req)
    await req.drain()
    info = await ctx.cluster.bucket(src_bucket).copy(
        src_key, ctx.key, dst_bucket=ctx.bucket_name, http_metadata=md, custom_metadata=custom,
        only_if=conditional(req, "x-amz-copy-source-"))
    resp = Response(body=document("CopyObjectResult", [
        ("LastModified", iso8601(info.uploaded)), ("ETag", etag_header(info.etag))]))
    resp.set("Content-Type", "application/xml")
    return resp


async def delete_object(ctx: Ctx) -> Response:
    await ctx.bucket.delete(ctx.key)
    return Response(status=204)


async def delete_objects(ctx: Ctx) -> Response:
    """DeleteObjects; Content-MD5 is optional (SDKs send a CRC checksum header instead)."""
    body = await read_document(ctx.req, ctx.signing, 2 * 1024 * 1024)
    keys, quiet = parse_delete(body)
    deleted: list[str] = []
    failed: list[tuple[str, S3Error]] = []
    try:
        await ctx.bucket.delete(keys)
        deleted = keys
    except (engine_errors.InvalidKey,):
        for key in keys:  # find out which key is bad; delete the rest
            try:
                await ctx.bucket.delete(key)
                deleted.append(key)
            except engine_errors.InvalidKey as exc:
                failed.append((key, to_s3_error(exc)))
    children = [] if quiet else [("Deleted", [("Key", k)]) for k in deleted]
    children += [("Error", [("Key", k), ("Code", e.code), ("Message", e.message)]) for k, e in failed]
    resp = Response(body=document("DeleteResult", children))
    resp.set("Content-Type", "application/xml")
    return resp
