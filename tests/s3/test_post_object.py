"""Browser-style POST Object uploads from Python: policies made by boto3's own
generate_presigned_post (SigV4), posted as multipart/form-data with requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.exceptions import ClientError

ORIGIN = "http://app.example"


def post_form(gateway, s3, bucket, key="uploads/${filename}", *, conditions=(), fields=None,
              expires=300, body=b"\x89PNG avatar", filename="avatar.png", extra=None, origin=None):
    signed = s3.generate_presigned_post(bucket, key, Fields=dict(fields or {}),
                                        Conditions=list(conditions), ExpiresIn=expires)
    form = dict(signed["fields"])
    form.update(extra or {})
    headers = {"Origin": origin} if origin else {}
    files = {"file": (filename, body, "image/png")}
    return requests.post(f"{gateway.endpoint}/{bucket}", data=form, files=files, headers=headers,
                         allow_redirects=False)


def xml_code(resp) -> str:
    m = re.search(r"<Code>([^<]+)</Code>", resp.text)
    return m.group(1) if m else ""


AVATAR_POLICY = [["starts-with", "$key", "uploads/"], ["content-length-range", 1, 1000],
                 ["starts-with", "$Content-Type", "image/"], {"x-amz-meta-user": "alice"},
                 {"success_action_status": "201"}]
AVATAR_FIELDS = {"Content-Type": "image/png", "x-amz-meta-user": "alice", "success_action_status": "201"}


def test_avatar_upload_with_filename_and_metadata(gateway, s3, bucket_name):
    resp = post_form(gateway, s3, bucket_name, conditions=AVATAR_POLICY, fields=AVATAR_FIELDS)
    assert resp.status_code == 201, resp.text
    assert "<Key>uploads/avatar.png</Key>" in resp.text and f"<Bucket>{bucket_name}</Bucket>" in resp.text
    got = s3.get_object(Bucket=bucket_name, Key="uploads/avatar.png")
    assert got["Body"].read() == b"\x89PNG avatar"
    assert got["ContentType"] == "image/png" and got["Metadata"] == {"user": "alice"}
    assert resp.headers["ETag"] == got["ETag"]


def test_default_204_and_fields_after_file_ignored(gateway, s3, bucket_name):
    signed = s3.generate_presigned_post(bucket_name, "plain.txt", ExpiresIn=60)
    files = [(k, (None, v)) for k, v in signed["fields"].items()]
    files += [("file", ("x.txt", b"hello", "text/plain")), ("x-amz-meta-late", (None, "ignored"))]
    resp = requests.post(f"{gateway.endpoint}/{bucket_name}", files=files)
    assert resp.status_code == 204, resp.text
    got = s3.get_object(Bucket=bucket_name, Key="plain.txt")
    assert got["Body"].read() == b"hello" and got["Metadata"] == {}


def test_policy_refusals(gateway, s3, bucket_name):
    cases = [
        # (kwargs, status, code)
        ({"key": "elsewhere/${filename}"}, 403, "AccessDenied"),  # starts-with $key fails
        ({"body": b"x" * 1001}, 400, "EntityTooLarge"),  # content-length-range
        ({"body": b""}, 400, "EntityTooSmall"),
        ({"extra": {"x-amz-meta-sneaky": "1"}}, 403, "AccessDenied"),  # a field the policy does not name
        ({"extra": {"Content-Type": "text/html"}}, 403, "AccessDenied"),  # starts-with image/ fails
        ({"expires": -10}, 403, "AccessDenied"),  # the policy expired
    ]
    for kwargs, want_status, want_code in cases:
        kw = {"conditions": AVATAR_POLICY, "fields": dict(AVATAR_FIELDS)}
        kw.update(kwargs)
        if "key" in kwargs:
            kw["conditions"] = AVATAR_POLICY  # the policy still says uploads/
            signed = s3.generate_presigned_post(bucket_name, "uploads/${filename}", Fields=kw["fields"],
                                                Conditions=list(AVATAR_POLICY), ExpiresIn=60)
            form = dict(signed["fields"], key=kwargs["key"])
            resp = requests.post(f"{gateway.endpoint}/{bucket_name}", data=form,
                                 files={"file": ("a.png", b"data", "image/png")})
        else:
            resp = post_form(gateway, s3, bucket_name, **kw)
        assert (resp.status_code, xml_code(resp)) == (want_status, want_code), (kwargs, resp.text)
    assert s3.list_objects_v2(Bucket=bucket_name)["KeyCount"] == 0  # nothing was stored


def test_signature_and_form_errors(gateway, s3, bucket_name):
    signed = s3.generate_presigned_post(bucket_name, "k", ExpiresIn=60)
    url = f"{gateway.endpoint}/{bucket_name}"
    forged = dict(signed["fields"], **{"x-amz-signature": "0" * 64})
    resp = requests.post(url, data=forged, files={"file": ("f", b"x")})
    assert (resp.status_code, xml_code(resp)) == (403, "SignatureDoesNotMatch")
    resp = requests.post(url, files=[(k, (None, v)) for k, v in signed["fields"].items()])  # no file part
    assert (resp.status_code, xml_code(resp)) == (400, "InvalidArgument")
    no_key = {k: v for k, v in signed["fields"].items() if k != "key"}
    resp = requests.post(url, data=no_key, files={"file": ("f", b"x")})
    assert (resp.status_code, xml_code(resp)) == (400, "InvalidArgument") and "key" in resp.text
    resp = requests.post(url, files={"file": ("f", b"x")}, data={"key": "anon"})  # unsigned
    assert (resp.status_code, xml_code(resp)) == (403, "AccessDenied")
    resp = requests.post(url, data=b"key=k", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (resp.status_code, xml_code(resp)) == (412, "PreconditionFailed")
    ro = gateway.client(gateway.read_only)
    signed = ro.generate_presigned_post(bucket_name, "k", ExpiresIn=60)
    resp = requests.post(url, data=signed["fields"], files={"file": ("f", b"x")})
    assert (resp.status_code, xml_code(resp)) == (403, "AccessDenied")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket_name, Key="k")


def test_success_action_redirect(gateway, s3, bucket_name):
    target = "http://app.example/done?from=form"
    resp = post_form(gateway, s3, bucket_name, key="r/${filename}", fields={"success_action_redirect": target},
                     conditions=[{"success_action_redirect": target}])
    assert resp.status_code == 303, resp.text
    location = urlsplit(resp.headers["Location"])
    q = parse_qs(location.query)
    assert location.netloc == "app.example" and q["from"] == ["form"]
    assert q["bucket"] == [bucket_name] and q["key"] == ["r/avatar.png"]
    assert q["etag"] == [s3.head_object(Bucket=bucket_name, Key="r/avatar.png")["ETag"]]


def test_cors_on_post_responses(gateway, s3, bucket_name):
    s3.put_bucket_cors(Bucket=bucket_name, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [ORIGIN], "AllowedMethods": ["POST"], "ExposeHeaders": ["ETag"]}]})
    ok = post_form(gateway, s3, bucket_name, conditions=AVATAR_POLICY, fields=AVATAR_FIELDS, origin=ORIGIN)
    assert ok.status_code == 201 and ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "ETag" in ok.headers["Access-Control-Expose-Headers"]
    refused = post_form(gateway, s3, bucket_name, conditions=AVATAR_POLICY, fields=AVATAR_FIELDS,
                        origin=ORIGIN, body=b"x" * 5000)
    assert refused.status_code == 400 and refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = post_form(gateway, s3, bucket_name, conditions=AVATAR_POLICY, fields=AVATAR_FIELDS,
                      origin="http://evil.example")
    assert "Access-Control-Allow-Origin" not in other.headers


def test_sigv2_policy_and_case_insensitive_fields(gateway, s3, bucket_name):
    """Older tools (and the ceph-style suites) sign the policy with HMAC-SHA1."""
    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    policy = base64.b64encode(json.dumps({"expiration": expiry, "conditions": [
        {"bUcKeT": bucket_name}, ["StArTs-WiTh", "$KeY", "v2/"], {"acl": "private"},
        ["content-length-range", 0, 100]]}).encode()).decode()
    signature = base64.b64encode(hmac.new(gateway.admin.secret.encode(), policy.encode(),
                                          hashlib.sha1).digest()).decode()
    form = {"kEy": "v2/obj", "AWSAccessKeyId": gateway.admin.id, "aCl": "private",
            "signature": signature, "pOLICy": policy}
    resp = requests.post(f"{gateway.endpoint}/{bucket_name}", data=form, files={"file": ("f", b"v2 data")})
    assert resp.status_code == 204, resp.text
    assert s3.get_object(Bucket=bucket_name, Key="v2/obj")["Body"].read() == b"v2 data"
    url = f"{gateway.endpoint}/{bucket_name}"
    unsigned = {k: v for k, v in form.items() if k != "signature"}
    resp = requests.post(url, data=unsigned, files={"file": ("f", b"x")})
    assert (resp.status_code, xml_code(resp)) == (400, "InvalidArgument")
    no_bucket = base64.b64encode(json.dumps({"expiration": expiry, "conditions": [
        ["starts-with", "$key", ""]]}).encode()).decode()
    sig = base64.b64encode(hmac.new(gateway.admin.secret.encode(), no_bucket.encode(), hashlib.sha1).digest())
    resp = requests.post(url, files={"file": ("f", b"x")}, data={
        "key": "nb", "AWSAccessKeyId": gateway.admin.id, "signature": sig.decode(), "policy": no_bucket})
    assert (resp.status_code, xml_code(resp)) == (403, "AccessDenied")  # a policy must name its bucket


def test_large_file_streams(gateway, s3, bucket_name):
    """A file larger than a chunk goes through the streaming form reader intact."""
    body = bytes(range(256)) * (9 * 4096 + 7)  # ~9.4 MB, boundary-like bytes inside
    resp = post_form(gateway, s3, bucket_name, key="big.bin", body=body, filename="big.bin")
    assert resp.status_code == 204, resp.text
    got = s3.get_object(Bucket=bucket_name, Key="big.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
