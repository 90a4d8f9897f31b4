"""The S3 gateway as an ASGI application: routing, auth, dispatch, errors.

A request goes: address (path-style or virtual-host-style) -> operation
(method + level + sub-resource) -> SigV4 check -> key scope / read-only /
public-bucket check -> handler -> CORS headers -> response. Every failure on
the way is an exception turned into S3 XML by `errors.to_s3_error`, so the
wire never sees a traceback and a failed upload never leaves an object.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import traceback
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import unquote, unquote_to_bytes

import trio

from ..engine.errors import NoSuchBucket
from ..engine.peers import PeerApp
from ..engine.maintenance import run_maintenance
from ..engine.metasnap import run_snapshotter
from ..engine.replicator import run_replicator
from ..engine.store import Cluster
from . import acl, bucket_ops, cors, list_ops, multipart_ops, object_ops, post_object, sigv4
from .context import Ctx
from .errors import S3Error, to_s3_error
from .http import ClientGone, Request, Response
from .keys import KeyCache
from .metering import Meter
from .xmlio import error_document

log = logging.getLogger("r2fs.s3")

Handler = Callable[[Ctx], Awaitable[Response]]

#: Sub-resources S3 has and r2fs does not: answered NotImplemented, never a 500.
UNSUPPORTED = {
    "policy", "policyStatus", "lifecycle", "tagging", "website", "logging", "notification",
    "replication", "encryption", "ownershipControls", "publicAccessBlock", "object-lock",
    "requestPayment", "accelerate", "analytics", "inventory", "metrics", "intelligent-tiering",
    "retention", "legal-hold", "torrent", "restore", "select", "session",
}


@dataclass(frozen=True)
class Op:
    name: str
    handler: Handler
    write: bool  # refused for read-only keys
    billing: str | None  # "class_a", "class_b", or None (free, like R2's deletes)


A, B = "class_a", "class_b"
OPS = {
    "ListBuckets": Op("ListBuckets", bucket_ops.list_buckets, False, None),
    "CreateBucket": Op("CreateBucket", bucket_ops.create_bucket, True, A),
    "DeleteBucket": Op("DeleteBucket", bucket_ops.delete_bucket, True, None),
    "HeadBucket": Op("HeadBucket", bucket_ops.head_bucket, False, B),
    "GetBucketLocation": Op("GetBucketLocation", bucket_ops.get_bucket_location, False, B),
    "GetBucketVersioning": Op("GetBucketVersioning", bucket_ops.get_bucket_versioning, False, B),
    "PutBucketVersioning": Op("PutBucketVersioning", bucket_ops.put_bucket_versioning, True, A),
    "GetBucketCors": Op("GetBucketCors", bucket_ops.get_bucket_cors, False, B),
    "PutBucketCors": Op("PutBucketCors", bucket_ops.put_bucket_cors, True, A),
    "DeleteBucketCors": Op("DeleteBucketCors", bucket_ops.delete_bucket_cors, True, A),
    "ListObjects": Op("ListObjects", list_ops.list_objects_v1, False, A),
    "ListObjectsV2": Op("ListObjectsV2", list_ops.list_objects_v2, False, A),
    "ListObjectVersions": Op("ListObjectVersions", list_ops.list_object_versions, False, A),
    "ListMultipartUploads": Op("ListMultipartUploads", multipart_ops.list_multipart_uploads, False, A),
    "DeleteObjects": Op("DeleteObjects", object_ops.delete_objects, True, None),
    "GetObject": Op("GetObject", object_ops.get_object, False, B),
    "HeadObject": Op("HeadObject", object_ops.head_object, False, B),
    "PutObject": Op("PutObject", object_ops.put_object, True, A),
    "CopyObject": Op("CopyObject", object_ops.copy_object, True, A),
    "DeleteObject": Op("DeleteObject", object_ops.delete_object, True, None),
    "CreateMultipartUpload": Op("CreateMultipartUpload", multipart_ops.create_multipart_upload, True, A),
    "UploadPart": Op("UploadPart", multipart_ops.upload_part, True, A),
    "CompleteMultipartUpload": Op("CompleteMultipartUpload", multipart_ops.complete_multipart_upload, True, A),
    "AbortMultipartUpload": Op("AbortMultipartUpload", multipart_ops.abort_multipart_upload, True, None),
    "ListParts": Op("ListParts", multipart_ops.list_parts, False, A),
    "GetObjectAttributes": Op("GetObjectAttributes", object_ops.get_object_attributes, False, B),
    "GetBucketAcl": Op("GetBucketAcl", acl.get_bucket_acl, False, B),
    "PutBucketAcl": Op("PutBucketAcl", acl.put_bucket_acl, True, A),
    "GetObjectAcl": Op("GetObjectAcl", acl.get_object_acl, False, B),
    "PutObjectAcl": Op("PutObjectAcl", acl.put_object_acl, True, A),
    # Authenticated by its signed policy document, not by SigV4 on the request.
    "PostObject": Op("PostObject", post_object.post_object, True, A),
}
PUBLIC_OPS = {"GetObject", "HeadObject"}
#: Request ids: unique, not secret -- a random per-process prefix and a counter
#: (a getrandom() call per request showed up in small-request profiles).
_REQUEST_PREFIX = secrets.token_hex(4).upper()
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    return f"{_REQUEST_PREFIX}{next(_request_numbers) & 0xFFFFFFFF:08X}"


def select_operation(method: str, level: str, query: dict[str, str], req: Request) -> Op:
    """Which S3 operation a request is, from method, addressing level and sub-resource."""
    unsupported = UNSUPPORTED.intersection(query)
    if unsupported:
        raise S3Error("NotImplemented", f"the {sorted(unsupported)[0]} sub-resource is not supported")
    name = None
    if level == "service":
        name = {"GET": "ListBuckets"}.get(method)
    elif level == "bucket":
        if method == "GET":
            if "location" in query:
                name = "GetBucketLocation"
            elif "acl" in query:
                name = "GetBucketAcl"
            elif "versioning" in query:
                name = "GetBucketVersioning"
            elif "cors" in query:
                name = "GetBucketCors"
            elif "uploads" in query:
                name = "ListMultipartUploads"
            elif "versions" in query:
                name = "ListObjectVersions"
            elif query.get("list-type") == "2":
                name = "ListObjectsV2"
            elif "list-type" in query:
                raise S3Error("InvalidArgument", "list-type must be 2")
            else:
                name = "ListObjects"
        elif method == "PUT":
            name = "PutBucketCors" if "cors" in query else "PutBucketVersioning" if "versioning" in query \
                else "PutBucketAcl" if "acl" in query else "CreateBucket"
        elif method == "DELETE":
            name = "DeleteBucketCors" if "cors" in query else "DeleteBucket"
        elif method == "HEAD":
            name = "HeadBucket"
        elif method == "POST":
            name = "DeleteObjects" if "delete" in query else "PostObject"
    else:
        if method == "GET":
            name = "ListParts" if "uploadId" in query else "GetObjectAcl" if "acl" in query \
                else "GetObjectAttributes" if "attributes" in query else "GetObject"
        elif method == "HEAD":
            name = "HeadObject"
        elif method == "PUT":
            if "acl" in query:
                name = "PutObjectAcl"
            elif "partNumber" in query or "uploadId" in query:
                name = "UploadPart"
            elif req.header("x-amz-copy-source") is not None:
                name = "CopyObject"
            else:
                name = "PutObject"
        elif method == "POST":
            name = "CreateMultipartUpload" if "uploads" in query else \
                "CompleteMultipartUpload" if "uploadId" in query else None
            if name is None:
                raise S3Error("MethodNotAllowed", "POST uploads (HTML forms) go to the bucket's URL")
        elif method == "DELETE":
            name = "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if name is None:
        raise S3Error("MethodNotAllowed", f"{method} is not allowed on this resource")
    return OPS[name]


class Gateway:
    """The ASGI app. `virtual_hosts`: domain suffixes under which `BUCKET.suffix`
    addresses a bucket (e.g. "localhost" makes `photos.localhost:9000` work)."""

    def __init__(self, cluster: Cluster, *, region: str = "auto",
                 virtual_hosts: tuple[str, ...] = ("localhost",), replicate: bool = True) -> None:
        self.cluster = cluster
        self.region = region
        self.virtual_hosts = tuple(v.lower().strip(".") for v in virtual_hosts if v)
        self.keys = KeyCache(cluster)
        self.meter = Meter(cluster)
        self.replicate = replicate
        # Peer caches of other processes fetch sealed chunks from us under /_r2fs/
        # (outside the S3 namespace: bucket names cannot start with "_").
        self.peer_app = cluster.reader.peer_app()

    # --- ASGI -------------------------------------------------------------------

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if PeerApp.handles(scope.get("path", "")):
            await self.peer_app(scope, receive, send)
            return
        req = Request.from_scope(scope, receive)
        request_id = new_request_id()
        resp = await self._respond(req, request_id)
        if resp is None:
            return
        resp.set("x-amz-request-id", request_id)
        resp.set("x-amz-id-2", request_id)
        resp.set("Server", "r2fs")
        if not req.consumed and (req.content_length or req.header("transfer-encoding")):
            resp.set("Connection", "close")  # do not read a body we refused
        try:
            await resp.send(send, head_only=req.method == "HEAD")
        except ClientGone:
            return
        except Exception:
            # The response already started: all we can do is drop the connection.
            log.error("request %s: failed while streaming the response:\n%s", request_id, traceback.format_exc())
            raise

    async def _lifespan(self, receive, send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        stop_background = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.meter.run)
            if self.replicate:
                # Local-mode writes (ours and other processes') drain while we serve.
                nursery.start_soon(run_replicator, self.cluster, stop_background)
            nursery.start_soon(run_snapshotter, self.cluster, stop_background)
            nursery.start_soon(run_maintenance, self.cluster, stop_background)  # background scrub + gc
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            stop_background.set()
            nursery.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    async def _respond(self, req: Request, request_id: str) -> Response | None:
        ctx: Ctx | None = None
        try:
            if req.raw_path == "/metrics" and req.method == "GET" and sigv4.parse(req) is None:
                resp = Response(body=await self.meter.prometheus())
                resp.set("Content-Type", "text/plain; version=0.0.4")
                return resp
            ctx = await self._context(req, request_id)
            return await self._dispatch(ctx)
        except ClientGone:
            log.info("request %s: client went away", request_id)
            return None
        except Exception as exc:  # noqa: BLE001 - every error becomes S3 XML here
            err = to_s3_error(exc)
            if err.code == "InternalError":
                log.error("request %s: %s\n%s", request_id, exc, traceback.format_exc())
            resource = ctx.resource if ctx is not None else unquote(req.raw_path)
            resp = self._error_response(err, resource, request_id)
            if ctx is not None and ctx.cors_rules:
                cors.decorate(req, ctx.cors_rules, resp.headers)  # a browser may read the error
            return resp

    def _error_response(self, err: S3Error, resource: str, request_id: str) -> Response:
        resp = Response(status=err.status)
        for k, v in err.headers.items():
            resp.set(k, v)
        if err.status != 304:
            resp.body = error_document(err.code, err.message, err.resource or resource, request_id, err.extra)
            resp.set("Content-Type", "application/xml")
        return resp

    # --- routing and auth ---------------------------------------------------------

    def _address(self, req: Request) -> tuple[str | None, str | None]:
        """(bucket, key) from the Host header and the path."""
        host = (req.header("host") or "").lower()
        if host.startswith("["):
            host = host.split("]")[0] + "]"
        else:
            host = host.rsplit(":", 1)[0] if ":" in host else host
        vhost_bucket = None
        for suffix in self.virtual_hosts:
            if host.endswith("." + suffix):
                vhost_bucket = host[: -len(suffix) - 1]
                break
        try:  # the path's bytes (raw or percent-encoded) must be UTF-8: keys are
            path = unquote_to_bytes(req.raw_path.encode("latin-1")).decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "the path (object key) is not valid UTF-8") from None
        if not path.startswith("/"):
            raise S3Error("InvalidURI")
        if vhost_bucket is not None:
            key = path[1:]
            return vhost_bucket, key or None
        bucket, sep, key = path[1:].partition("/")
        if not bucket:
            return None, None
        return bucket, key if key else None

    async def _context(self, req: Request, request_id: str) -> Ctx:
        bucket, key = self._address(req)
        signing = identity = None
        if req.method != "OPTIONS":
            parsed = sigv4.parse(req)
            if parsed is not None:
                identity = await self.keys.get(parsed.access_key)
                if identity is None:
                    raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": parsed.access_key})
                signing = parsed.verify(identity.secret)
        return Ctx(self, req, bucket, key, signing, identity, request_id)

    async def _dispatch(self, ctx: Ctx) -> Response:
        req = ctx.req
        rules = None
        if req.method == "OPTIONS":
            if ctx.bucket_name is None:
                raise S3Error("MethodNotAllowed")
            info = await self.cluster.head_bucket(ctx.bucket_name)
            return cors.preflight(req, info.settings.get("cors"))
        level = "service" if ctx.bucket_name is None else "bucket" if ctx.key is None else "object"
        op = select_operation(req.method, level, req.query, req)
        if req.query.get("versionId", "null") != "null":
            raise S3Error("InvalidArgument", "Invalid version id specified (buckets are unversioned; "
                                             "the only version is null)")
        if req.header("origin") and ctx.bucket_name is not None:
            try:
                rules = (await self.cluster.head_bucket(ctx.bucket_name)).settings.get("cors")
            except NoSuchBucket:
                rules = None
            ctx.cors_rules = rules
        await self._authorize(ctx, op)
        self.meter.count(ctx.bucket_name, op.billing)
        resp = await op.handler(ctx)
        cors.decorate(req, rules, resp.headers)
        return resp

    async def _authorize(self, ctx: Ctx, op: Op) -> None:
        if op.name == "PostObject" and ctx.identity is None:
            return  # the handler checks the form's signed policy and its key's rights
        if ctx.identity is None:
            if op.name in PUBLIC_OPS and ctx.bucket_name is not None:
                info = await self.cluster.head_bucket(ctx.bucket_name)
                if info.settings.get("public"):
                    return
            raise S3Error("AccessDenied", "anonymous access is allowed only for GET/HEAD on public buckets")
        if op.name in ("CreateBucket", "DeleteBucket") and ctx.identity.bucket is not None:
            raise S3Error("AccessDenied", "this key is scoped to one bucket")
        if not ctx.identity.allows(ctx.bucket_name if ctx.bucket_name is not None else ctx.identity.bucket,
                                   op.write):
            raise S3Error("AccessDenied", "this key may not perform this operation"
                          + (" (read-only key)" if ctx.identity.read_only and op.write else ""))

    def authorize_source(self, ctx: Ctx, src_bucket: str) -> None:
        """Copies read another bucket: the key must be allowed to read it too."""
        if ctx.identity is None or not ctx.identity.allows(src_bucket, False):
            raise S3Error("AccessDenied", f"this key may not read bucket {src_bucket}")
