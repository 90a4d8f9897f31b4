"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort,
ListParts, ListMultipartUploads. Parts stream into the store like PutObject;
completion is one metadata transaction that moves no data."""

from __future__ import annotations

from ..engine.types import Range
from .bucket_ops import xml_response
from .context import OWNER_ID, Ctx, conditional, content_md5, custom_metadata, etag_header, http_metadata
from .errors import S3Error
from .http import Response
from .object_ops import check_size, parse_copy_source, parse_range
from .payload import Payload, read_document
from .xmlio import Node, document, iso8601, parse_complete_multipart

MAX_PARTS = 10000


def _part_number(ctx: Ctx) -> int:
    value = ctx.req.query.get("partNumber", "")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive")
    return int(value)


def _upload_id(ctx: Ctx) -> str:
    upload_id = ctx.req.query.get("uploadId", "")
    if not upload_id:
        raise S3Error("NoSuchUpload")
    return upload_id


async def create_multipart_upload(ctx: Ctx) -> Response:
    await ctx.req.drain()
    upload_id = await ctx.bucket.create_multipart_upload(
        ctx.key, http_metadata=http_metadata(ctx.req), custom_metadata=custom_metadata(ctx.req))
    resp = xml_response(document("InitiateMultipartUploadResult", [
        ("Bucket", ctx.bucket_name), ("Key", ctx.key), ("UploadId", upload_id)]))
    algo = ctx.req.header("x-amz-checksum-algorithm")
    if algo:
        resp.set("x-amz-checksum-algorithm", algo)
    return resp


async def upload_part(ctx: Ctx) -> Response:
    number, upload_id = _part_number(ctx), _upload_id(ctx)
    if ctx.req.header("x-amz-copy-source") is not None:
        return await upload_part_copy(ctx, number, upload_id)
    payload = Payload(ctx.req, ctx.signing)
    check_size(payload)
    part = await ctx.bucket.upload_part(ctx.key, upload_id, number, payload,
                                        content_md5=content_md5(ctx.req))
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
        rng = parse_range(rng_header)
        if rng.offset is None or rng.length is None:
            raise S3Error("InvalidArgument", "x-amz-copy-source-range must be bytes=first-last")
    await ctx.req.drain()
    part = await ctx.bucket.upload_part_copy(ctx.key, upload_id, number, src_bucket, src_key, range=rng,
                                             only_if=conditional(ctx.req, "x-amz-copy-source-"))
    return xml_response(document("CopyPartResult", [
        ("LastModified", iso8601(part.uploaded)), ("ETag", etag_header(part.etag))]))


async def complete_multipart_upload(ctx: Ctx) -> Response:
    upload_id = _upload_id(ctx)
    parts = parse_complete_multipart(await read_document(ctx.req, ctx.signing, 4 * 1024 * 1024))
    if len(parts) > MAX_PARTS:
        raise S3Error("MalformedXML", f"at most {MAX_PARTS} parts")
    numbers = [n for n, _ in parts]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        raise S3Error("InvalidPartOrder")
    only_if = conditional(ctx.req)
    info = await ctx.bucket.complete_multipart_upload(ctx.key, upload_id, parts, only_if=only_if)
    host = ctx.req.header("host", "")
    return xml_response(document("CompleteMultipartUploadResult", [
        ("Location", f"http://{host}/{ctx.bucket_name}/{ctx.key}"), ("Bucket", ctx.bucket_name),
        ("Key", ctx.key), ("ETag", etag_header(info.etag))]))


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
                           ("ETag", etag_header(p.etag)), ("Size", p.size)]) for p in parts]
    return xml_response(document("ListPartsResult", children))


async def list_multipart_uploads(ctx: Ctx) -> Response:
    q = ctx.req.query
    prefix = q.get("prefix", "")
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    max_uploads = q.get("max-uploads", "1000")
    if not max_uploads.isdigit():
        raise S3Error("InvalidArgument", "max-uploads must be an integer")
    limit = min(int(max_uploads), 1000)
    if q.get("delimiter"):
        raise S3Error("NotImplemented", "ListMultipartUploads with a delimiter is not supported")
    uploads, truncated = await ctx.bucket.list_multipart_uploads(
        prefix=prefix, key_marker=key_marker, upload_id_marker=id_marker, limit=limit)
    children: list[Node] = [("Bucket", ctx.bucket_name), ("KeyMarker", key_marker),
                            ("UploadIdMarker", id_marker), ("Prefix", prefix), ("MaxUploads", limit),
                            ("IsTruncated", truncated)]
    if truncated and uploads:
        children += [("NextKeyMarker", uploads[-1].key), ("NextUploadIdMarker", uploads[-1].upload_id)]
    children += [("Upload", [("Key", u.key), ("UploadId", u.upload_id),
                             ("Initiator", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]),
                             ("Owner", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]),
                             ("StorageClass", "STANDARD"), ("Initiated", iso8601(u.initiated))])
                 for u in uploads]
    return xml_response(document("ListMultipartUploadsResult", children))
