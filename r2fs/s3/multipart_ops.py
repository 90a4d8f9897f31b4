"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort,
ListParts, ListMultipartUploads. Parts stream into the store like PutObject;
completion is one metadata transaction that moves no data."""

from __future__ import annotations

import re

import trio

from ..engine.errors import NoSuchUpload
from ..engine.types import PartInfo, Range
from . import acl, checksums
from .bucket_ops import xml_response
from .context import (MAX_PARTS, OWNER_ID, Ctx, conditional, content_md5, custom_metadata, etag_header,
                      http_metadata, part_number)
from .errors import S3Error
from .http import Response
from .object_ops import check_size, parse_copy_source
from .payload import Payload, read_document
from .xmlio import CHECKSUM_TAGS, Node, document, iso8601, parse_complete_multipart

_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")
#: uploads read to roll up one delimited page (uploads are few; the store lists them in memory)
MAX_LISTED_UPLOADS = 100_000


def _upload_id(ctx: Ctx) -> str:
    upload_id = ctx.req.query.get("uploadId", "")
    if not upload_id:
        raise S3Error("NoSuchUpload")
    return upload_id


FULL_OBJECT = "FULL_OBJECT"


def _checksum_setting(stored: str | None) -> tuple[str | None, str]:
    """An upload's checksum setting as kept by the engine: "ALGO" (composite) or
    "ALGO/FULL_OBJECT" -> (algorithm, type)."""
    if not stored:
        return None, "COMPOSITE"
    algo, _, kind = stored.partition("/")
    return algo, kind or "COMPOSITE"


async def create_multipart_upload(ctx: Ctx) -> Response:
    """With `x-amz-checksum-algorithm`, every part gets that checksum and the object
    S3's composite one (`<base64>-N`), or with `x-amz-checksum-type: FULL_OBJECT`
    (crc* only; crc64nvme's default) the CRC of its whole content, combined from
    the parts' CRCs."""
    req = ctx.req
    await acl.check_object_acl(ctx)
    algo_name = req.header("x-amz-checksum-algorithm")
    algo = checksums.normalize_algorithm(algo_name) if algo_name else None
    kind = (req.header("x-amz-checksum-type") or (FULL_OBJECT if algo == "crc64nvme" else "COMPOSITE")).upper()
    if kind not in ("COMPOSITE", FULL_OBJECT):
        raise S3Error("InvalidRequest", "Value for x-amz-checksum-type header is invalid.")
    if kind == FULL_OBJECT and algo not in checksums.CRC_POLYS:
        raise S3Error("InvalidRequest", f"The {kind} checksum type cannot be used with the "
                                        f"{algo or 'no'} checksum algorithm.")
    if kind == "COMPOSITE" and algo == "crc64nvme":
        raise S3Error("InvalidRequest", "The COMPOSITE checksum type cannot be used with the "
                                        "crc64nvme checksum algorithm.")
    await req.drain()
    upload_id = await ctx.bucket.create_multipart_upload(
        ctx.key, http_metadata=http_metadata(req), custom_metadata=custom_metadata(req),
        checksum_algorithm=None if algo is None else algo if kind == "COMPOSITE" else f"{algo}/{kind}")
    resp = xml_response(document("InitiateMultipartUploadResult", [
        ("Bucket", ctx.bucket_name), ("Key", ctx.key), ("UploadId", upload_id)]))
    if algo_name:
        resp.set("x-amz-checksum-algorithm", algo_name.upper())
        resp.set("x-amz-checksum-type", kind)
    return resp


async def upload_part(ctx: Ctx) -> Response:
    number, upload_id = part_number(ctx.req, required=True), _upload_id(ctx)
    if ctx.req.header("x-amz-copy-source") is not None:
        return await upload_part_copy(ctx, number, upload_id)
    algo, _ = _checksum_setting((await ctx.bucket.upload_info(ctx.key, upload_id)).checksum_algorithm)
    payload = Payload(ctx.req, ctx.signing, compute=(algo,) if algo else ())
    check_size(payload)
    part = await ctx.bucket.upload_part(ctx.key, upload_id, number, payload,
                                        content_md5=content_md5(ctx.req), checksums=payload.checksums)
    resp = Response()
    resp.set("ETag", etag_header(part.etag))
    for algo, value in payload.checksums.items():
        resp.set(f"x-amz-checksum-{algo}", value)
    return resp


async def upload_part_copy(ctx: Ctx, number: int, upload_id: str) -> Response:
    src_bucket, src_key = parse_copy_source(ctx.req.header("x-amz-copy-source") or "")
    ctx.gateway.authorize_source(ctx, src_bucket)
    rng_header = ctx.req.header("x-amz-copy-source-range")
    rng: Range | None = None
    if rng_header is not None:
        m = _COPY_RANGE.match(rng_header.strip())
        if m is None or int(m.group(2)) < int(m.group(1)):
            raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                                             "bytes=first-last where first and last are the zero-based "
                                             "offsets of the first and last bytes to copy")
        first, last = int(m.group(1)), int(m.group(2))
        size = (await ctx.cluster.bucket(src_bucket).head(src_key)).size
        if last >= size:
            raise S3Error("InvalidArgument", f"Range specified is not valid for source object of size: {size}")
        rng = Range(offset=first, length=last - first + 1)
    await ctx.req.drain()
    part = await ctx.bucket.upload_part_copy(ctx.key, upload_id, number, src_bucket, src_key, range=rng,
                                             only_if=conditional(ctx.req, "x-amz-copy-source-"))
    return xml_response(document("CopyPartResult", [
        ("LastModified", iso8601(part.uploaded)), ("ETag", etag_header(part.etag))]))


def _last_listing_wins(listed: list[tuple[int, str, dict[str, str]]]) -> list[tuple[int, str, dict[str, str]]]:
    """Parts in ascending order; a part number listed again right after itself (a
    resent part: both uploads' ETags listed) counts once, as its last listing."""
    out: list[tuple[int, str, dict[str, str]]] = []
    for part in listed:
        if out and part[0] == out[-1][0]:
            out[-1] = part
        elif out and part[0] < out[-1][0]:
            raise S3Error("InvalidPartOrder")
        else:
            out.append(part)
    return out


async def _all_parts(ctx: Ctx, upload_id: str) -> dict[int, PartInfo]:
    found: dict[int, PartInfo] = {}
    marker = 0
    while True:
        page, truncated = await ctx.bucket.list_parts(ctx.key, upload_id, part_number_marker=marker)
        found.update((p.part_number, p) for p in page)
        if not truncated or not page:
            return found
        marker = page[-1].part_number


async def _object_checksums(ctx: Ctx, upload_id: str,
                            parts: list[tuple[int, str, dict[str, str]]]) -> dict[str, str] | None:
    """The checksum of the object being completed (composite or full-object),
    checked against the per-part values listed and an `x-amz-checksum-*` header;
    None when the upload has no checksum algorithm (or is no longer in progress:
    a repeated Complete)."""
    try:
        algo, kind = _checksum_setting((await ctx.bucket.upload_info(ctx.key, upload_id)).checksum_algorithm)
    except NoSuchUpload:
        return None
    if algo is None:
        return None
    stored = await _all_parts(ctx, upload_id)
    values = []
    for number, etag, listed in parts:
        part = stored.get(number)
        if part is None or part.etag != etag:
            raise S3Error("InvalidPart", f"part {number} was not uploaded or its ETag differs")
        have = part.checksums.get(algo)
        if algo in listed and listed[algo] != have:
            raise S3Error("InvalidPart", f"the {CHECKSUM_TAGS[algo]} of part {number} differs from "
                                         "the part's checksum")
        if have is None:
            return None  # a part made by UploadPartCopy carries no checksum
        values.append((have, part.size))
    if kind == FULL_OBJECT:
        value = await trio.to_thread.run_sync(checksums.full_object, algo, values)
    else:
        value = checksums.composite(algo, [v for v, _ in values])
    claimed = ctx.req.header(f"x-amz-checksum-{algo}")
    if claimed is not None and claimed.strip() != value:
        raise S3Error("BadDigest", f"the x-amz-checksum-{algo} you specified did not match the "
                                   "checksum of the parts")
    return {algo: value}


async def complete_multipart_upload(ctx: Ctx) -> Response:
    """The x-amz-checksum-* headers here describe the object, not the XML body.
    Completing an upload again returns the object it made (same ETag)."""
    upload_id = _upload_id(ctx)
    listed = parse_complete_multipart(await read_document(ctx.req, ctx.signing, 4 * 1024 * 1024,
                                                          header_checksums=False))
    if len(listed) > MAX_PARTS:
        raise S3Error("MalformedXML", f"at most {MAX_PARTS} parts")
    parts = _last_listing_wins(listed)
    only_if = conditional(ctx.req)
    object_checksums = await _object_checksums(ctx, upload_id, parts)
    info = await ctx.bucket.complete_multipart_upload(ctx.key, upload_id, [(n, e) for n, e, _ in parts],
                                                      only_if=only_if, checksums=object_checksums)
    host = ctx.req.header("host", "")
    children: list[Node] = [("Location", f"http://{host}/{ctx.bucket_name}/{ctx.key}"),
                            ("Bucket", ctx.bucket_name), ("Key", ctx.key), ("ETag", etag_header(info.etag))]
    children += [(CHECKSUM_TAGS[a], v) for a, v in info.checksums.items() if a in CHECKSUM_TAGS]
    if info.checksums:
        children.append(("ChecksumType", checksums.checksum_type(info.checksums)))
    return xml_response(document("CompleteMultipartUploadResult", children))


async def abort_multipart_upload(ctx: Ctx) -> Response:
    await ctx.bucket.abort_multipart_upload(ctx.key, _upload_id(ctx))
    return Response(status=204)


async def list_parts(ctx: Ctx) -> Response:
    q = ctx.req.query
    upload_id = _upload_id(ctx)
    marker = q.get("part-number-marker", "0") or "0"
    max_parts = q.get("max-parts", "1000")
    if not marker.isdigit() or not max_parts.isdigit():
        raise S3Error("InvalidArgument", "part-number-marker and max-parts must be integers")
    limit = min(int(max_parts), 1000)
    parts, truncated = await ctx.bucket.list_parts(ctx.key, upload_id, part_number_marker=int(marker),
                                                   max_parts=limit)
    children: list[Node] = [("Bucket", ctx.bucket_name), ("Key", ctx.key), ("UploadId", upload_id),
                            ("Initiator", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]),
                            ("Owner", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]),
                            ("StorageClass", "STANDARD"), ("PartNumberMarker", int(marker)),
                            ("NextPartNumberMarker", parts[-1].part_number if parts else int(marker)),
                            ("MaxParts", limit), ("IsTruncated", truncated)]
    children += [("Part", [("PartNumber", p.part_number), ("LastModified", iso8601(p.uploaded)),
                           ("ETag", etag_header(p.etag)), ("Size", p.size)]
                  + [(CHECKSUM_TAGS[a], v) for a, v in p.checksums.items() if a in CHECKSUM_TAGS])
                 for p in parts]
    return xml_response(document("ListPartsResult", children))


async def list_multipart_uploads(ctx: Ctx) -> Response:
    """In key order, then initiation; with a delimiter, keys that contain it after the
    prefix roll up into CommonPrefixes (each counts once against max-uploads)."""
    q = ctx.req.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter") or None
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    max_uploads = q.get("max-uploads", "1000")
    if not max_uploads.isdigit():
        raise S3Error("InvalidArgument", "max-uploads must be an integer")
    limit = min(int(max_uploads), 1000)
    found, more = await ctx.bucket.list_multipart_uploads(
        prefix=prefix, key_marker=key_marker, upload_id_marker=id_marker,
        limit=limit if delimiter is None else MAX_LISTED_UPLOADS)
    uploads, prefixes, truncated = found, [], more
    if delimiter is not None:
        uploads, truncated = [], False
        skip_under = key_marker if key_marker.endswith(delimiter) else None
        for u in found:
            if skip_under and u.key.startswith(skip_under):
                continue
            cut = u.key.find(delimiter, len(prefix))
            common = u.key[:cut + len(delimiter)] if cut >= 0 else None
            if common is not None and prefixes and prefixes[-1] == common:
                continue
            if len(uploads) + len(prefixes) >= limit:
                truncated = True
                break
            if common is not None:
                prefixes.append(common)
            else:
                uploads.append(u)
    children: list[Node] = [("Bucket", ctx.bucket_name), ("KeyMarker", key_marker),
                            ("UploadIdMarker", id_marker), ("Prefix", prefix),
                            ("Delimiter", delimiter) if delimiter else None, ("MaxUploads", limit),
                            ("IsTruncated", truncated)]
    if truncated and (uploads or prefixes):
        last_upload = uploads[-1] if uploads else None
        last_prefix = prefixes[-1] if prefixes else None
        if last_prefix is not None and (last_upload is None or last_prefix > last_upload.key):
            children += [("NextKeyMarker", last_prefix), ("NextUploadIdMarker", "")]
        else:
            children += [("NextKeyMarker", last_upload.key), ("NextUploadIdMarker", last_upload.upload_id)]
    children += [("Upload", [("Key", u.key), ("UploadId", u.upload_id),
                             ("Initiator", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]),
                             ("Owner", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]),
                             ("StorageClass", "STANDARD"), ("Initiated", iso8601(u.initiated))])
                 for u in uploads]
    children += [("CommonPrefixes", [("Prefix", p)]) for p in prefixes]
    return xml_response(document("ListMultipartUploadsResult", children))
