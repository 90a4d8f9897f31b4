"""Canned ACLs, mapped onto the one access switch r2fs has: a bucket's public
read-only mode (`r2fs bucket public NAME on|off`, like r2.dev).

`private` turns public mode off and `public-read` turns it on, from
CreateBucket's or PutBucketAcl's `x-amz-acl` or an equivalent
AccessControlPolicy document. GetBucketAcl / GetObjectAcl describe that state
as S3 would: the owner's FULL_CONTROL, plus AllUsers READ when public.
Objects have no ACL of their own: setting one equal to the bucket's is
accepted (clients send `x-amz-acl: private` by habit), anything else -- other
canned ACLs, `x-amz-grant-*`, arbitrary grants -- is NotImplemented.
"""

from __future__ import annotations

from .context import OWNER_ID, Ctx
from .errors import S3Error
from .http import Request, Response
from .payload import read_document
from .xmlio import Node, document, parse, text

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
_XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
#: canned ACL -> public?  (bucket-owner-full-control is "private" with one owner)
CANNED = {"private": False, "bucket-owner-full-control": False, "public-read": True}


def canned_public(req: Request) -> bool | None:
    """The public state an `x-amz-acl` header asks for (None: no ACL given)."""
    for name, _ in req.headers:
        if name.startswith("x-amz-grant-"):
            raise S3Error("NotImplemented", f"{name} is not supported; buckets are private or "
                                            "public-read (canned ACLs only)")
    value = req.header("x-amz-acl")
    return None if value is None else _canned(value)


async def _is_public(ctx: Ctx) -> bool:
    return bool((await ctx.cluster.head_bucket(ctx.bucket_name)).settings.get("public"))


def _canned(value: str) -> bool:
    value = value.strip().lower()
    if value not in CANNED:
        raise S3Error("NotImplemented", f"the canned ACL {value!r} is not supported "
                                        "(only private and public-read)")
    return CANNED[value]


async def _require_bucket_state(ctx: Ctx, public: bool) -> None:
    if public != await _is_public(ctx):
        raise S3Error("NotImplemented", "objects have no ACL of their own: they are as private or "
                                        "public as their bucket (set the bucket's ACL instead)")


async def check_object_acl(ctx: Ctx) -> None:
    """An object write's `x-amz-acl`: accepted when it is what the bucket already is."""
    wanted = canned_public(ctx.req)
    if wanted is not None:
        await _require_bucket_state(ctx, wanted)


async def check_canned_object_acl(ctx: Ctx, value: str) -> None:
    """A POST form's `acl` field, under the same rule as `x-amz-acl`."""
    await _require_bucket_state(ctx, _canned(value))


def _policy(public: bool) -> bytes:
    owner = [("ID", OWNER_ID), ("DisplayName", OWNER_ID)]
    grants: list[Node] = [("Grant", [(f'Grantee {_XSI} xsi:type="CanonicalUser"', owner),
                                     ("Permission", "FULL_CONTROL")])]
    if public:
        grants.append(("Grant", [(f'Grantee {_XSI} xsi:type="Group"', [("URI", ALL_USERS)]),
                                 ("Permission", "READ")]))
    return document("AccessControlPolicy", [("Owner", owner), ("AccessControlList", grants)])


def _acl_response(public: bool) -> Response:
    resp = Response(body=_policy(public))
    resp.set("Content-Type", "application/xml")
    return resp


def parse_policy(body: bytes) -> bool:
    """An AccessControlPolicy document -> public?, if it is one of the two r2fs can be."""
    root = parse(body)
    if root.tag != "AccessControlPolicy":
        raise S3Error("MalformedXML")
    full_control_owner, all_users_read, other = False, False, False
    for grant in root.iter("Grant"):
        grantee, permission = grant.find("Grantee"), (text(grant, "Permission") or "").strip()
        if grantee is None:
            raise S3Error("MalformedXML", "each Grant needs a Grantee")
        uri, gid = text(grantee, "URI"), text(grantee, "ID")
        if uri is not None and uri.strip() == ALL_USERS and permission == "READ":
            all_users_read = True
        elif gid is not None and gid.strip() == OWNER_ID and permission == "FULL_CONTROL":
            full_control_owner = True
        else:
            other = True
    if other or not full_control_owner:
        raise S3Error("NotImplemented", "only the grants of the canned ACLs private and public-read "
                                        "are supported")
    return all_users_read


async def get_bucket_acl(ctx: Ctx) -> Response:
    return _acl_response(await _is_public(ctx))


async def put_bucket_acl(ctx: Ctx) -> Response:
    wanted = canned_public(ctx.req)
    body = await read_document(ctx.req, ctx.signing, 64 * 1024)
    if wanted is None:
        if not body.strip():
            raise S3Error("MissingSecurityHeader", "PutBucketAcl needs x-amz-acl or an "
                                                   "AccessControlPolicy document")
        wanted = parse_policy(body)
    elif body.strip():
        raise S3Error("UnexpectedContent", "x-amz-acl and an AccessControlPolicy document "
                                           "cannot both be given")
    await ctx.cluster.update_bucket_settings(ctx.bucket_name, public=True if wanted else None)
    return Response()


async def get_object_acl(ctx: Ctx) -> Response:
    await ctx.bucket.head(ctx.key)
    return _acl_response(await _is_public(ctx))


async def put_object_acl(ctx: Ctx) -> Response:
    await ctx.bucket.head(ctx.key)
    wanted = canned_public(ctx.req)
    body = await read_document(ctx.req, ctx.signing, 64 * 1024)
    if wanted is None:
        wanted = parse_policy(body) if body.strip() else None
    if wanted is None:
        raise S3Error("MissingSecurityHeader", "PutObjectAcl needs x-amz-acl or an AccessControlPolicy")
    await _require_bucket_state(ctx, wanted)
    return Response()
