"""What S3 clients and conformance suites expect (issue 16), against the real gateway."""

from __future__ import annotations

import base64
import email.header
import hashlib
import socket
import uuid
import zlib
from urllib.parse import quote

import pytest
import requests
from botocore.exceptions import ClientError

from .helpers import error_code, signed_request

MiB = 1024 * 1024


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


# --- buckets -----------------------------------------------------------------------------


def test_delete_bucket_with_only_open_uploads_aborts_them(s3):
    name = "t-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    uid = s3.create_multipart_upload(Bucket=name, Key="k")["UploadId"]
    s3.upload_part(Bucket=name, Key="k", UploadId=uid, PartNumber=1, Body=b"part")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as err:
        s3.head_bucket(Bucket=name)
    assert status(err.value) == 404
    s3.create_bucket(Bucket=name)  # the same name again: no upload survived
    try:
        assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    finally:
        s3.delete_bucket(Bucket=name)


def test_list_buckets_pages(gateway, s3):
    tag = uuid.uuid4().hex[:8]
    names = [f"lb-{tag}-{i}" for i in range(3)]
    for n in names:
        s3.create_bucket(Bucket=n)
    try:
        seen, token = [], None
        while True:
            kw = {"MaxBuckets": 2, "Prefix": f"lb-{tag}-"}
            if token:
                kw["ContinuationToken"] = token
            page = s3.list_buckets(**kw)
            assert len(page["Buckets"]) <= 2
            seen += [b["Name"] for b in page["Buckets"]]
            token = page.get("ContinuationToken")
            if not token:
                break
        assert seen == names
        everything = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert set(names) <= set(everything) and "ContinuationToken" not in s3.list_buckets()
        for bad in ("0", "10001", "x"):
            resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET", f"/?max-buckets={bad}")
            assert resp.status_code == 400 and error_code(resp) == "InvalidArgument"
    finally:
        for n in names:
            s3.delete_bucket(Bucket=n)


@pytest.mark.parametrize("bad", ["ab", "a..b", "a.-b", "a-.b", ".ab", "ab.", "192.168.5.4", "Ab-c",
                                 "a_b", "xn--abc", "a" * 64])
def test_bucket_name_rules(s3, bad):
    with pytest.raises(ClientError) as err:
        s3.create_bucket(Bucket=bad)
    assert code(err.value) == "InvalidBucketName"


def test_dotted_bucket_names_and_virtual_hosts(gateway, s3):
    dotted = f"a.b-{uuid.uuid4().hex[:6]}.c"
    s3.create_bucket(Bucket=dotted)
    try:
        s3.put_object(Bucket=dotted, Key="k", Body=b"dots")
        assert s3.get_object(Bucket=dotted, Key="k")["Body"].read() == b"dots"
        s3.delete_object(Bucket=dotted, Key="k")
    finally:
        s3.delete_bucket(Bucket=dotted)
    plain = "vh-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=plain)
    try:
        host = f"{plain}.localhost:{gateway.port}"
        resp, _ = signed_request(gateway.endpoint, gateway.admin, "PUT", "/obj", body=b"vhost", host=host)
        assert resp.status_code == 200, resp.text
        resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET", "/obj", host=host)
        assert resp.content == b"vhost"
        assert s3.get_object(Bucket=plain, Key="obj")["Body"].read() == b"vhost"
        s3.delete_object(Bucket=plain, Key="obj")
    finally:
        s3.delete_bucket(Bucket=plain)


# --- multipart ---------------------------------------------------------------------------


def _two_part_upload(s3, bucket, key, **create):
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    data = [b"a" * (5 * MiB), b"tail"]
    parts = []
    for i, d in enumerate(data, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i, Body=d,
                           **({"ChecksumAlgorithm": create["ChecksumAlgorithm"]} if create else {}))
        part = {"PartNumber": i, "ETag": r["ETag"]}
        if create:
            part["ChecksumCRC32"] = r["ChecksumCRC32"]
        parts.append(part)
    return uid, data, parts


def test_complete_twice_same_etag(s3, bucket_name):
    uid, data, parts = _two_part_upload(s3, bucket_name, "twice")
    first = s3.complete_multipart_upload(Bucket=bucket_name, Key="twice", UploadId=uid,
                                         MultipartUpload={"Parts": parts})
    again = s3.complete_multipart_upload(Bucket=bucket_name, Key="twice", UploadId=uid,
                                         MultipartUpload={"Parts": parts})
    assert again["ETag"] == first["ETag"] and again["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_object(Bucket=bucket_name, Key="twice")["Body"].read() == b"".join(data)
    s3.put_object(Bucket=bucket_name, Key="twice", Body=b"new")  # the upload's object is gone
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="twice", UploadId=uid,
                                     MultipartUpload={"Parts": parts})
    assert code(err.value) == "NoSuchUpload"


def test_resent_part_listed_twice(s3, bucket_name):
    """A part uploaded twice (both ETags listed, in upload order): the last counts."""
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="resend")["UploadId"]
    first = s3.upload_part(Bucket=bucket_name, Key="resend", UploadId=uid, PartNumber=1, Body=b"B" * 8)
    last = s3.upload_part(Bucket=bucket_name, Key="resend", UploadId=uid, PartNumber=1, Body=b"A" * 8)
    s3.complete_multipart_upload(Bucket=bucket_name, Key="resend", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 1, "ETag": last["ETag"]}]})
    assert s3.get_object(Bucket=bucket_name, Key="resend")["Body"].read() == b"A" * 8
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="order")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket_name, Key="order", UploadId=uid, PartNumber=1, Body=b"x" * (5 * MiB))
    e2 = s3.upload_part(Bucket=bucket_name, Key="order", UploadId=uid, PartNumber=2, Body=b"y")
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="order", UploadId=uid, MultipartUpload={"Parts": [
            {"PartNumber": 2, "ETag": e2["ETag"]}, {"PartNumber": 1, "ETag": e1["ETag"]}]})
    assert code(err.value) == "InvalidPartOrder"


def test_complete_if_match_missing_key_is_404(s3, bucket_name):
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="cond")["UploadId"]
    e = s3.upload_part(Bucket=bucket_name, Key="cond", UploadId=uid, PartNumber=1, Body=b"x")["ETag"]
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="cond", UploadId=uid, IfMatch='"abc"',
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    assert code(err.value) == "NoSuchKey" and status(err.value) == 404
    s3.put_object(Bucket=bucket_name, Key="cond", Body=b"exists")
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="cond", UploadId=uid, IfNoneMatch="*",
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    assert code(err.value) == "PreconditionFailed"


def test_composite_checksum(s3, bucket_name):
    uid, data, parts = _two_part_upload(s3, bucket_name, "ck", ChecksumAlgorithm="CRC32")
    want = base64.b64encode(zlib.crc32(b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in parts))
                            .to_bytes(4, "big")).decode() + "-2"
    listed = s3.list_parts(Bucket=bucket_name, Key="ck", UploadId=uid)["Parts"]
    assert [p["ChecksumCRC32"] for p in listed] == [crc32_b64(d) for d in data]
    done = s3.complete_multipart_upload(Bucket=bucket_name, Key="ck", UploadId=uid, ChecksumCRC32=want,
                                        MultipartUpload={"Parts": parts})
    assert done["ChecksumCRC32"] == want
    head = s3.head_object(Bucket=bucket_name, Key="ck", ChecksumMode="ENABLED")
    got = s3.get_object(Bucket=bucket_name, Key="ck", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == want and got["ResponseMetadata"]["HTTPHeaders"]["x-amz-checksum-crc32"] == want
    assert got["Body"].read() == b"".join(data)
    # a wrong per-part value in Complete, and a wrong whole-object claim
    uid, _, parts = _two_part_upload(s3, bucket_name, "ck2", ChecksumAlgorithm="CRC32")
    bad = [dict(parts[0], ChecksumCRC32=crc32_b64(b"other")), parts[1]]
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="ck2", UploadId=uid, MultipartUpload={"Parts": bad})
    assert code(err.value) == "InvalidPart"
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="ck2", UploadId=uid, ChecksumCRC32="AAAAAA==-2",
                                     MultipartUpload={"Parts": parts})
    assert code(err.value) == "BadDigest"


def test_malformed_checksum_is_invalid_request(gateway, bucket_name):
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "PUT", f"/{bucket_name}/bad", body=b"data",
                             headers={"x-amz-checksum-crc32": "not!base64"})
    assert resp.status_code == 400 and error_code(resp) == "InvalidRequest", resp.text
    assert "x-amz-checksum-crc32" in resp.text


# --- reads -------------------------------------------------------------------------------


def test_get_by_part_number(s3, bucket_name):
    uid, data, parts = _two_part_upload(s3, bucket_name, "mp")
    s3.complete_multipart_upload(Bucket=bucket_name, Key="mp", UploadId=uid, MultipartUpload={"Parts": parts})
    for n, d in enumerate(data, 1):
        got = s3.get_object(Bucket=bucket_name, Key="mp", PartNumber=n)
        assert got["PartsCount"] == 2 and got["ContentLength"] == len(d) and got["Body"].read() == d
        head = s3.head_object(Bucket=bucket_name, Key="mp", PartNumber=n)
        assert head["PartsCount"] == 2 and head["ContentLength"] == len(d)
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket_name, Key="mp", PartNumber=3)
    assert code(err.value) == "InvalidPart"
    put = s3.put_object(Bucket=bucket_name, Key="single", Body=b"whole")
    got = s3.get_object(Bucket=bucket_name, Key="single", PartNumber=1)
    assert got["Body"].read() == b"whole" and got["ETag"] == put["ETag"]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket_name, Key="single", PartNumber=2)
    assert code(err.value) == "InvalidPart"


def test_304_carries_etag_and_last_modified(s3, bucket_name):
    put = s3.put_object(Bucket=bucket_name, Key="k", Body=b"v")
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as err:
            call(Bucket=bucket_name, Key="k", IfNoneMatch=put["ETag"])
        headers = err.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert status(err.value) == 304 and headers["etag"] == put["ETag"] and "last-modified" in headers


# --- conditional writes ------------------------------------------------------------------


def test_conditional_put(s3, bucket_name):
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket_name, Key="c", Body=b"1", IfMatch='"0123"')
    assert code(err.value) == "NoSuchKey" and status(err.value) == 404
    first = s3.put_object(Bucket=bucket_name, Key="c", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket_name, Key="c", Body=b"2", IfNoneMatch="*")
    assert code(err.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket_name, Key="c", Body=b"2", IfNoneMatch=first["ETag"])
    assert code(err.value) == "PreconditionFailed"
    s3.put_object(Bucket=bucket_name, Key="c", Body=b"2", IfNoneMatch='"not-it"')
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket_name, Key="c", Body=b"3", IfMatch=first["ETag"])
    assert code(err.value) == "PreconditionFailed" and status(err.value) == 412
    now = s3.head_object(Bucket=bucket_name, Key="c")["ETag"]
    s3.put_object(Bucket=bucket_name, Key="c", Body=b"3", IfMatch=now)
    assert s3.get_object(Bucket=bucket_name, Key="c")["Body"].read() == b"3"


# --- presigned URLs and auth -------------------------------------------------------------


def test_presigned_expires_out_of_range(gateway, s3, bucket_name):
    s3.put_object(Bucket=bucket_name, Key="p", Body=b"v")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket_name, "Key": "p"}, ExpiresIn=60)
    assert requests.get(url).content == b"v"
    for bad in ("0", "-7", "604801", "abc"):
        resp = requests.get(url.replace("X-Amz-Expires=60", f"X-Amz-Expires={bad}"))
        assert resp.status_code == 403 and error_code(resp) == "AccessDenied", bad


def _read_response(sock: socket.socket, pending: bytearray) -> str:
    """One HTTP response (head, and body by Content-Length) from `sock`."""
    while b"\r\n\r\n" not in pending:
        data = sock.recv(65536)
        if not data:
            break
        pending += data
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            break
        rest += data
    pending[:] = rest[length:]
    return (head + b"\r\n\r\n" + rest[:length]).decode("latin-1")


def _raw_put_with_expect(gateway, bucket: str, key: str, body: bytes, *, break_signature: bool):
    """Send only the head of a signed PUT with Expect: 100-continue; return the first
    response, and then (if it was 100) the final one after sending the body."""
    from botocore.awsrequest import AWSRequest

    from .helpers import make_signer

    url = f"{gateway.endpoint}/{bucket}/{key}"
    req = AWSRequest(method="PUT", url=url, data=body, headers={"Expect": "100-continue"})
    make_signer(gateway.admin).add_auth(req)
    headers = dict(req.headers)
    if break_signature:
        headers["Authorization"] = headers["Authorization"][:-4] + "0000"
    head = f"PUT /{bucket}/{key} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + f"Content-Length: {len(body)}\r\n\r\n"
    pending = bytearray()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(head.encode())
        first = _read_response(sock, pending)
        final = None
        if first.startswith("HTTP/1.1 100"):
            sock.sendall(body)
            final = _read_response(sock, pending)
    return first, final


def test_expect_100_continue_checks_auth_first(gateway, s3, bucket_name):
    body = b"z" * 100000
    first, _ = _raw_put_with_expect(gateway, bucket_name, "e", body, break_signature=True)
    assert first.startswith("HTTP/1.1 403 Forbidden") and "SignatureDoesNotMatch" in first
    first, final = _raw_put_with_expect(gateway, bucket_name, "e", body, break_signature=False)
    assert first.startswith("HTTP/1.1 100"), first
    assert final is not None and final.startswith("HTTP/1.1 200"), final
    assert s3.get_object(Bucket=bucket_name, Key="e")["Body"].read() == body
    # botocore's own 100-continue handling sees the refusal (it needs the reason phrase)
    ro = gateway.client(gateway.read_only)
    with pytest.raises(ClientError) as err:
        ro.put_object(Bucket=bucket_name, Key="e2", Body=b"x" * 2 * MiB)
    assert code(err.value) == "AccessDenied"


def test_non_ascii_metadata_signs_and_verifies(gateway, s3, bucket_name):
    # botocore refuses non-ASCII Metadata; a header set as text goes out latin-1 and
    # is signed as UTF-8 (what the conformance suites do).
    def set_header(params, **_):
        params["headers"]["x-amz-meta-city"] = "Zürich é"
    s3.meta.events.register("before-call.s3.PutObject", set_header)
    try:
        s3.put_object(Bucket=bucket_name, Key="m", Body=b"v")
    finally:
        s3.meta.events.unregister("before-call.s3.PutObject", set_header)
    assert s3.head_object(Bucket=bucket_name, Key="m")["Metadata"]["city"] == "Zürich é"
    # A client that sends the value's UTF-8 bytes on the wire and signs those; a value
    # latin-1 cannot carry comes back RFC 2047-encoded, as S3 sends it.
    value = "naïve ☃"
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "PUT", f"/{bucket_name}/u", body=b"v",
                             headers={"x-amz-meta-note": value.encode("utf-8").decode("latin-1")})
    assert resp.status_code == 200, resp.text
    got = s3.head_object(Bucket=bucket_name, Key="u")["Metadata"]["note"]
    assert got == "=?UTF-8?B?" + base64.b64encode(value.encode()).decode() + "?="
    assert str(email.header.make_header(email.header.decode_header(got))) == value


# --- listing -----------------------------------------------------------------------------


def test_listing_empty_token_and_raw_prefix(gateway, s3, bucket_name):
    for k in ("a b+c/1", "a b+c/2", "z"):
        s3.put_object(Bucket=bucket_name, Key=k, Body=b"")
    got = s3.list_objects_v2(Bucket=bucket_name, ContinuationToken="")
    assert got["ContinuationToken"] == "" and got["KeyCount"] == 3 and not got["IsTruncated"]
    prefix = "a b+c/"
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET",
                             f"/{bucket_name}?list-type=2&prefix={quote(prefix, safe='')}")
    assert f"<Prefix>{prefix}</Prefix>" in resp.text and "<Key>a b+c/1</Key>" in resp.text
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET",
                             f"/{bucket_name}?list-type=2&encoding-type=url&prefix={quote(prefix, safe='')}")
    assert "<Prefix>a%20b%2Bc/</Prefix>" in resp.text and "<Key>a%20b%2Bc/1</Key>" in resp.text


# --- copy and objects --------------------------------------------------------------------


def test_upload_part_copy_range_checks(s3, bucket_name):
    s3.put_object(Bucket=bucket_name, Key="src", Body=b"0123456789")
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="dst")["UploadId"]
    src = {"Bucket": bucket_name, "Key": "src"}
    for bad in ("bytes=5-10", "bytes=10-12", "bytes=3-1", "bytes=-3", "bytes=2-", "items=0-1"):
        with pytest.raises(ClientError) as err:
            s3.upload_part_copy(Bucket=bucket_name, Key="dst", UploadId=uid, PartNumber=1, CopySource=src,
                                CopySourceRange=bad)
        assert code(err.value) == "InvalidArgument" and status(err.value) == 400, bad
    part = s3.upload_part_copy(Bucket=bucket_name, Key="dst", UploadId=uid, PartNumber=1, CopySource=src,
                               CopySourceRange="bytes=2-9")
    s3.complete_multipart_upload(Bucket=bucket_name, Key="dst", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket_name, Key="dst")["Body"].read() == b"23456789"


def test_non_utf8_key_refused(gateway, bucket_name):
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "PUT", f"/{bucket_name}/bad%FF%FEkey", body=b"x")
    assert resp.status_code == 400, resp.text


def test_content_encoding_minus_aws_chunked(gateway, s3_tls, bucket_name):
    """boto3 over TLS streams aws-chunked: the object keeps the rest of the value byte for byte."""
    for sent in ("deflate, gzip", "gzip,deflate", "br"):
        s3_tls.put_object(Bucket=bucket_name, Key="enc", Body=b"x" * 100, ContentEncoding=sent)
        got = s3_tls.head_object(Bucket=bucket_name, Key="enc")
        assert got["ContentEncoding"] == sent
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET", f"/{bucket_name}/enc")
    assert resp.raw.headers["Content-Encoding"] == "br"


# --- canned ACLs ------------------------------------------------------------------------


def test_canned_acls_switch_public_mode(gateway, s3):
    name = "acl-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=name, ACL="public-read")
    try:
        s3.put_object(Bucket=name, Key="k", Body=b"public")
        anon = f"{gateway.endpoint}/{name}/k"
        assert requests.get(anon).content == b"public"
        grants = s3.get_bucket_acl(Bucket=name)["Grants"]
        assert {(g["Grantee"].get("URI") or g["Grantee"].get("ID"), g["Permission"]) for g in grants} == {
            ("r2fs", "FULL_CONTROL"), ("http://acs.amazonaws.com/groups/global/AllUsers", "READ")}
        assert len(s3.get_object_acl(Bucket=name, Key="k")["Grants"]) == 2
        s3.put_bucket_acl(Bucket=name, ACL="private")
        assert requests.get(anon).status_code == 403
        grants = s3.get_object_acl(Bucket=name, Key="k")["Grants"]
        assert [(g["Grantee"]["ID"], g["Permission"]) for g in grants] == [("r2fs", "FULL_CONTROL")]
        s3.put_object(Bucket=name, Key="k2", Body=b"x", ACL="private")  # what the bucket is: fine
        for call in (lambda: s3.put_bucket_acl(Bucket=name, ACL="public-read-write"),
                     lambda: s3.put_bucket_acl(Bucket=name, ACL="authenticated-read"),
                     lambda: s3.put_object(Bucket=name, Key="k3", Body=b"x", ACL="public-read"),
                     lambda: s3.put_bucket_acl(Bucket=name, GrantRead="id=someone")):
            with pytest.raises(ClientError) as err:
                call()
            assert code(err.value) == "NotImplemented"
        # an AccessControlPolicy document equal to public-read works too
        s3.put_bucket_acl(Bucket=name, AccessControlPolicy={
            "Owner": {"ID": "r2fs"}, "Grants": [
                {"Grantee": {"Type": "CanonicalUser", "ID": "r2fs"}, "Permission": "FULL_CONTROL"},
                {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
                 "Permission": "READ"}]})
        assert requests.get(anon).content == b"public"
        for k in ("k", "k2"):
            s3.delete_object(Bucket=name, Key=k)
    finally:
        s3.delete_bucket(Bucket=name)


@pytest.mark.parametrize("call", ["put_bucket_versioning", "put_object_lock_configuration",
                                  "put_bucket_tagging", "put_bucket_policy"])
def test_still_not_implemented(s3, bucket_name, call):
    args = {"put_bucket_versioning": {"VersioningConfiguration": {"Status": "Enabled"}},
            "put_object_lock_configuration": {"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled"}},
            "put_bucket_tagging": {"Tagging": {"TagSet": [{"Key": "a", "Value": "b"}]}},
            "put_bucket_policy": {"Policy": "{}"}}[call]
    with pytest.raises(ClientError) as err:
        getattr(s3, call)(Bucket=bucket_name, **args)
    assert code(err.value) == "NotImplemented"


def test_composite_sha256(s3, bucket_name):
    """The same composite rule for a hash algorithm."""
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="s", ChecksumAlgorithm="SHA256")["UploadId"]
    r = s3.upload_part(Bucket=bucket_name, Key="s", UploadId=uid, PartNumber=1, Body=b"only",
                       ChecksumAlgorithm="SHA256")
    done = s3.complete_multipart_upload(Bucket=bucket_name, Key="s", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]}]})
    want = base64.b64encode(hashlib.sha256(hashlib.sha256(b"only").digest()).digest()).decode() + "-1"
    assert done["ChecksumSHA256"] == want


@pytest.mark.parametrize("algo,kind", [("CRC64NVME", None), ("CRC32C", "FULL_OBJECT")])
def test_full_object_checksum(s3, bucket_name, algo, kind):
    """FULL_OBJECT: the object's checksum is the CRC of its whole content (combined
    from the parts' CRCs), as a client computes it over the file."""
    from r2fs.s3.checksums import new_hasher

    extra = {"ChecksumType": kind} if kind else {}
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="f", ChecksumAlgorithm=algo, **extra)["UploadId"]
    data = [bytes([7]) * (5 * MiB), b"middle" * 1000 + bytes(5 * MiB - 6000), b"end"]
    tag = "Checksum" + algo
    parts = []
    for i, d in enumerate(data, 1):
        r = s3.upload_part(Bucket=bucket_name, Key="f", UploadId=uid, PartNumber=i, Body=d, ChecksumAlgorithm=algo)
        parts.append({"PartNumber": i, "ETag": r["ETag"], tag: r[tag]})
    whole = new_hasher(algo.lower())
    whole.update(b"".join(data))
    want = whole.b64digest()
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="f", UploadId=uid, MultipartUpload={"Parts": parts},
                                     **{tag: base64.b64encode(bytes(len(base64.b64decode(want)))).decode()})
    assert code(err.value) == "BadDigest"
    done = s3.complete_multipart_upload(Bucket=bucket_name, Key="f", UploadId=uid,
                                        MultipartUpload={"Parts": parts}, **{tag: want})
    assert done[tag] == want and done["ChecksumType"] == "FULL_OBJECT"
    head = s3.head_object(Bucket=bucket_name, Key="f", ChecksumMode="ENABLED")
    assert head[tag] == want and head["ChecksumType"] == "FULL_OBJECT"
    with pytest.raises(ClientError) as err:
        s3.create_multipart_upload(Bucket=bucket_name, Key="g", ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT")
    assert code(err.value) == "InvalidRequest"


def test_list_multipart_uploads_with_delimiter(s3, bucket_name):
    ids = {k: s3.create_multipart_upload(Bucket=bucket_name, Key=k)["UploadId"]
           for k in ("a/1", "a/2", "b", "c/x/1", "d")}
    got = s3.list_multipart_uploads(Bucket=bucket_name, Delimiter="/")
    assert [u["Key"] for u in got["Uploads"]] == ["b", "d"]
    assert [p["Prefix"] for p in got["CommonPrefixes"]] == ["a/", "c/"]
    seen, kw = [], {}
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket_name, Delimiter="/", MaxUploads=1, **kw)
        seen += [u["Key"] for u in page.get("Uploads", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        kw = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    assert seen == ["a/", "b", "c/", "d"]
    got = s3.list_multipart_uploads(Bucket=bucket_name, Delimiter="/", Prefix="c/")
    assert [p["Prefix"] for p in got["CommonPrefixes"]] == ["c/x/"] and "Uploads" not in got
    for k, uid in ids.items():
        s3.abort_multipart_upload(Bucket=bucket_name, Key=k, UploadId=uid)


def test_get_object_attributes(s3, bucket_name):
    uid, data, parts = _two_part_upload(s3, bucket_name, "attr", ChecksumAlgorithm="CRC32")
    done = s3.complete_multipart_upload(Bucket=bucket_name, Key="attr", UploadId=uid,
                                        MultipartUpload={"Parts": parts})
    got = s3.get_object_attributes(Bucket=bucket_name, Key="attr", ObjectAttributes=[
        "ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"])
    assert got["ETag"] == done["ETag"].strip('"') and got["ObjectSize"] == sum(map(len, data))
    assert got["Checksum"]["ChecksumCRC32"] == done["ChecksumCRC32"] and got["StorageClass"] == "STANDARD"
    assert got["ObjectParts"]["TotalPartsCount"] == 2
    page = s3.get_object_attributes(Bucket=bucket_name, Key="attr", ObjectAttributes=["ObjectParts"], MaxParts=1)
    assert page["ObjectParts"]["IsTruncated"] and [p["Size"] for p in page["ObjectParts"]["Parts"]] == [5 * MiB]
    s3.put_object(Bucket=bucket_name, Key="small", Body=b"12345")
    got = s3.get_object_attributes(Bucket=bucket_name, Key="small", ObjectAttributes=["ObjectSize", "ETag"])
    assert got["ObjectSize"] == 5 and "ObjectParts" not in got
    with pytest.raises(ClientError) as err:
        s3.get_object_attributes(Bucket=bucket_name, Key="missing", ObjectAttributes=["ETag"])
    assert code(err.value) == "NoSuchKey"


def test_put_needs_a_length_and_empty_authorization_is_anonymous(gateway, bucket_name):
    def chunked():
        yield b"no length"
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "PUT", f"/{bucket_name}/nolen",
                             body=b"", payload_hash="UNSIGNED-PAYLOAD")
    assert resp.status_code == 200  # an empty body with Content-Length: 0 is fine
    from botocore.awsrequest import AWSRequest

    from .helpers import make_signer
    req = AWSRequest(method="PUT", url=f"{gateway.endpoint}/{bucket_name}/nolen",
                     headers={"Transfer-Encoding": "chunked"})
    make_signer(gateway.admin, "UNSIGNED-PAYLOAD").add_auth(req)
    resp = requests.put(req.url, headers=dict(req.headers), data=chunked())
    assert resp.status_code == 411 and error_code(resp) == "MissingContentLength", resp.text
    resp = requests.put(f"{gateway.endpoint}/{bucket_name}/anon", data=b"x", headers={"Authorization": ""})
    assert resp.status_code == 403 and error_code(resp) == "AccessDenied"
