"""Bucket CORS (configuration, preflight, headers) and operation metering (/metrics, r2fs status)."""

from __future__ import annotations

import re
import time

import pytest
import requests
from botocore.exceptions import ClientError

from .conftest import cli

RULES = {"CORSRules": [{"AllowedOrigins": ["https://app.example"], "AllowedMethods": ["GET", "PUT"],
                        "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"],
                        "MaxAgeSeconds": 600}]}


def test_cors_configuration_and_preflight(gateway, s3, bucket_name):
    with pytest.raises(ClientError) as err:
        s3.get_bucket_cors(Bucket=bucket_name)
    assert err.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    s3.put_bucket_cors(Bucket=bucket_name, CORSConfiguration=RULES)
    got = s3.get_bucket_cors(Bucket=bucket_name)["CORSRules"][0]
    assert got["AllowedOrigins"] == ["https://app.example"] and got["MaxAgeSeconds"] == 600

    url = f"{gateway.endpoint}/{bucket_name}/file"
    ok = requests.options(url, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT",
                                        "Access-Control-Request-Headers": "Content-Type, X-Amz-Date"})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "PUT" in ok.headers["Access-Control-Allow-Methods"]
    assert ok.headers["Access-Control-Max-Age"] == "600"
    denied = requests.options(url, headers={"Origin": "https://evil.example",
                                            "Access-Control-Request-Method": "GET"})
    assert denied.status_code == 403
    denied = requests.options(url, headers={"Origin": "https://app.example",
                                            "Access-Control-Request-Method": "DELETE"})
    assert denied.status_code == 403

    s3.put_object(Bucket=bucket_name, Key="file", Body=b"x")
    seen = []
    s3.meta.events.register("before-send.s3.GetObject",
                            lambda request, **kw: request.headers.__setitem__("Origin", "https://app.example"))
    s3.meta.events.register("after-call.s3.GetObject",
                            lambda http_response, **kw: seen.append(dict(http_response.headers)))
    s3.get_object(Bucket=bucket_name, Key="file")["Body"].read()
    assert seen[0]["Access-Control-Allow-Origin"] == "https://app.example"
    assert seen[0]["Access-Control-Expose-Headers"] == "ETag"

    s3.delete_bucket_cors(Bucket=bucket_name)
    with pytest.raises(ClientError):
        s3.get_bucket_cors(Bucket=bucket_name)


def _metric(text: str, bucket: str, cls: str) -> int:
    m = re.search(rf'r2fs_operations_total{{bucket="{re.escape(bucket)}",class="{cls}"}} (\d+)', text)
    return int(m.group(1)) if m else 0


def test_metering(gateway, s3, bucket_name):
    before = requests.get(f"{gateway.endpoint}/metrics").text
    for i in range(3):
        s3.put_object(Bucket=bucket_name, Key=f"m{i}", Body=b"x")  # class A
    s3.list_objects_v2(Bucket=bucket_name)  # class A
    for i in range(5):
        s3.get_object(Bucket=bucket_name, Key="m0")["Body"].read()  # class B
    s3.head_object(Bucket=bucket_name, Key="m1")  # class B
    s3.delete_object(Bucket=bucket_name, Key="m2")  # free
    resp = requests.get(f"{gateway.endpoint}/metrics")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    after = resp.text
    assert "# TYPE r2fs_operations_total counter" in after
    # create_bucket in the fixture was counted too (class A) before `before` was read
    assert _metric(after, bucket_name, "A") - _metric(before, bucket_name, "A") == 4
    assert _metric(after, bucket_name, "B") - _metric(before, bucket_name, "B") == 6
    time.sleep(1.5)  # counters reach LMDB within about a second
    status = cli(gateway.cluster, "status")
    assert bucket_name in status, status


def test_peer_endpoint_is_outside_s3_and_authenticated(gateway):
    """Peer caches fetch sealed chunks from the gateway under /_r2fs/; outsiders are refused."""
    resp = requests.get(f"{gateway.endpoint}/_r2fs/peer/chunk/" + "00" * 32)
    assert resp.status_code in (401, 403) and "<Error>" not in resp.text
    metrics = requests.get(f"{gateway.endpoint}/metrics").text
    assert "r2fs_operations_total" in metrics
