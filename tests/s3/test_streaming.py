"""Payload modes on the wire against the real gateway: signed aws-chunked,
unsigned aws-chunked with trailers, bad signatures / digests / truncation --
and that a refused upload leaves no object behind."""

from __future__ import annotations

import base64
import hashlib
import socket
import zlib

import pytest
from botocore.exceptions import ClientError

from .helpers import error_code, make_signer, seed_signature, sign_chunks, signed_request

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def _absent(s3, bucket, key) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def test_boto3_over_tls_sends_trailer_mode(gateway, bucket_name):
    """Guard: the https client really exercises STREAMING-UNSIGNED-PAYLOAD-TRAILER."""
    s3 = gateway.client(tls=True)
    seen = []
    s3.meta.events.register("before-send.s3.PutObject",
                            lambda request, **kw: seen.append(dict(request.headers)))
    s3.put_object(Bucket=bucket_name, Key="k", Body=b"hello trailer")
    assert seen[0]["x-amz-content-sha256"] == UNSIGNED_TRAILER.encode() or \
        seen[0]["x-amz-content-sha256"] == UNSIGNED_TRAILER
    assert s3.get_object(Bucket=bucket_name, Key="k")["Body"].read() == b"hello trailer"


def _chunked_put(gateway, bucket, key, chunks, *, tamper=False, trailer=None, mode=SIGNED):
    decoded = sum(len(c) for c in chunks)
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded)}
    if trailer:
        headers["x-amz-trailer"] = trailer.split(b":")[0].decode()
    # The seed signature depends on Content-Length, so encode once to learn the length.
    if mode == SIGNED:
        probe = sign_chunks(b"k" * 32, "20200101T000000Z", "s", "0" * 64, chunks)
    else:
        probe = _unsigned_body(chunks, trailer)
    headers["Content-Length"] = str(len(probe))
    # Sign headers only (body=b"" so botocore does not hash it), then send the real body.
    import requests
    from botocore.awsrequest import AWSRequest
    url = f"{gateway.endpoint}/{bucket}/{key}"
    req = AWSRequest(method="PUT", url=url, headers=headers)
    make_signer(gateway.admin, mode).add_auth(req)
    sent = dict(req.headers)
    if mode == SIGNED:
        amz_date = sent["X-Amz-Date"]
        scope = f"{amz_date[:8]}/auto/s3/aws4_request"
        from r2fs.s3.sigv4 import signing_key
        body = sign_chunks(signing_key(gateway.admin.secret, amz_date[:8], "auto", "s3"), amz_date, scope,
                           seed_signature(sent["Authorization"]), chunks)
    else:
        body = probe
    if tamper:
        body = body.replace(b"A" * 10, b"B" * 10, 1)
    return requests.put(url, headers=sent, data=body)


def _unsigned_body(chunks, trailer):
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n"
    return out + (trailer + b"\r\n" if trailer else b"") + b"\r\n"


def test_signed_chunked_upload(gateway, s3, bucket_name):
    chunks = [b"A" * 65536, b"B" * 65536, b"C" * 100]
    resp = _chunked_put(gateway, bucket_name, "signed", chunks)
    assert resp.status_code == 200, resp.text
    assert s3.get_object(Bucket=bucket_name, Key="signed")["Body"].read() == b"".join(chunks)


def test_signed_chunked_tampered_refused(gateway, s3, bucket_name):
    resp = _chunked_put(gateway, bucket_name, "tampered", [b"A" * 65536, b"B" * 100], tamper=True)
    assert resp.status_code == 403 and error_code(resp) == "SignatureDoesNotMatch"
    assert _absent(s3, bucket_name, "tampered")


def _crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_unsigned_trailer_checksum_verified(gateway, s3, bucket_name):
    chunks = [b"hello ", b"world"]
    good = b"x-amz-checksum-crc32:" + _crc32_b64(b"hello world").encode()
    resp = _chunked_put(gateway, bucket_name, "good", chunks, trailer=good, mode=UNSIGNED_TRAILER)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-amz-checksum-crc32"] == _crc32_b64(b"hello world")
    bad = b"x-amz-checksum-crc32:" + _crc32_b64(b"hello worle").encode()
    resp = _chunked_put(gateway, bucket_name, "bad", chunks, trailer=bad, mode=UNSIGNED_TRAILER)
    assert resp.status_code == 400 and error_code(resp) == "BadDigest"
    assert _absent(s3, bucket_name, "bad")


def test_sha256_trailer_and_header_checksum(gateway, s3, bucket_name):
    data = b"payload for sha256"
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    resp = _chunked_put(gateway, bucket_name, "sha", [data], mode=UNSIGNED_TRAILER,
                        trailer=b"x-amz-checksum-sha256:" + digest.encode())
    assert resp.status_code == 200, resp.text
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket_name, Key="hdr", Body=data, ChecksumSHA256=base64.b64encode(b"\0" * 32).decode())
    assert err.value.response["Error"]["Code"] == "BadDigest"
    assert _absent(s3, bucket_name, "hdr")


def test_content_md5_checked(s3, bucket_name):
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket_name, Key="md5", Body=b"data", ContentMD5=wrong)
    assert err.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket_name, Key="md5", Body=b"data", ContentMD5="not-base64!")
    assert err.value.response["Error"]["Code"] == "InvalidDigest"
    assert _absent(s3, bucket_name, "md5")
    right = base64.b64encode(hashlib.md5(b"data").digest()).decode()
    s3.put_object(Bucket=bucket_name, Key="md5", Body=b"data", ContentMD5=right)


def test_signed_payload_hash_mismatch(gateway, s3, bucket_name):
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "PUT", f"/{bucket_name}/h",
                             body=b"real body", payload_hash=hashlib.sha256(b"other body").hexdigest())
    assert resp.status_code == 400 and error_code(resp) == "XAmzContentSHA256Mismatch"
    assert _absent(s3, bucket_name, "h")


def _raw(gateway, data: bytes) -> bytes:
    """Send raw bytes, half-close, and return what comes back up to the end of the
    response head (or the connection closing)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while b"\r\n\r\n" not in out:
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
        return out


def _raw_put(gateway, bucket, key, length: int, body: bytes) -> bytes:
    """A signed PUT promising `length` bytes, sending `body`, then half-closing."""
    from botocore.awsrequest import AWSRequest
    url = f"{gateway.endpoint}/{bucket}/{key}"
    req = AWSRequest(method="PUT", url=url, headers={"Content-Length": str(length)})
    make_signer(gateway.admin, "UNSIGNED-PAYLOAD").add_auth(req)
    head = f"PUT /{bucket}/{key} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    head += f"Host: 127.0.0.1:{gateway.port}\r\nConnection: close\r\n\r\n"
    return _raw(gateway, head.encode() + body)


def test_short_body_and_disconnect_leave_nothing(gateway, s3, bucket_name):
    assert _raw_put(gateway, bucket_name, "whole", 5000, b"x" * 5000).startswith(b"HTTP/1.1 200")
    assert s3.head_object(Bucket=bucket_name, Key="whole")["ContentLength"] == 5000
    out = _raw_put(gateway, bucket_name, "partial", 1_000_000, b"x" * 5000)
    assert out == b"" or out.startswith(b"HTTP/1.1 400"), out[:200]
    assert _absent(s3, bucket_name, "partial")


def test_garbage_requests_get_errors(gateway):
    for junk in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 nonsense\r\n\r\n",
                 b"GET /%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n"):
        out = _raw(gateway, junk)
        assert out == b"" or out.startswith(b"HTTP/1.1 4"), out[:200]


def test_xml_documents_are_verified_too(gateway, s3, bucket_name):
    """DeleteObjects' body is checked against the signed SHA-256 and Content-MD5 like any payload."""
    s3.put_object(Bucket=bucket_name, Key="keep", Body=b"1")
    doc = b"<Delete><Object><Key>keep</Key></Object></Delete>"
    signed_for = b"<Delete><Object><Key>other</Key></Object></Delete>"
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "POST", f"/{bucket_name}?delete", body=doc,
                             payload_hash=hashlib.sha256(signed_for).hexdigest())
    assert resp.status_code == 400 and error_code(resp) == "XAmzContentSHA256Mismatch"
    wrong_md5 = base64.b64encode(hashlib.md5(signed_for).digest()).decode()
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "POST", f"/{bucket_name}?delete", body=doc,
                             headers={"Content-MD5": wrong_md5})
    assert resp.status_code == 400 and error_code(resp) == "BadDigest"
    assert s3.head_object(Bucket=bucket_name, Key="keep")["ContentLength"] == 1
