"""Browser uploads: POST Object, an HTML form posted to the bucket's URL.

The frontend case: a server hands a browser a signed policy document (what
key prefix, what size, what content type it may upload, until when); the
browser posts a multipart/form-data form with the policy, its signature and
the file straight to the bucket. The form's fields are read (bounded), the
policy's signature is checked with the key's secret (SigV4: hex HMAC-SHA256
with the day's signing key; SigV2 policies, HMAC-SHA1, as older tools sign
them), every condition is checked against the fields, and the file part
streams into the store -- its size checked against `content-length-range`
while it streams, so a too-large upload stops and commits nothing. Fields
after the file are ignored, as S3 does.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import json
import re
import time
from typing import AsyncIterator
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from ..engine.types import HTTP_METADATA_KEYS
from . import acl, sigv4
from .context import META_PREFIX, MAX_USER_METADATA, Ctx, etag_header
from .errors import S3Error
from .http import Response
from .object_ops import MAX_SINGLE_PUT
from .xmlio import document

MAX_FIELD_BYTES = 64 * 1024  # one field's value (a policy is at most 20 KB on S3)
MAX_FORM_BYTES = 256 * 1024  # all fields before the file
MAX_PART_HEADERS = 16 * 1024
#: fields the policy need not mention (S3's rule), besides x-ignore-*
UNCONDITIONED = {"x-amz-signature", "signature", "awsaccesskeyid", "policy", "file"}
_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _policy_failed(message: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {message}")


def _malformed(message: str = "") -> S3Error:
    return S3Error("MalformedPOSTRequest", "The body of your POST request is not well-formed "
                   "multipart/form-data." + (f" ({message})" if message else ""))


def form_boundary(content_type: str | None) -> bytes:
    value = content_type or ""
    if value.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise S3Error("PreconditionFailed", "Bucket POST must be of the enclosure-type multipart/form-data",
                      extra={"Condition": "Bucket POST must be of the enclosure-type-multipart/form-data"})
    for name, raw in _PARAM.findall(value):
        if name.lower() == "boundary":
            boundary = raw.strip().strip('"')
            if 1 <= len(boundary) <= 200:
                return boundary.encode("latin-1")
    raise _malformed("no boundary")


class FormReader:
    """Parts of a multipart/form-data body, read from a stream of pieces with a
    small lookahead buffer: headers per part, then the part's content, which a
    caller either collects (bounded) or streams."""

    def __init__(self, source: AsyncIterator[bytes], boundary: bytes) -> None:
        self._source = source
        self._buf = bytearray(b"\r\n")  # so the first delimiter looks like every other one
        self._delim = b"\r\n--" + boundary
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            self._buf += await self._source.__anext__()
        except StopAsyncIteration:
            self._eof = True
            return False
        return True

    async def start(self) -> None:
        """Skip any preamble up to the first boundary."""
        while (idx := self._buf.find(self._delim)) < 0:
            del self._buf[:max(0, len(self._buf) - len(self._delim))]
            if not await self._fill():
                raise _malformed("no opening boundary")
        del self._buf[:idx + len(self._delim)]

    async def next_part(self) -> dict[str, str] | None:
        """The headers of the next part (lowercase names), or None after the last."""
        while len(self._buf) < 2:
            if not await self._fill():
                raise _malformed("body ends inside a boundary")
        if self._buf[:2] == b"--":
            return None
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > MAX_PART_HEADERS or not await self._fill():
                raise _malformed("bad part headers")
        head = bytes(self._buf[:end]).decode("utf-8", "replace")
        del self._buf[:end + 4]
        headers: dict[str, str] = {}
        for line in head.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return headers

    async def content(self) -> AsyncIterator[bytes]:
        """The current part's bytes, up to (and consuming) the next delimiter."""
        keep = len(self._delim) - 1
        while True:
            idx = self._buf.find(self._delim)
            if idx >= 0:
                if idx:
                    yield bytes(self._buf[:idx])
                del self._buf[:idx + len(self._delim)]
                return
            if len(self._buf) > keep:
                yield bytes(self._buf[:-keep])
                del self._buf[:-keep]
            if not await self._fill():
                raise _malformed("the body ends inside a part")

    async def collect(self, limit: int) -> bytes:
        out = bytearray()
        async for piece in self.content():
            out += piece
            if len(out) > limit:
                raise S3Error("MaxPostPreDataLengthExceeded",
                              "Your POST request fields preceding the upload file were too large.")
        return bytes(out)


def _disposition(headers: dict[str, str]) -> tuple[str | None, str | None]:
    value = headers.get("content-disposition", "")
    if value.split(";", 1)[0].strip().lower() != "form-data":
        raise _malformed("a part is not form-data")
    params = {k.lower(): v.strip() for k, v in _PARAM.findall(value)}
    unquote = lambda v: v[1:-1].replace('\\"', '"') if v and v[0] == '"' else v  # noqa: E731
    name = params.get("name")
    filename = params.get("filename")
    return (unquote(name) if name is not None else None), (unquote(filename) if filename is not None else None)


class Form:
    """The fields before the file (lowercase name -> value; `names` keeps the
    spelling sent), and the file part's name and content type."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.filename: str | None = None
        self.file_type: str | None = None


async def read_fields(reader: FormReader) -> Form:
    """Read up to the file part (the reader then stands at its content)."""
    await reader.start()
    form, total = Form(), 0
    while True:
        headers = await reader.next_part()
        if headers is None:
            raise S3Error("InvalidArgument", "POST requires exactly one file upload per request.",
                          extra={"ArgumentName": "file", "ArgumentValue": "0"})
        name, filename = _disposition(headers)
        if name is None:
            raise _malformed("a part has no name")
        if name.lower() == "file":
            form.filename = filename or ""
            form.file_type = headers.get("content-type")
            return form
        value = await reader.collect(MAX_FIELD_BYTES)
        total += len(value)
        if total > MAX_FORM_BYTES:
            raise S3Error("MaxPostPreDataLengthExceeded",
                          "Your POST request fields preceding the upload file were too large.")
        lower = name.lower()
        if lower not in form.fields:
            form.fields[lower] = value.decode("utf-8", "replace")
            form.names[lower] = name


# --- the signed policy ----------------------------------------------------------------


def _parse_expiration(value: object) -> float:
    if not isinstance(value, str):
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid 'expiration' value.")
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z", value.strip())
    if m is None:
        raise S3Error("InvalidPolicyDocument", f"Invalid Policy: Invalid 'expiration' value: '{value}'")
    return float(calendar.timegm(tuple(int(g) for g in m.groups()[:6]) + (0, 0, 0)))


def parse_policy(policy_b64: str, now: float) -> list:
    try:
        doc = json.loads(base64.b64decode(policy_b64, validate=False).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from None
    if not isinstance(doc, dict):
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    if "expiration" not in doc:
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Policy missing expiration.")
    if now > _parse_expiration(doc["expiration"]):
        raise _policy_failed("Policy expired.")
    conditions = doc.get("conditions")
    if not isinstance(conditions, list):
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Policy missing conditions.")
    return conditions


class Conditions:
    """A policy's conditions, checked against the form (names lowercase)."""

    def __init__(self, conditions: list) -> None:
        self.checks: list[tuple[str, str, str, object]] = []  # (op, field, value, original)
        self.length_range: tuple[int, int] | None = None
        for c in conditions:
            if isinstance(c, dict):
                if len(c) != 1:
                    raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid Simple-Condition: "
                                                           "Simple-Conditions must have exactly one property specified.")
                (name, value), = c.items()
                self.checks.append(("eq", name.lower(), str(value), c))
            elif isinstance(c, list) and c and isinstance(c[0], str):
                op = c[0].lower()
                if op == "content-length-range":
                    if len(c) != 3 or not all(isinstance(v, int) for v in c[1:]):
                        raise S3Error("InvalidPolicyDocument",
                                      "Invalid Policy: Invalid content-length-range condition")
                    self.length_range = (c[1], c[2])
                elif op in ("eq", "starts-with") and len(c) == 3 and isinstance(c[1], str) \
                        and c[1].startswith("$") and isinstance(c[2], str):
                    self.checks.append((op, c[1][1:].lower(), c[2], c))
                else:
                    raise S3Error("InvalidPolicyDocument",
                                  f"Invalid Policy: Invalid condition: {json.dumps(c)}")
            else:
                raise S3Error("InvalidPolicyDocument", f"Invalid Policy: Invalid condition: {json.dumps(c)}")

    def check(self, values: dict[str, str]) -> None:
        if not any(name == "bucket" for _, name, _, _ in self.checks):
            raise _policy_failed("Policy Condition failed: [\"eq\", \"$bucket\", "
                                 f"\"{values.get('bucket', '')}\"] (the policy must name the bucket)")
        for op, name, want, original in self.checks:
            have = values.get(name)
            ok = have == want if op == "eq" else have is not None and (
                all(v.strip().startswith(want) for v in have.split(",")) if name == "content-type"
                else have.startswith(want))
            if not ok and not (op == "starts-with" and want == "" and have is None):
                raise _policy_failed(f"Policy Condition failed: {json.dumps(original)}")
        covered = {name for _, name, _, _ in self.checks}
        extra = [n for n in values if n not in covered and n not in UNCONDITIONED and n != "bucket"
                 and not n.startswith("x-ignore-")]
        if extra:
            raise _policy_failed(f"Extra input fields: {extra[0]}")


async def _verify(ctx: Ctx, fields: dict[str, str], now: float) -> None:
    """Check the policy signature and that its key may write to this bucket."""
    policy = fields.get("policy")
    if "x-amz-signature" in fields:
        if fields.get("x-amz-algorithm") != sigv4.ALGORITHM:
            raise S3Error("InvalidArgument", "x-amz-algorithm must be AWS4-HMAC-SHA256")
        parts = fields.get("x-amz-credential", "").split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
            raise S3Error("InvalidArgument", "malformed x-amz-credential")
        access_key, given = parts[0], fields["x-amz-signature"].strip().lower()
    elif "signature" in fields or "awsaccesskeyid" in fields:
        for name in ("awsaccesskeyid", "signature"):
            if name not in fields:
                raise S3Error("InvalidArgument", f"Bucket POST must contain a field named '{name}'.",
                              extra={"ArgumentName": name})
        access_key, given = fields["awsaccesskeyid"], fields["signature"].strip()
    else:
        raise S3Error("AccessDenied", "anonymous POST uploads are not allowed: sign a policy")
    if policy is None:
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'policy'.",
                      extra={"ArgumentName": "policy"})
    identity = await ctx.gateway.keys.get(access_key)
    if identity is None:
        raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": access_key})
    if "x-amz-signature" in fields:
        key = sigv4.signing_key(identity.secret, parts[1], parts[2], parts[3])
        expected = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
    else:
        expected = base64.b64encode(hmac.new(identity.secret.encode(), policy.encode(),
                                             hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise S3Error("SignatureDoesNotMatch", extra={"AWSAccessKeyId": access_key})
    if not identity.allows(ctx.bucket_name, True):
        raise S3Error("AccessDenied", "this key may not write to this bucket")


async def _bounded(source: AsyncIterator[bytes], low: int, high: int) -> AsyncIterator[bytes]:
    total = 0
    async for piece in source:
        total += len(piece)
        if total > high:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size",
                          extra={"ProposedSize": str(total), "MaxSizeAllowed": str(high)})
        yield piece
    if total < low:
        raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size",
                      extra={"ProposedSize": str(total), "MinSizeAllowed": str(low)})


def _metadata(fields: dict[str, str], form: Form) -> tuple[dict[str, str], dict[str, str]]:
    http = {name: fields[name] for name in HTTP_METADATA_KEYS if fields.get(name)}
    if "content-type" not in http and form.file_type:
        http["content-type"] = form.file_type
    custom = {n[len(META_PREFIX):]: v for n, v in fields.items() if n.startswith(META_PREFIX)}
    if sum(len(k) + len(v) for k, v in custom.items()) > MAX_USER_METADATA:
        raise S3Error("MetadataTooLarge")
    return http, custom


def _redirect(url: str, bucket: str, key: str, etag: str) -> str:
    parts = urlsplit(url)
    query = urlencode({"bucket": bucket, "key": key, "etag": etag_header(etag)}, quote_via=quote)
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


async def post_object(ctx: Ctx) -> Response:
    req = ctx.req
    reader = FormReader(req.body().__aiter__(), form_boundary(req.header("content-type")))
    form = await read_fields(reader)
    fields = form.fields
    now = time.time()
    await _verify(ctx, fields, now)
    conditions = Conditions(parse_policy(fields["policy"], now))
    if "key" not in fields:
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'key'.  If it is "
                                         "specified, please check the order of the fields.",
                      extra={"ArgumentName": "key", "ArgumentValue": ""})
    filename = form.filename.replace("\\", "/").rsplit("/", 1)[-1]
    key = fields["key"].replace("${filename}", filename)
    if not key:
        raise S3Error("InvalidArgument", "User key must have a length greater than 0.")
    conditions.check({**fields, "bucket": ctx.bucket_name, "key": key})
    canned = fields.get("acl")
    if canned is not None:
        await acl.check_canned_object_acl(ctx, canned)
    http, custom = _metadata(fields, form)
    low, high = conditions.length_range or (0, MAX_SINGLE_PUT)
    info = await ctx.bucket.put(key, _bounded(reader.content(), low, min(high, MAX_SINGLE_PUT)),
                                http_metadata=http, custom_metadata=custom)
    # The rest of the form (fields after the file) is read and ignored, as S3 does.
    while await reader.next_part() is not None:
        async for _ in reader.content():
            pass
    host = req.header("host", "")
    location = f"http://{host}/{ctx.bucket_name}/{quote(key)}"
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        resp = Response(status=303)
        resp.set("Location", _redirect(redirect, ctx.bucket_name, key, info.etag))
    else:
        status = {"200": 200, "201": 201}.get(fields.get("success_action_status", ""), 204)
        resp = Response(status=status)
        if status == 201:
            resp.body = document("PostResponse", [("Location", location), ("Bucket", ctx.bucket_name),
                                                  ("Key", key), ("ETag", etag_header(info.etag))],
                                 namespace=False)
            resp.set("Content-Type", "application/xml")
        resp.set("Location", location)
    resp.set("ETag", etag_header(info.etag))
    return resp
