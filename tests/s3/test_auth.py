"""Authentication and authorization: keys (via the real CLI), scopes, presigned
URLs, clock skew, virtual-host addressing, public buckets, errors for the rest."""

from __future__ import annotations

import time

import pytest
import requests
from botocore.exceptions import ClientError

from .conftest import Keys, cli, make_keys
from .helpers import error_code, signed_request


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def test_wrong_secret_and_unknown_key(gateway, bucket_name):
    bad = gateway.client(Keys(gateway.admin.id, "x" * 40))
    with pytest.raises(ClientError) as err:
        bad.list_objects_v2(Bucket=bucket_name)
    assert code(err.value) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as err:
        gateway.client(Keys("R2FSUNKNOWNKEY000000", "x" * 40)).list_buckets()
    assert code(err.value) == "InvalidAccessKeyId"


def test_read_only_key(gateway, s3, bucket_name):
    s3.put_object(Bucket=bucket_name, Key="k", Body=b"v")
    ro = gateway.client(gateway.read_only)
    assert ro.get_object(Bucket=bucket_name, Key="k")["Body"].read() == b"v"
    assert ro.list_objects_v2(Bucket=bucket_name)["KeyCount"] == 1
    for call in (lambda: ro.put_object(Bucket=bucket_name, Key="k2", Body=b"v"),
                 lambda: ro.delete_object(Bucket=bucket_name, Key="k"),
                 lambda: ro.create_bucket(Bucket="ro-made-this")):
        with pytest.raises(ClientError) as err:
            call()
        assert code(err.value) == "AccessDenied"


def test_bucket_scoped_key(gateway, s3, bucket_name):
    sc = gateway.client(gateway.scoped)
    sc.put_object(Bucket=gateway.scoped_bucket, Key="mine", Body=b"1")
    assert [b["Name"] for b in sc.list_buckets()["Buckets"]] == [gateway.scoped_bucket]
    with pytest.raises(ClientError) as err:
        sc.list_objects_v2(Bucket=bucket_name)
    assert code(err.value) == "AccessDenied"
    s3.put_object(Bucket=bucket_name, Key="other", Body=b"2")
    with pytest.raises(ClientError) as err:
        sc.copy_object(Bucket=gateway.scoped_bucket, Key="stolen", CopySource=f"{bucket_name}/other")
    assert code(err.value) == "AccessDenied"
    sc.delete_object(Bucket=gateway.scoped_bucket, Key="mine")


def test_anonymous_and_public_bucket(gateway, s3, bucket_name):
    s3.put_object(Bucket=bucket_name, Key="pub.txt", Body=b"public data", ContentType="text/plain")
    url = f"{gateway.endpoint}/{bucket_name}/pub.txt"
    resp = requests.get(url)
    assert resp.status_code == 403 and error_code(resp) == "AccessDenied"
    cli(gateway.cluster, "bucket", "public", bucket_name, "on")
    try:
        resp = requests.get(url)
        assert resp.status_code == 200 and resp.content == b"public data"
        assert requests.head(url).headers["Content-Length"] == "11"
        assert requests.put(url, data=b"x").status_code == 403
        assert requests.get(f"{gateway.endpoint}/{bucket_name}").status_code == 403  # no anonymous listing
    finally:
        cli(gateway.cluster, "bucket", "public", bucket_name, "off")
    assert requests.get(url).status_code == 403


def test_presigned_get_put(gateway, s3, bucket_name):
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket_name, "Key": "pre sig"},
                                        ExpiresIn=300)
    assert requests.put(put_url, data=b"via presigned put").status_code == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket_name, "Key": "pre sig"},
                                        ExpiresIn=300)
    resp = requests.get(get_url)
    assert resp.status_code == 200 and resp.content == b"via presigned put"
    tampered = get_url.replace("pre%20sig", "other")
    assert error_code(requests.get(tampered)) == "SignatureDoesNotMatch"
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": bucket_name, "Key": "pre sig"},
                                        ExpiresIn=1)
    time.sleep(2)
    resp = requests.get(expired)
    assert resp.status_code == 403 and error_code(resp) == "AccessDenied"
    too_long = s3.generate_presigned_url("get_object", Params={"Bucket": bucket_name, "Key": "pre sig"},
                                         ExpiresIn=8 * 86400)
    assert error_code(requests.get(too_long)) == "AccessDenied"  # as AWS: 403, not 400


def test_clock_skew(gateway, bucket_name):
    old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 20 * 60))
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET", f"/{bucket_name}?list-type=2",
                             timestamp=old)
    assert resp.status_code == 403 and error_code(resp) == "RequestTimeTooSkewed"


def test_virtual_host_style(gateway, s3, bucket_name):
    s3.put_object(Bucket=bucket_name, Key="vh/key", Body=b"virtual")
    host = f"{bucket_name}.localhost:{gateway.port}"
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET", "/vh/key", host=host)
    assert resp.status_code == 200 and resp.content == b"virtual"
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET", "/?list-type=2", host=host)
    assert resp.status_code == 200 and "<Key>vh/key</Key>" in resp.text


def test_unsupported_and_wrong_methods(gateway, s3, bucket_name):
    with pytest.raises(ClientError) as err:
        s3.get_bucket_policy(Bucket=bucket_name)
    assert code(err.value) == "NotImplemented"
    with pytest.raises(ClientError) as err:
        s3.get_object_tagging(Bucket=bucket_name, Key="k")
    assert code(err.value) == "NotImplemented"
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "PATCH", f"/{bucket_name}/k")
    assert resp.status_code == 405 and error_code(resp) == "MethodNotAllowed"
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "POST", f"/{bucket_name}?delete",
                             body=b"<Delete><Object></Delete>")
    assert resp.status_code == 400 and error_code(resp) == "MalformedXML"
    resp = requests.get(f"{gateway.endpoint}/", headers={"Authorization": "AWS4-HMAC-SHA256 garbage"})
    assert resp.status_code == 400 and error_code(resp) == "AuthorizationHeaderMalformed"
    resp = requests.get(f"{gateway.endpoint}/", headers={"Authorization": "AWS AKID:sig"})
    assert resp.status_code == 403


def test_error_document_shape(gateway, bucket_name):
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "GET", f"/{bucket_name}/nope")
    assert resp.status_code == 404
    for part in ("<Code>NoSuchKey</Code>", "<Message>", f"<Resource>/{bucket_name}/nope</Resource>",
                 "<RequestId>"):
        assert part in resp.text
    assert resp.headers["x-amz-request-id"]


def test_keys_cli_list_and_delete(gateway, s3):
    keys = make_keys(gateway.cluster)
    listing = cli(gateway.cluster, "keys", "list")
    assert keys.id in listing and keys.secret not in listing
    gateway.client(keys).list_buckets()
    cli(gateway.cluster, "keys", "delete", keys.id)
    time.sleep(5.5)  # the gateway caches opened keys for 5 s
    with pytest.raises(ClientError) as err:
        gateway.client(keys).list_buckets()
    assert code(err.value) == "InvalidAccessKeyId"


def test_cli_errors_are_one_line(gateway):
    import subprocess
    import sys
    for args, needle in ((["keys", "delete", "R2FSNOSUCHKEY0000000"], "no access key"),
                         (["keys", "create", "--bucket", "no-such-bucket"], "no-such-bucket"),
                         (["bucket", "public", "no-such-bucket", "on"], "no-such-bucket"),
                         (["serve", "--listen", "nonsense"], "HOST:PORT")):
        out = subprocess.run([sys.executable, "-m", "r2fs", "--cluster", gateway.cluster, *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and needle in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2, out.stderr
