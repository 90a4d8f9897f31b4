"""`r2fs demo`: show the engine working on the default cluster, step by step.

This is what `make demo` runs. For now it exercises the engine alone (create
the bucket `demo` if missing, put a small file, read it back and compare,
list, print the cluster status), saying what each step did, so that a new
user sees the whole data path in one command. The FUSE layer turns it into
mounting the bucket at ./mnt.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket

from ..engine.errors import NoSuchBucket, R2fsError
from ..engine.store import Cluster
from .engine_cmds import listing_lines, open_cluster, run, status_lines
from . import cluster_path
from .progress import format_size

DEMO_BUCKET = "demo"
DEMO_KEY = "hello.txt"
#: Big enough not to be kept inline in its manifest: it goes through the whole
#: data path (chunk, encrypt, RS-code, one shard per node directory).
DEMO_BIG_KEY = "random-1MiB.bin"
DEMO_BIG_SIZE = 1024 * 1024


class DemoFailed(R2fsError):
    """The demo read back something other than what it wrote."""


def _say(text: str) -> None:
    print(text, flush=True)


async def _demo(cluster: Cluster, args: argparse.Namespace, existed: bool) -> None:
    how = "opened" if existed else "created with the embedded defaults"
    _say(f"cluster   {cluster_path(args)} ({how})")
    try:
        await cluster.head_bucket(DEMO_BUCKET)
        _say(f"bucket    {DEMO_BUCKET} already exists")
    except NoSuchBucket:
        await cluster.create_bucket(DEMO_BUCKET)
        _say(f"bucket    {DEMO_BUCKET} created")

    bucket = cluster.bucket(DEMO_BUCKET)
    content = (f"Hello from r2fs on {socket.gethostname()}.\n"
               "This object was chunked, encrypted with AES-256-GCM and Reed-Solomon coded\n"
               "over the node directories of the cluster.\n").encode()
    info = await bucket.put(DEMO_KEY, content, http_metadata={"content-type": "text/plain"},
                            custom_metadata={"written-by": "r2fs demo"})
    _say(f"put       {DEMO_BUCKET}/{DEMO_KEY}: {format_size(info.size)}, etag {info.etag}")

    body = await bucket.get(DEMO_KEY)
    try:
        back = await body.read()
    finally:
        await body.aclose()
    if back != content:
        raise DemoFailed(f"read back {len(back)} bytes from {DEMO_BUCKET}/{DEMO_KEY} "
                         "that differ from what was written")
    if info.etag != hashlib.md5(content).hexdigest():
        raise DemoFailed(f"etag {info.etag} of {DEMO_BUCKET}/{DEMO_KEY} is not the MD5 of its content")
    _say(f"get       {DEMO_BUCKET}/{DEMO_KEY}: {len(back)} bytes read back, identical, etag = MD5")

    # Fixed pseudo-random bytes: incompressible, and a re-run deduplicates
    # against the stored chunk instead of leaving garbage behind.
    big = random.Random(0).randbytes(DEMO_BIG_SIZE)
    info = await bucket.put(DEMO_BIG_KEY, big)
    body = await bucket.get(DEMO_BIG_KEY)
    try:
        same = await body.read() == big
    finally:
        await body.aclose()
    if not same:
        raise DemoFailed(f"{DEMO_BUCKET}/{DEMO_BIG_KEY} read back differs from what was written")
    _say(f"put+get   {DEMO_BUCKET}/{DEMO_BIG_KEY}: {format_size(info.size)} of pseudo-random bytes in "
         f"{len(info.chunks)} chunk(s), each encrypted and RS-coded into shards on the nodes; "
         "read back identical")

    _say(f"ls        {DEMO_BUCKET}/ (first page):")
    page = await bucket.list(delimiter="/")
    for line in listing_lines(page.objects, page.delimited_prefixes, ""):
        _say("  " + line)
    if page.truncated:
        _say(f"  ... more: r2fs ls {DEMO_BUCKET}")

    _say("status:")
    for line in status_lines(await cluster.status()):
        _say("  " + line)
    _say(f"done; try: r2fs get {DEMO_BUCKET}/{DEMO_KEY} -")


def cmd_demo(args: argparse.Namespace) -> int:
    existed = os.path.exists(os.path.join(cluster_path(args), "cluster.toml"))
    with open_cluster(args) as cluster:
        run(_demo, cluster, args, existed)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="show the engine working on the default cluster",
                              description="Create bucket 'demo' if missing, put a small file, "
                                          "read it back, list the bucket and print the status.")
    p.set_defaults(func=cmd_demo)
