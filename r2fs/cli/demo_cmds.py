"""`r2fs demo`: the embedded default cluster, the bucket `demo`, mounted as a folder.

This is what `make demo` runs. Step by step, saying what each did:

1. the engine alone: open (or create) the default cluster, create the bucket
   `demo` if missing, put a small text file and a 1 MiB object (chunked,
   encrypted, Reed-Solomon coded over the node directories), read both back
   and compare, list the bucket;
2. the folder: mount the bucket at `./mnt` (or `--mountpoint`), read the
   text file back through the mount, write one through it and read that
   back through the engine, and say how to unmount.

Each step is one function of this module, so further front ends (the S3
gateway) add a step of their own after the mount.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket

from ..engine.errors import NoSuchBucket, R2fsError
from ..engine.store import Cluster
from . import cluster_path
from .engine_cmds import listing_lines, open_cluster, run
from .fuse_cmds import MountFailed, daemon_pid, is_r2fs_mount, start_background
from .progress import format_size

DEMO_BUCKET = "demo"
DEMO_KEY = "hello.txt"
#: Big enough not to be kept inline in its manifest: it goes through the whole
#: data path (chunk, encrypt, RS-code, one shard per node directory).
DEMO_BIG_KEY = "random-1MiB.bin"
DEMO_BIG_SIZE = 1024 * 1024
FROM_FOLDER_KEY = "written-through-the-folder.txt"


class DemoFailed(R2fsError):
    """The demo read back something other than what it wrote."""


def _say(text: str) -> None:
    print(text, flush=True)


async def _read(cluster: Cluster, key: str) -> bytes:
    body = await cluster.bucket(DEMO_BUCKET).get(key)
    try:
        return await body.read()
    finally:
        await body.aclose()


def hello_text() -> bytes:
    return (f"Hello from r2fs on {socket.gethostname()}.\n"
            "This object was chunked, encrypted with AES-256-GCM and Reed-Solomon coded\n"
            "over the node directories of the cluster.\n").encode()


async def engine_step(cluster: Cluster, args: argparse.Namespace, existed: bool) -> None:
    """Step 1: the store API alone."""
    how = "opened" if existed else "created with the embedded defaults"
    _say(f"cluster   {cluster_path(args)} ({how})")
    try:
        await cluster.head_bucket(DEMO_BUCKET)
        _say(f"bucket    {DEMO_BUCKET} already exists")
    except NoSuchBucket:
        await cluster.create_bucket(DEMO_BUCKET)
        _say(f"bucket    {DEMO_BUCKET} created")

    bucket = cluster.bucket(DEMO_BUCKET)
    content = hello_text()
    info = await bucket.put(DEMO_KEY, content, http_metadata={"content-type": "text/plain"},
                            custom_metadata={"written-by": "r2fs demo"})
    _say(f"put       {DEMO_BUCKET}/{DEMO_KEY}: {format_size(info.size)}, etag {info.etag}")
    back = await _read(cluster, DEMO_KEY)
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
    if await _read(cluster, DEMO_BIG_KEY) != big:
        raise DemoFailed(f"{DEMO_BUCKET}/{DEMO_BIG_KEY} read back differs from what was written")
    _say(f"put+get   {DEMO_BUCKET}/{DEMO_BIG_KEY}: {format_size(info.size)} of pseudo-random bytes in "
         f"{len(info.chunks)} chunk(s), each encrypted and RS-coded into shards on the nodes; "
         "read back identical")

    _say(f"ls        {DEMO_BUCKET}/ (first page):")
    page = await bucket.list(delimiter="/")
    for line in listing_lines(page.objects, page.delimited_prefixes, ""):
        _say("  " + line)


def mount_step(args: argparse.Namespace) -> str:
    """Step 2: the bucket as a folder. Returns the mount point."""
    mountpoint = os.path.abspath(args.mountpoint)
    if is_r2fs_mount(mountpoint):
        pid = daemon_pid(mountpoint)
        if _mounted_cluster(pid) != os.path.abspath(cluster_path(args)):
            raise MountFailed(f"{mountpoint} is an r2fs mount of another cluster or bucket "
                              f"(pid {pid}); unmount it first: r2fs umount {mountpoint}")
        _say(f"mount     {mountpoint} is already an r2fs mount (pid {pid}); using it")
    else:
        os.makedirs(mountpoint, exist_ok=True)
        try:
            pid, log = start_background(cluster_path(args), DEMO_BUCKET, mountpoint)
        except MountFailed as exc:
            raise MountFailed(f"{exc}; the engine part above worked, the mount needs FUSE "
                              "(/dev/fuse, fusermount3)") from None
        _say(f"mount     bucket {DEMO_BUCKET} mounted at {mountpoint} (pid {pid}, log: {log})")

    with open(os.path.join(mountpoint, DEMO_KEY), "rb") as f:
        through = f.read()
    if through != hello_text():
        raise DemoFailed(f"{mountpoint}/{DEMO_KEY} differs from {DEMO_BUCKET}/{DEMO_KEY}")
    _say(f"cat       {mountpoint}/{DEMO_KEY}: the object, read through the folder")

    note = b"Written with plain open()/write() into the mounted folder.\n"
    with open(os.path.join(mountpoint, FROM_FOLDER_KEY), "wb") as f:
        f.write(note)  # committed to the bucket when the file is closed
    return mountpoint


def _mounted_cluster(pid: int | None) -> str | None:
    """The cluster directory a running demo mount daemon serves (from its command line)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        i = argv.index("--cluster")
        if argv[i + 2] != "mount" or argv[i + 3] != DEMO_BUCKET:
            return None
        return os.path.abspath(argv[i + 1])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def cmd_demo(args: argparse.Namespace) -> int:
    existed = os.path.exists(os.path.join(cluster_path(args), "cluster.toml"))
    with open_cluster(args) as cluster:
        run(engine_step, cluster, args, existed)
    if args.no_mount:
        _say(f"done; try: r2fs get {DEMO_BUCKET}/{DEMO_KEY} -")
        return 0
    mountpoint = mount_step(args)
    with open_cluster(args) as cluster:
        back = run(_read, cluster, FROM_FOLDER_KEY)
    _say(f"get       {DEMO_BUCKET}/{FROM_FOLDER_KEY}: written through the folder, "
         f"{len(back)} bytes read back through the engine")
    _say("")
    _say(f"The bucket '{DEMO_BUCKET}' is mounted at {mountpoint}: use it like any folder")
    _say(f"(ls, cp, rsync, tar, git, sqlite...). Unmount with:  r2fs umount {mountpoint}")
    if not args.no_gateway:
        gateway_step(args)
    return 0


def gateway_step(args: argparse.Namespace) -> None:
    """Start the S3 gateway beside the mount (reused if already running) and show a key."""
    from ..s3.launch import demo_key, start_background as start_gateway

    gw = start_gateway(cluster_path(args), args.listen)
    with open_cluster(args) as cluster:
        key = run(demo_key, cluster)
    _say("")
    _say(f"S3 gateway {'started' if gw.started else 'already running'} at {gw.endpoint} "
         f"(pid {gw.pid}, log {gw.log}); region 'auto', bucket '{DEMO_BUCKET}':")
    _say(f"  export AWS_ACCESS_KEY_ID={key.id}")
    _say(f"  export AWS_SECRET_ACCESS_KEY={key.secret}")
    _say(f"  aws --endpoint-url {gw.endpoint} --region auto s3 ls s3://{DEMO_BUCKET}/")
    _say(f"Stop it with:  kill {gw.pid}")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="set up the default cluster and mount bucket 'demo' at ./mnt",
                              description="Create bucket 'demo' on the default cluster if missing, "
                                          "show the engine storing and reading objects, then mount "
                                          "the bucket as a folder at ./mnt and say how to unmount.")
    p.add_argument("--mountpoint", default="mnt", metavar="DIR",
                   help="where to mount the bucket (default: ./mnt)")
    p.add_argument("--no-mount", action="store_true", help="only the engine part")
    p.add_argument("--no-gateway", action="store_true", help="do not start the S3 gateway")
    p.add_argument("--listen", default="127.0.0.1:9000", metavar="HOST:PORT",
                   help="where the demo's S3 gateway listens (default 127.0.0.1:9000)")
    p.set_defaults(func=cmd_demo)
