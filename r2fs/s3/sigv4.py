"""AWS Signature Version 4 verification: Authorization header and presigned URLs.

The gateway recomputes the signature from what the client sent (the raw path,
the canonical query, the signed headers, the declared payload hash) with the
secret it stores, and compares in constant time. Parsing and verifying are
separate steps because looking a secret up is asynchronous (LMDB) while the
maths is not. The resulting `SigningContext` carries what aws-chunked bodies
need to verify each chunk's signature (signing key, scope, seed signature).
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .errors import S3Error
from .http import Request

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
MAX_SKEW = 15 * 60
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


def hmac_sha256(key: bytes, msg: str | bytes) -> bytes:
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, hashlib.sha256).digest()


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The day's derived key (cached: it changes once a day per key and region)."""
    k = hmac_sha256(("AWS4" + secret).encode(), date)
    k = hmac_sha256(k, region)
    k = hmac_sha256(k, service)
    return hmac_sha256(k, "aws4_request")


def parse_amz_date(value: str) -> float:
    """Seconds since the epoch of a `YYYYMMDDTHHMMSSZ` timestamp (by hand: strptime
    costs more than the whole signature check)."""
    try:
        if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not (value[:8] + value[9:15]).isdigit():
            raise ValueError(value)
        fields = (int(value[0:4]), int(value[4:6]), int(value[6:8]),
                  int(value[9:11]), int(value[11:13]), int(value[13:15]))
        if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60
                and fields[5] < 61):
            raise ValueError(value)
        return float(calendar.timegm(fields + (0, 0, 0)))
    except (ValueError, TypeError):
        raise S3Error("AccessDenied", f"invalid X-Amz-Date {value!r}") from None


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(query_string: str, *, exclude: str | None = None) -> str:
    """Query parameters re-encoded the SigV4 way and sorted by key, then value."""
    pairs = []
    for pair in query_string.split("&"):
        if not pair:
            continue
        k, _, v = pair.partition("=")
        k, v = unquote(k), unquote(v)
        if exclude is not None and k == exclude:
            continue
        pairs.append((_uri_encode(k), _uri_encode(v)))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_uris(raw_path: str) -> list[str]:
    """Candidate canonical URIs: the path exactly as sent (what botocore and the
    JS SDK sign for S3), then the strictly re-encoded form (clients that encode
    fewer characters on the wire than they sign)."""
    strict = quote(unquote(raw_path), safe="/~")
    return [raw_path] if strict == raw_path else [raw_path, strict]


def _trim(value: str) -> str:
    return " ".join(value.split())


@dataclass
class SigningContext:
    """What a verified request leaves for later stages (chunk signatures)."""

    access_key: str
    amz_date: str
    scope: str
    key: bytes
    seed_signature: str
    payload_hash: str  # hex digest, or one of the UNSIGNED/STREAMING constants

    def chunk_string_to_sign(self, previous: str, chunk_sha256_hex: str) -> str:
        return "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope,
                          previous, EMPTY_SHA256, chunk_sha256_hex])

    def trailer_string_to_sign(self, previous: str, trailer_sha256_hex: str) -> str:
        return "\n".join(["AWS4-HMAC-SHA256-TRAILER", self.amz_date, self.scope,
                          previous, trailer_sha256_hex])

    def sign(self, string_to_sign: str) -> str:
        return hmac.new(self.key, string_to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass
class ParsedAuth:
    """A SigV4 request before its secret is known."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str
    amz_date: str
    payload_hash: str
    presigned: bool
    request: Request

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    def canonical_requests(self) -> list[str]:
        req = self.request
        query = canonical_query(req.query_string, exclude="X-Amz-Signature" if self.presigned else None)
        lines = []
        for name in self.signed_headers:
            values = req.headers_all(name)
            if not values and name != "host":
                raise S3Error("AccessDenied", f"signed header {name!r} is missing from the request")
            lines.append(f"{name}:{','.join(_trim(v) for v in values)}")
        headers = "\n".join(lines) + "\n"
        signed = ";".join(self.signed_headers)
        return ["\n".join([req.method, uri, query, headers, signed, self.payload_hash])
                for uri in canonical_uris(req.raw_path)]

    def verify(self, secret: str) -> SigningContext:
        """Raise SignatureDoesNotMatch unless the signature is right (constant-time compare).

        Header values arrive as bytes (kept as latin-1 text). A non-ASCII value is
        signed by some clients as the UTF-8 of the text they sent as latin-1
        (botocore), by others as the very bytes they sent (UTF-8 on the wire):
        both readings are tried."""
        key = signing_key(secret, self.date, self.region, self.service)
        for canonical in self.canonical_requests():
            for encoded in _encodings(canonical):
                expected = hmac.digest(key, self._string_to_sign(encoded).encode(), "sha256").hex()
                if hmac.compare_digest(expected.encode(), self.signature.encode()):
                    return SigningContext(self.access_key, self.amz_date, self.scope, key,
                                          self.signature, self.payload_hash)
        raise S3Error("SignatureDoesNotMatch", extra={"AWSAccessKeyId": self.access_key})

    def _string_to_sign(self, canonical: bytes) -> str:
        return "\n".join([ALGORITHM, self.amz_date, self.scope, hashlib.sha256(canonical).hexdigest()])


def _encodings(canonical: str) -> list[bytes]:
    """The canonical request as bytes: UTF-8 of the text, and for non-ASCII text
    also the wire bytes themselves (the text is latin-1 decoded)."""
    utf8 = canonical.encode("utf-8")
    if canonical.isascii():
        return [utf8]
    try:
        return [utf8, canonical.encode("latin-1")]
    except UnicodeEncodeError:
        return [utf8]


def _parse_credential(value: str, error: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or len(parts[1]) != 8 or not parts[0]:
        raise S3Error(error, f"malformed credential {value!r}")
    return parts[0], parts[1], parts[2], parts[3]


def _check_skew(request_time: float, now: float) -> None:
    if abs(now - request_time) > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed", extra={
            "RequestTime": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(request_time)),
            "ServerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "MaxAllowedSkewMilliseconds": str(MAX_SKEW * 1000)})


def parse(request: Request, *, now: float | None = None) -> ParsedAuth | None:
    """The SigV4 parameters of a request, or None for an anonymous request.

    Checks everything that does not need the secret: shape, algorithm, clock
    skew, presigned expiry.
    """
    now = time.time() if now is None else now
    auth = request.header("authorization")
    if auth is not None and auth.strip():  # an empty header is no credentials: anonymous (403 later)
        return _parse_header(request, auth, now)
    if "X-Amz-Signature" in request.query or "X-Amz-Credential" in request.query:
        return _parse_query(request, now)
    if "AWSAccessKeyId" in request.query or "Signature" in request.query:
        raise S3Error("AccessDenied", "Signature Version 2 is not supported; use SigV4")
    return None


def _parse_header(request: Request, auth: str, now: float) -> ParsedAuth:
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS":
            raise S3Error("AccessDenied", "Signature Version 2 is not supported; use SigV4")
        raise S3Error("AuthorizationHeaderMalformed", f"unsupported authorization type {algorithm!r}")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        k, sep, v = item.strip().partition("=")
        if sep:
            fields[k.strip()] = v.strip()
    try:
        credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError as missing:
        raise S3Error("AuthorizationHeaderMalformed", f"the authorization header lacks {missing.args[0]}") from None
    access_key, date, region, service = _parse_credential(credential, "AuthorizationHeaderMalformed")
    amz_date = request.header("x-amz-date")
    if amz_date is None:
        http_date = request.header("date")
        if http_date is None:
            raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
        from email.utils import parsedate_to_datetime
        try:
            ts = parsedate_to_datetime(http_date).timestamp()
        except (TypeError, ValueError):
            raise S3Error("AccessDenied", "invalid Date header") from None
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))
    _check_skew(parse_amz_date(amz_date), now)
    if amz_date[:8] != date:
        raise S3Error("SignatureDoesNotMatch", "credential date does not match x-amz-date")
    payload_hash = request.header("x-amz-content-sha256")
    if payload_hash is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    payload_hash = payload_hash.strip()
    _check_payload_hash(payload_hash)
    headers = [h.strip().lower() for h in signed.split(";") if h.strip()]
    if "host" not in headers:
        raise S3Error("AccessDenied", "the host header must be signed")
    return ParsedAuth(access_key, date, region, service, headers, signature.lower(), amz_date,
                      payload_hash, False, request)


def _parse_query(request: Request, now: float) -> ParsedAuth:
    q = request.query
    err = "AuthorizationQueryParametersError"
    if q.get("X-Amz-Algorithm") != ALGORITHM:
        raise S3Error(err, "X-Amz-Algorithm must be AWS4-HMAC-SHA256")
    try:
        credential, amz_date = q["X-Amz-Credential"], q["X-Amz-Date"]
        signed, signature, expires = q["X-Amz-SignedHeaders"], q["X-Amz-Signature"], q["X-Amz-Expires"]
    except KeyError as missing:
        raise S3Error(err, f"presigned URL lacks {missing.args[0]}") from None
    access_key, date, region, service = _parse_credential(credential, err)
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_PRESIGN_EXPIRES:
        raise S3Error("AccessDenied", "X-Amz-Expires must be a number of seconds from 1 to 604800 (7 days)")
    start = parse_amz_date(amz_date)
    if now > start + int(expires):
        raise S3Error("AccessDenied", "Request has expired", extra={
            "X-Amz-Expires": expires,
            "Expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + int(expires))),
            "ServerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})
    if start - now > MAX_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet")
    if amz_date[:8] != date:
        raise S3Error("SignatureDoesNotMatch", "credential date does not match X-Amz-Date")
    payload_hash = q.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD)
    _check_payload_hash(payload_hash)
    headers = [h.strip().lower() for h in signed.split(";") if h.strip()]
    return ParsedAuth(access_key, date, region, service, headers, signature.lower(), amz_date,
                      payload_hash, True, request)


def _check_payload_hash(value: str) -> None:
    if value in (UNSIGNED_PAYLOAD, *STREAMING_MODES):
        return
    if value.startswith("STREAMING-"):
        raise S3Error("NotImplemented", f"payload mode {value} is not supported")
    if _HEX_SHA256.fullmatch(value) is None:
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a streaming mode, "
                                         "or the hex SHA-256 of the payload")
