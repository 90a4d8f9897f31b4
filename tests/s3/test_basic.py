"""boto3 (default settings: checksums on) against the real gateway: bucket and object basics."""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.exceptions import ClientError


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def test_bucket_lifecycle(s3):
    s3.create_bucket(Bucket="life-cycle", CreateBucketConfiguration={"LocationConstraint": "weur"})
    try:
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert "life-cycle" in names
        s3.head_bucket(Bucket="life-cycle")
        assert s3.get_bucket_location(Bucket="life-cycle")["LocationConstraint"] == "weur"
        with pytest.raises(ClientError) as err:
            s3.create_bucket(Bucket="life-cycle")
        assert code(err.value) == "BucketAlreadyOwnedByYou"
        s3.put_object(Bucket="life-cycle", Key="x", Body=b"1")
        with pytest.raises(ClientError) as err:
            s3.delete_bucket(Bucket="life-cycle")
        assert code(err.value) == "BucketNotEmpty"
        s3.delete_object(Bucket="life-cycle", Key="x")
    finally:
        s3.delete_bucket(Bucket="life-cycle")
    with pytest.raises(ClientError) as err:
        s3.head_bucket(Bucket="life-cycle")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as err:
        s3.list_objects_v2(Bucket="life-cycle")
    assert code(err.value) == "NoSuchBucket"


def test_invalid_bucket_name(s3):
    with pytest.raises(ClientError) as err:
        s3.create_bucket(Bucket="Bad_Name")
    assert code(err.value) == "InvalidBucketName"


@pytest.mark.parametrize("tls", [False, True], ids=["signed-payload", "aws-chunked-trailer"])
@pytest.mark.parametrize("size", [0, 1, 5000, 3 * 1024 * 1024 + 7])
def test_put_get_roundtrip(gateway, bucket_name, tls, size):
    s3 = gateway.client(tls=tls)
    data = os.urandom(size)
    put = s3.put_object(Bucket=bucket_name, Key="dir/obj ü+%.bin", Body=data, ContentType="text/x-test",
                        Metadata={"color": "blue"}, CacheControl="max-age=60")
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket_name, Key="dir/obj ü+%.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/x-test"
    assert got["Metadata"] == {"color": "blue"}
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentLength"] == size
    head = s3.head_object(Bucket=bucket_name, Key="dir/obj ü+%.bin")
    assert head["ETag"] == put["ETag"] and head["ContentLength"] == size


def _client_algorithms() -> tuple[str, ...]:
    """botocore computes CRC32C / CRC64NVME only with awscrt installed."""
    try:
        import awscrt  # noqa: F401
        return ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
    except ImportError:
        return ("CRC32", "SHA1", "SHA256")


def test_checksum_stored_and_returned(s3_tls, bucket_name):
    for algo in _client_algorithms():
        s3_tls.put_object(Bucket=bucket_name, Key=algo, Body=b"checksum me", ChecksumAlgorithm=algo)
        head = s3_tls.head_object(Bucket=bucket_name, Key=algo, ChecksumMode="ENABLED")
        assert head.get(f"Checksum{algo}"), head


def test_no_such_key(s3, bucket_name):
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket_name, Key="missing")
    assert code(err.value) == "NoSuchKey"
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket_name, Key="missing")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_delete_object_and_batch(s3, bucket_name):
    for i in range(5):
        s3.put_object(Bucket=bucket_name, Key=f"k{i}", Body=b"x")
    s3.delete_object(Bucket=bucket_name, Key="k0")
    s3.delete_object(Bucket=bucket_name, Key="never-existed")
    out = s3.delete_objects(Bucket=bucket_name, Delete={"Objects": [{"Key": "k1"}, {"Key": "k2"}, {"Key": "nope"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["k1", "k2", "nope"]
    quiet = s3.delete_objects(Bucket=bucket_name, Delete={"Objects": [{"Key": "k3"}], "Quiet": True})
    assert not quiet.get("Deleted") and not quiet.get("Errors")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket_name)["Contents"]] == ["k4"]


def test_key_too_long(s3, bucket_name):
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket_name, Key="k" * 1025, Body=b"x")
    assert code(err.value) == "KeyTooLongError"
