"""SigV4 verification against AWS's published example and botocore's own signer."""

from __future__ import annotations

import calendar
import time

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from r2fs.s3 import sigv4
from r2fs.s3.chunked import ChunkedDecoder
from r2fs.s3.errors import S3Error

from .helpers import request_from_parts, sign_chunks

AK, SK = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE_TIME = calendar.timegm(time.strptime("20130524T000000Z", "%Y%m%dT%H%M%SZ"))


def _example_request(body: bytes, content_length: int = 66824):
    headers = {
        "Host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                         "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                         "x-amz-decoded-content-length;x-amz-storage-class,"
                         "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "Content-Length": str(content_length),
    }
    return request_from_parts("PUT", "http://s3.amazonaws.com/examplebucket/chunkObject.txt", headers, body)


AWS_EXAMPLE_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536 + b"\r\n"
    + b"400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + b"a" * 1024 + b"\r\n"
    + b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
)


async def _decode(req, ctx, mode=sigv4.STREAMING_SIGNED, length=None):
    dec = ChunkedDecoder(req.body().__aiter__(), mode, ctx, length)
    return b"".join([p async for p in dec]), dec


async def test_aws_published_streaming_example():
    req = _example_request(AWS_EXAMPLE_BODY)
    assert len(AWS_EXAMPLE_BODY) == 66824
    parsed = sigv4.parse(req, now=EXAMPLE_TIME)
    ctx = parsed.verify(SK)
    data, _ = await _decode(req, ctx, length=66560)
    assert data == b"a" * 66560


async def test_tampered_chunk_refused():
    body = AWS_EXAMPLE_BODY.replace(b"a" * 1024, b"a" * 1023 + b"b")
    req = _example_request(body)
    ctx = sigv4.parse(req, now=EXAMPLE_TIME).verify(SK)
    with pytest.raises(S3Error) as err:
        await _decode(req, ctx)
    assert err.value.code == "SignatureDoesNotMatch"


async def test_truncated_stream_refused():
    req = _example_request(AWS_EXAMPLE_BODY[:-60])
    ctx = sigv4.parse(req, now=EXAMPLE_TIME).verify(SK)
    with pytest.raises(S3Error) as err:
        await _decode(req, ctx)
    assert err.value.code in ("IncompleteBody", "SignatureDoesNotMatch")


async def test_signed_trailer_roundtrip():
    ctx = sigv4.SigningContext(AK, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request",
                               sigv4.signing_key(SK, "20130524", "us-east-1", "s3"), "00" * 32,
                               sigv4.STREAMING_SIGNED_TRAILER)
    body = sign_chunks(ctx.key, ctx.amz_date, ctx.scope, ctx.seed_signature, [b"x" * 5000, b"y" * 10],
                       trailer=b"x-amz-checksum-crc32:AAAAAA==\r\n")
    req = request_from_parts("PUT", "http://h/b/k", {"Content-Length": str(len(body))}, body)
    data, dec = await _decode(req, ctx, mode=sigv4.STREAMING_SIGNED_TRAILER)
    assert data == b"x" * 5000 + b"y" * 10
    assert dec.trailers == {"x-amz-checksum-crc32": "AAAAAA=="}


async def test_unsigned_trailer_decoding():
    body = b"5\r\nhello\r\n3\r\nabc\r\n0\r\nx-amz-checksum-sha256:xyz\r\n\r\n"
    req = request_from_parts("PUT", "http://h/b/k", {"Content-Length": str(len(body))}, body)
    data, dec = await _decode(req, None, mode=sigv4.STREAMING_UNSIGNED_TRAILER, length=8)
    assert data == b"helloabc" and dec.trailers["x-amz-checksum-sha256"] == "xyz"


@pytest.mark.parametrize("bad", [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhel"])
async def test_malformed_chunked_refused(bad):
    req = request_from_parts("PUT", "http://h/b/k", {"Content-Length": str(len(bad))}, bad)
    with pytest.raises(S3Error):
        await _decode(req, None, mode=sigv4.STREAMING_UNSIGNED_TRAILER)


def _botocore_signed(method, url, body=b"", headers=None, presign=False, expires=3600):
    creds = Credentials(AK, SK)
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    if presign:
        S3SigV4QueryAuth(creds, "s3", "auto", expires=expires).add_auth(req)
    else:
        S3SigV4Auth(creds, "s3", "auto").add_auth(req)
    prepared = req.prepare()
    return request_from_parts(method, prepared.url, dict(prepared.headers), body)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9000/bucket/some%20key/with%2Bplus~and%C3%A9",
    "http://127.0.0.1:9000/bucket?list-type=2&prefix=a%2Fb&delimiter=%2F",
    "http://bucket.localhost:9000/k?uploads",
])
def test_botocore_header_signature_verifies(url):
    req = _botocore_signed("PUT", url, b"payload")
    parsed = sigv4.parse(req)
    ctx = parsed.verify(SK)
    assert ctx.payload_hash == __import__("hashlib").sha256(b"payload").hexdigest()
    with pytest.raises(S3Error) as err:
        parsed.verify("wrong-secret")
    assert err.value.code == "SignatureDoesNotMatch"


def test_presigned_verifies_and_expires():
    req = _botocore_signed("GET", "http://127.0.0.1:9000/bucket/key", presign=True, expires=60)
    sigv4.parse(req).verify(SK)
    with pytest.raises(S3Error) as err:
        sigv4.parse(req, now=time.time() + 120)
    assert err.value.code == "AccessDenied"


def test_presign_expiry_over_seven_days_refused():
    req = _botocore_signed("GET", "http://127.0.0.1:9000/bucket/key", presign=True, expires=8 * 86400)
    with pytest.raises(S3Error) as err:
        sigv4.parse(req)
    assert err.value.code == "AccessDenied" and err.value.status == 403


def test_clock_skew_refused():
    req = _botocore_signed("GET", "http://127.0.0.1:9000/bucket/key")
    with pytest.raises(S3Error) as err:
        sigv4.parse(req, now=time.time() + 16 * 60)
    assert err.value.code == "RequestTimeTooSkewed"


def test_anonymous_is_none():
    assert sigv4.parse(request_from_parts("GET", "http://h/b/k", {})) is None


# --- property tests of the aws-chunked decoder -------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _split_request(body: bytes, cuts: list[int]):
    """A Request whose body arrives in the pieces given by `cuts` (as a network would)."""
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    pieces = [body[a:b] for a, b in zip(points, points[1:])]
    req = request_from_parts("PUT", "http://h/b/k", {"Content-Length": str(len(body))})
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in pieces]
    messages.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive():
        return messages.pop(0)
    req.receive = receive
    return req


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
async def test_signed_chunked_any_split(chunks, cuts):
    ctx = sigv4.SigningContext(AK, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request",
                               sigv4.signing_key(SK, "20130524", "us-east-1", "s3"), "ab" * 32,
                               sigv4.STREAMING_SIGNED)
    body = sign_chunks(ctx.key, ctx.amz_date, ctx.scope, ctx.seed_signature, chunks)
    data, _ = await _decode(_split_request(body, cuts), ctx, length=sum(map(len, chunks)))
    assert data == b"".join(chunks)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(max_size=400), cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=5))
async def test_chunked_garbage_only_raises_s3_errors(garbage, cuts):
    try:
        await _decode(_split_request(garbage, cuts), None, mode=sigv4.STREAMING_UNSIGNED_TRAILER)
    except S3Error:
        pass


def test_pure_python_crcs_match_awscrt():
    """The fallback used without awscrt computes the same values, also when chained."""
    awscrt = pytest.importorskip("awscrt.checksums")
    from r2fs.s3 import checksums
    data = bytes(range(256)) * 3 + b"tail"
    for fast, slow in ((awscrt.crc32c, checksums._py_crc32c), (awscrt.crc64nvme, checksums._py_crc64nvme)):
        assert slow(data) == fast(data)
        assert slow(data[100:], slow(data[:100])) == fast(data)
