"""32 concurrent boto3 clients put and get 1,000 objects: nothing lost or mixed."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor


def test_32_clients_1000_objects(gateway, bucket_name):
    clients = [gateway.client(max_pool_connections=4) for _ in range(32)]

    def body(i: int) -> bytes:
        return hashlib.sha256(str(i).encode()).digest() * (1 + i % 50)

    def put(i: int) -> str:
        return clients[i % 32].put_object(Bucket=bucket_name, Key=f"obj/{i:04d}", Body=body(i))["ETag"]

    def get(i: int) -> bool:
        return clients[(i + 7) % 32].get_object(Bucket=bucket_name, Key=f"obj/{i:04d}")["Body"].read() == body(i)

    with ThreadPoolExecutor(32) as pool:
        etags = list(pool.map(put, range(1000)))
        assert all(e == f'"{hashlib.md5(body(i)).hexdigest()}"' for i, e in enumerate(etags))
        assert all(pool.map(get, range(1000)))
    keys = []
    for page in clients[0].get_paginator("list_objects_v2").paginate(Bucket=bucket_name):
        keys += [o["Key"] for o in page["Contents"]]
    assert keys == [f"obj/{i:04d}" for i in range(1000)]
