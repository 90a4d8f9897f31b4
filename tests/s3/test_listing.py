"""ListObjects v1 / v2 / versions: prefix, delimiter, paging, start-after, url encoding."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

KEYS = ["a/1", "a/2", "a/b/3", "b", "c d+e", "c/€", "d/x", "d/y", "e"]


@pytest.fixture
def filled(s3, bucket_name):
    for k in KEYS:
        s3.put_object(Bucket=bucket_name, Key=k, Body=k.encode())
    return bucket_name


def test_v2_everything(s3, filled):
    out = s3.list_objects_v2(Bucket=filled)
    assert [o["Key"] for o in out["Contents"]] == sorted(KEYS, key=lambda k: k.encode())
    assert out["KeyCount"] == len(KEYS) and not out["IsTruncated"]
    assert out["Contents"][0]["Size"] == 3 and out["Contents"][0]["ETag"].startswith('"')


def test_v2_delimiter_prefix(s3, filled):
    out = s3.list_objects_v2(Bucket=filled, Delimiter="/")
    assert [o["Key"] for o in out["Contents"]] == ["b", "c d+e", "e"]
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["a/", "c/", "d/"]
    out = s3.list_objects_v2(Bucket=filled, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in out["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["a/b/"]


@pytest.mark.parametrize("delimiter", [None, "/"])
@pytest.mark.parametrize("version", [1, 2])
def test_paging_visits_everything_once(s3, filled, version, delimiter):
    kwargs = {"Bucket": filled, "PaginationConfig": {"PageSize": 2}}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    pages = s3.get_paginator("list_objects" if version == 1 else "list_objects_v2").paginate(**kwargs)
    seen = []
    for page in pages:
        seen += [o["Key"] for o in page.get("Contents", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    expected = KEYS if not delimiter else ["a/", "b", "c d+e", "c/", "d/", "e"]
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))


def test_start_after_and_max_keys(s3, filled):
    out = s3.list_objects_v2(Bucket=filled, StartAfter="c/€", MaxKeys=2)
    assert [o["Key"] for o in out["Contents"]] == ["d/x", "d/y"] and out["IsTruncated"]
    out = s3.list_objects(Bucket=filled, Marker="d/x")
    assert [o["Key"] for o in out["Contents"]] == ["d/y", "e"]
    out = s3.list_objects_v2(Bucket=filled, MaxKeys=0)
    assert out["KeyCount"] == 0


def test_fetch_owner_and_encoding(s3, filled):
    out = s3.list_objects_v2(Bucket=filled, FetchOwner=True, Prefix="c")
    assert [o["Key"] for o in out["Contents"]] == ["c d+e", "c/€"]  # botocore url-decodes
    assert out["Contents"][0]["Owner"]["ID"]


def test_bad_arguments(s3, filled):
    with pytest.raises(ClientError) as err:
        s3.list_objects_v2(Bucket=filled, ContinuationToken="%%%")
    assert err.value.response["Error"]["Code"] == "InvalidArgument"


def test_versions_paging(s3, filled):
    seen = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=filled, PaginationConfig={"PageSize": 4}):
        seen += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
    assert sorted(seen) == sorted((k, "null") for k in KEYS)
