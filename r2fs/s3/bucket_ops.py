"""Service and bucket operations: ListBuckets, Create/Delete/HeadBucket,
GetBucketLocation, GetBucketVersioning, bucket CORS configuration."""

from __future__ import annotations

from . import acl
from .context import OWNER_ID, Ctx
from .errors import S3Error
from .http import Response
from .payload import read_document
from .xmlio import S3_NS, document, iso8601, parse_cors, parse_location, render_cors
from xml.sax.saxutils import escape


def xml_response(body: bytes, status: int = 200) -> Response:
    resp = Response(status=status, body=body)
    resp.set("Content-Type", "application/xml")
    return resp


MAX_BUCKETS = 10000


async def list_buckets(ctx: Ctx) -> Response:
    """ListBuckets in name order; `max-buckets` pages, and the continuation token
    is the last name sent (names are URL-safe and sort as the listing does)."""
    q = ctx.req.query
    limit_text = q.get("max-buckets")
    if limit_text is not None and (not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_BUCKETS):
        raise S3Error("InvalidArgument", f"max-buckets must be an integer between 1 and {MAX_BUCKETS}")
    limit = int(limit_text) if limit_text is not None else MAX_BUCKETS
    prefix, after = q.get("prefix", ""), q.get("continuation-token") or ""
    buckets = sorted(await ctx.cluster.list_buckets(), key=lambda b: b.name)
    if ctx.identity is not None and ctx.identity.bucket is not None:
        buckets = [b for b in buckets if b.name == ctx.identity.bucket]
    buckets = [b for b in buckets if b.name.startswith(prefix) and b.name > after]
    page = buckets[:limit]
    children: list = [
        ("Owner", [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]),
        ("Buckets", [("Bucket", [("Name", b.name), ("CreationDate", iso8601(b.created))]) for b in page]),
    ]
    if len(buckets) > limit:
        children.append(("ContinuationToken", page[-1].name))
    if "prefix" in q:
        children.append(("Prefix", prefix))
    return xml_response(document("ListAllMyBucketsResult", children))


async def create_bucket(ctx: Ctx) -> Response:
    public = acl.canned_public(ctx.req)
    location = parse_location(await read_document(ctx.req, ctx.signing, 64 * 1024))
    await ctx.cluster.create_bucket(ctx.bucket_name, location=location)
    if public:
        await ctx.cluster.update_bucket_settings(ctx.bucket_name, public=True)
    resp = Response()
    resp.set("Location", f"/{ctx.bucket_name}")
    return resp


async def delete_bucket(ctx: Ctx) -> Response:
    await ctx.cluster.delete_bucket(ctx.bucket_name)
    return Response(status=204)


async def head_bucket(ctx: Ctx) -> Response:
    info = await ctx.cluster.head_bucket(ctx.bucket_name)
    resp = Response()
    resp.set("x-amz-bucket-region", info.location or ctx.gateway.region)
    return resp


async def get_bucket_location(ctx: Ctx) -> Response:
    info = await ctx.cluster.head_bucket(ctx.bucket_name)
    text = escape(info.location) if info.location else ""
    return xml_response(('<?xml version="1.0" encoding="UTF-8"?>\n'
                         f'<LocationConstraint xmlns="{S3_NS}">{text}</LocationConstraint>').encode())


async def get_bucket_versioning(ctx: Ctx) -> Response:
    await ctx.cluster.head_bucket(ctx.bucket_name)
    return xml_response(document("VersioningConfiguration", []))


async def put_bucket_versioning(ctx: Ctx) -> Response:
    raise S3Error("NotImplemented", "bucket versioning is not supported; buckets are unversioned")


async def get_bucket_cors(ctx: Ctx) -> Response:
    info = await ctx.cluster.head_bucket(ctx.bucket_name)
    rules = info.settings.get("cors")
    if not rules:
        raise S3Error("NoSuchCORSConfiguration", resource=ctx.resource)
    return xml_response(render_cors(rules))


async def put_bucket_cors(ctx: Ctx) -> Response:
    rules = parse_cors(await read_document(ctx.req, ctx.signing, 256 * 1024))
    await ctx.cluster.update_bucket_settings(ctx.bucket_name, cors=rules)
    return Response()


async def delete_bucket_cors(ctx: Ctx) -> Response:
    await ctx.cluster.update_bucket_settings(ctx.bucket_name, cors=None)
    return Response(status=204)
