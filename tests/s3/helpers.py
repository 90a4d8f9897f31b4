"""Test helpers: turn botocore-signed requests into gateway `Request`s, and sign
aws-chunked bodies (botocore has no client for STREAMING-AWS4-HMAC-SHA256-PAYLOAD)."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from r2fs.s3.http import Request, parse_query
from r2fs.s3.sigv4 import EMPTY_SHA256


def request_from_parts(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> Request:
    parts = urlsplit(url)
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    hdrs = [(k.lower(), v) for k, v in headers.items()]
    if not any(k == "host" for k, _ in hdrs):
        hdrs.append(("host", parts.netloc))
    req = Request(method=method, raw_path=parts.path or "/", query_string=parts.query,
                  headers=hdrs, receive=receive)
    req.query = parse_query(parts.query)
    return req


def sign_chunks(key: bytes, amz_date: str, scope: str, seed: str, chunks: list[bytes],
                trailer: bytes | None = None) -> bytes:
    """Encode `chunks` (plus the final empty one) as a signed aws-chunked body."""
    out, previous = [], seed
    for data in [*chunks, b""]:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256,
                         hashlib.sha256(data).hexdigest()])
        previous = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out.append(b"%x;chunk-signature=%s\r\n" % (len(data), previous.encode()))
        out.append(data)
        if data:
            out.append(b"\r\n")
    if trailer is not None:
        out.append(trailer)
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous,
                         hashlib.sha256(trailer.replace(b"\r\n", b"\n")).hexdigest()])
        out.append(b"x-amz-trailer-signature:%s\r\n" %
                   hmac.new(key, sts.encode(), hashlib.sha256).hexdigest().encode())
    out.append(b"\r\n")
    return b"".join(out)
