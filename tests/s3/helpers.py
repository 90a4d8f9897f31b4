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


def signed_request(endpoint: str, keys, method: str, path: str, *, headers: dict[str, str] | None = None,
                   body: bytes = b"", payload_hash: str | None = None, host: str | None = None,
                   timestamp: str | None = None):
    """Sign with botocore's own SigV4 signer and send with `requests`.

    `payload_hash` sets x-amz-content-sha256 (e.g. a STREAMING-* mode); `host`
    overrides the Host header (virtual-host-style addressing); `timestamp`
    signs as of another time (clock-skew tests). Returns (response, Authorization).
    """
    import datetime
    from unittest import mock

    import requests
    from botocore.awsrequest import AWSRequest

    url = endpoint + path
    sign_url = url if host is None else url.replace(urlsplit(url).netloc, host)
    req = AWSRequest(method=method, url=sign_url, data=body, headers=dict(headers or {}))
    signer = make_signer(keys, payload_hash)
    if timestamp is not None:
        fixed = datetime.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ")
        with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
            signer.add_auth(req)
    else:
        signer.add_auth(req)
    send_headers = dict(req.headers)
    if host is not None:
        send_headers["Host"] = host
    resp = requests.request(method, url, headers=send_headers, data=body, verify=False)
    return resp, send_headers["Authorization"]


def seed_signature(authorization: str) -> str:
    return authorization.rsplit("Signature=", 1)[1]


def error_code(resp) -> str:
    import re
    m = re.search(r"<Code>([^<]+)</Code>", resp.text)
    return m.group(1) if m else f"(status {resp.status_code}, no code)"


def make_signer(keys, payload_hash: str | None = None):
    """botocore's S3 SigV4 signer, optionally declaring a given x-amz-content-sha256
    (botocore itself would replace it with the body's hash)."""
    from botocore.auth import S3SigV4Auth
    from botocore.credentials import Credentials

    class Signer(S3SigV4Auth):
        def payload(self, request):
            return payload_hash if payload_hash is not None else super().payload(request)

    return Signer(Credentials(keys.id, keys.secret), "s3", "auto")


class DataPattern:
    """`size` reproducible, non-repeating bytes produced piece by piece (never all in memory)."""

    PIECE = 1024 * 1024

    def __init__(self, size: int, seed: int = 1) -> None:
        import os
        self.size, self.seed = size, seed
        self._pool = os.urandom(self.PIECE + 4096)
        md5 = hashlib.md5()
        for piece in self.pieces():
            md5.update(piece)
        self.md5 = md5.hexdigest()

    def pieces(self):
        done, n = 0, 0
        while done < self.size:
            take = min(self.PIECE, self.size - done)
            off = (n * 131) % 4096
            yield n.to_bytes(8, "little") + self._pool[off + 8: off + take]
            done += take
            n += 1

    def reader(self):
        """A file-like view (read + len), so HTTP clients stream it with a Content-Length."""
        pattern = self

        class Reader:
            def __init__(self) -> None:
                self._it = pattern.pieces()
                self._buf = b""
                self.len = pattern.size

            def __len__(self) -> int:
                return pattern.size

            def read(self, n: int = -1) -> bytes:
                while (n < 0 or len(self._buf) < n) and self._it is not None:
                    piece = next(self._it, None)
                    if piece is None:
                        self._it = None
                    else:
                        self._buf += piece
                out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
                return out

        return Reader()
