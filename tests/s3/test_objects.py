"""GetObject ranges, conditionals and overrides; conditional PUT; CopyObject."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

DATA = bytes(range(256)) * 40  # 10240 bytes


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def obj(s3, bucket_name):
    etag = s3.put_object(Bucket=bucket_name, Key="obj", Body=DATA)["ETag"]
    return bucket_name, etag


@pytest.mark.parametrize("rng,expect,content_range", [
    ("bytes=0-9", DATA[:10], "bytes 0-9/10240"),
    ("bytes=10000-", DATA[10000:], "bytes 10000-10239/10240"),
    ("bytes=-100", DATA[-100:], "bytes 10140-10239/10240"),
    ("bytes=10200-99999", DATA[10200:], "bytes 10200-10239/10240"),
])
def test_ranges(s3, obj, rng, expect, content_range):
    got = s3.get_object(Bucket=obj[0], Key="obj", Range=rng)
    assert got["Body"].read() == expect
    assert got["ContentRange"] == content_range
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206


@pytest.mark.parametrize("rng", ["bytes=20000-", "bytes=abc", "bytes=5-2"])
def test_bad_ranges(s3, obj, rng):
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=obj[0], Key="obj", Range=rng)
    assert code(err.value) == "InvalidRange" and status(err.value) == 416


def test_get_conditionals(s3, obj):
    bucket, etag = obj
    assert s3.get_object(Bucket=bucket, Key="obj", IfMatch=etag)["Body"].read() == DATA
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="obj", IfMatch='"0000"')
    assert status(err.value) == 412 and code(err.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="obj", IfNoneMatch=etag)
    assert status(err.value) == 304
    future = time.time() + 3600
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="obj", IfModifiedSince=future)
    assert status(err.value) == 304
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="obj", IfUnmodifiedSince=time.time() - 3600)
    assert status(err.value) == 412
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="obj", IfNoneMatch=etag)
    assert status(err.value) == 304


def test_response_overrides(s3, obj):
    got = s3.get_object(Bucket=obj[0], Key="obj", ResponseContentType="image/png",
                        ResponseContentDisposition='attachment; filename="x.png"',
                        ResponseCacheControl="no-cache")
    assert got["ContentType"] == "image/png"
    assert got["ContentDisposition"] == 'attachment; filename="x.png"'
    assert got["CacheControl"] == "no-cache"


def test_conditional_put(s3, obj):
    bucket, etag = obj
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="obj", Body=b"new", IfNoneMatch="*")
    assert status(err.value) == 412
    s3.put_object(Bucket=bucket, Key="fresh", Body=b"new", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="obj", Body=b"new", IfMatch='"abc"')
    assert status(err.value) == 412
    s3.put_object(Bucket=bucket, Key="obj", Body=b"new", IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"new"


def test_copy_object(s3, obj):
    bucket, etag = obj
    s3.put_object(Bucket=bucket, Key="meta", Body=b"m", Metadata={"a": "1"}, ContentType="text/plain")
    out = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "obj"})
    assert out["CopyObjectResult"]["ETag"] == etag
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == DATA
    # COPY keeps metadata, REPLACE replaces it
    s3.copy_object(Bucket=bucket, Key="m2", CopySource=f"{bucket}/meta")
    head = s3.head_object(Bucket=bucket, Key="m2")
    assert head["Metadata"] == {"a": "1"} and head["ContentType"] == "text/plain"
    s3.copy_object(Bucket=bucket, Key="meta", CopySource=f"{bucket}/meta", MetadataDirective="REPLACE",
                   Metadata={"b": "2"}, ContentType="text/csv")
    head = s3.head_object(Bucket=bucket, Key="meta")
    assert head["Metadata"] == {"b": "2"} and head["ContentType"] == "text/csv"
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="meta", CopySource=f"{bucket}/meta")
    assert code(err.value) == "InvalidRequest"
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="c3", CopySource=f"{bucket}/obj", CopySourceIfMatch='"nope"')
    assert status(err.value) == 412
    s3.copy_object(Bucket=bucket, Key="c3", CopySource=f"{bucket}/obj", CopySourceIfNoneMatch='"nope"')
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="c4", CopySource=f"{bucket}/missing")
    assert code(err.value) == "NoSuchKey"


def test_copy_across_buckets(s3, obj):
    s3.create_bucket(Bucket="copy-target")
    try:
        s3.copy_object(Bucket="copy-target", Key="x", CopySource={"Bucket": obj[0], "Key": "obj"})
        assert s3.get_object(Bucket="copy-target", Key="x")["Body"].read() == DATA
        s3.delete_object(Bucket="copy-target", Key="x")
    finally:
        s3.delete_bucket(Bucket="copy-target")


def test_versioning_answers(s3, obj):
    assert "Status" not in s3.get_bucket_versioning(Bucket=obj[0])
    versions = s3.list_object_versions(Bucket=obj[0])["Versions"]
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions] == [("obj", "null", True)]


def test_version_ids(s3, obj):
    assert s3.get_object(Bucket=obj[0], Key="obj", VersionId="null")["Body"].read() == DATA
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=obj[0], Key="obj", VersionId="3HL4kqtJlcpXroDTDmJ")
    assert code(err.value) == "InvalidArgument"
