"""The background gateway `r2fs demo` starts: detached, reused, usable with the demo key."""

from __future__ import annotations

import os
import signal
import time

import boto3
import trio
from botocore.config import Config

from r2fs.engine.store import Cluster
from r2fs.s3.launch import demo_key, start_background

from .conftest import free_port


def test_background_gateway_and_demo_key(tmp_path):
    cluster_dir = str(tmp_path / "cluster")
    Cluster.init(cluster_dir).close()
    listen = f"127.0.0.1:{free_port()}"
    gw = start_background(cluster_dir, listen)
    try:
        assert gw.started
        assert start_background(cluster_dir, listen).pid == gw.pid  # reused, not a second one

        async def keys():
            c = Cluster.open(cluster_dir)
            try:
                return await demo_key(c), await demo_key(c)
            finally:
                c.close()
        first, again = trio.run(keys)
        assert (first.id, first.secret) == (again.id, again.secret)
        s3 = boto3.client("s3", endpoint_url=gw.endpoint, region_name="auto", aws_access_key_id=first.id,
                          aws_secret_access_key=first.secret, config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket="launch-test")
        s3.put_object(Bucket="launch-test", Key="k", Body=b"v")
        assert s3.get_object(Bucket="launch-test", Key="k")["Body"].read() == b"v"
    finally:
        os.kill(gw.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if os.waitpid(gw.pid, os.WNOHANG)[0] == gw.pid:  # our child: reap it
                break
            time.sleep(0.1)
        else:
            os.kill(gw.pid, signal.SIGKILL)
            os.waitpid(gw.pid, 0)
