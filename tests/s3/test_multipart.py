"""Multipart uploads through boto3: the full flow, part rules, copy-part, listings."""

from __future__ import annotations

import hashlib
import os

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

MiB = 1024 * 1024


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


@pytest.mark.parametrize("tls", [False, True], ids=["signed-payload", "aws-chunked-trailer"])
def test_three_parts_and_tail(gateway, bucket_name, tls):
    s3 = gateway.client(tls=tls)
    parts_data = [os.urandom(5 * MiB) for _ in range(3)] + [os.urandom(1234)]
    up = s3.create_multipart_upload(Bucket=bucket_name, Key="big", ContentType="application/x-big",
                                    Metadata={"m": "v"})
    uid = up["UploadId"]
    etags = []
    for i, data in enumerate(parts_data, 1):
        etags.append(s3.upload_part(Bucket=bucket_name, Key="big", UploadId=uid, PartNumber=i, Body=data)["ETag"])
    listed = s3.list_parts(Bucket=bucket_name, Key="big", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(i, len(d)) for i, d in enumerate(parts_data, 1)]
    uploads = s3.list_multipart_uploads(Bucket=bucket_name)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("big", uid)]
    done = s3.complete_multipart_upload(
        Bucket=bucket_name, Key="big", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})
    md5s = b"".join(hashlib.md5(d).digest() for d in parts_data)
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-4"'
    got = s3.get_object(Bucket=bucket_name, Key="big")
    assert got["ContentType"] == "application/x-big" and got["Metadata"] == {"m": "v"}
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(b"".join(parts_data)).digest()
    assert s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []


def test_transfer_manager(s3, bucket_name, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(12 * MiB + 5))
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    s3.upload_file(str(src), bucket_name, "tm.bin", Config=cfg)
    s3.download_file(bucket_name, "tm.bin", str(tmp_path / "dst.bin"), Config=cfg)
    assert (tmp_path / "dst.bin").read_bytes() == src.read_bytes()


def test_part_rules(s3, bucket_name):
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="k")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket_name, Key="k", UploadId=uid, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket_name, Key="k", UploadId=uid, PartNumber=2, Body=b"tail")["ETag"]
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="k", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert code(err.value) == "EntityTooSmall"
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="k", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
    assert code(err.value) == "InvalidPartOrder"
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(Bucket=bucket_name, Key="k", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]})
    assert code(err.value) == "InvalidPart"
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket_name, Key="k", UploadId=uid, PartNumber=10001, Body=b"x")
    assert code(err.value) == "InvalidArgument"
    # a single small part is fine: the last part may be any size
    s3.complete_multipart_upload(Bucket=bucket_name, Key="k", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}]})
    assert s3.get_object(Bucket=bucket_name, Key="k")["Body"].read() == b"small"


def test_abort_and_no_such_upload(s3, bucket_name):
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket_name, Key="k", UploadId=uid, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket_name, Key="k", UploadId=uid)
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket_name, Key="k", UploadId=uid, PartNumber=2, Body=b"x")
    assert code(err.value) == "NoSuchUpload"
    with pytest.raises(ClientError) as err:
        s3.list_parts(Bucket=bucket_name, Key="k", UploadId="bogus")
    assert code(err.value) == "NoSuchUpload"


def test_upload_part_copy_with_range(s3, bucket_name):
    src = os.urandom(6 * MiB)
    s3.put_object(Bucket=bucket_name, Key="src", Body=src)
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="dst")["UploadId"]
    p1 = s3.upload_part_copy(Bucket=bucket_name, Key="dst", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket_name, "Key": "src"},
                             CopySourceRange=f"bytes=0-{5 * MiB - 1}")["CopyPartResult"]["ETag"]
    p2 = s3.upload_part_copy(Bucket=bucket_name, Key="dst", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": bucket_name, "Key": "src"},
                             CopySourceRange="bytes=100-199")["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(Bucket=bucket_name, Key="dst", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]})
    assert s3.get_object(Bucket=bucket_name, Key="dst")["Body"].read() == src[:5 * MiB] + src[100:200]


def test_malformed_complete_xml(gateway, s3, bucket_name):
    from .helpers import error_code, signed_request
    uid = s3.create_multipart_upload(Bucket=bucket_name, Key="k")["UploadId"]
    resp, _ = signed_request(gateway.endpoint, gateway.admin, "POST", f"/{bucket_name}/k?uploadId={uid}",
                             body=b"<CompleteMultipartUpload><Part>")
    assert resp.status_code == 400 and error_code(resp) == "MalformedXML"
