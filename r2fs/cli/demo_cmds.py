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
import contextlib
import hashlib
import os
import random
import shlex
import signal
import socket
from typing import TYPE_CHECKING

from ..engine.errors import NoSuchBucket, R2fsError
from . import cluster_path
from .engine_cmds import listing_lines, open_cluster, run
from .fuse_cmds import (MountFailed, check_mount_point, clean_leftovers, clear_dead_mount,
                        is_r2fs_mount, r2fs_command, start_background, unmount, wait_for_exit)
from .running import running_gateways, running_mounts
from .progress import format_size

if TYPE_CHECKING:
    from ..engine.store import Cluster

DEMO_BUCKET = "demo"
DEMO_KEY = "hello.txt"
#: Big enough not to be kept inline in its manifest: it goes through the whole
#: data path (chunk, encrypt, RS-code, one shard per node directory).
DEMO_BIG_KEY = "random-1MiB.bin"
DEMO_BIG_SIZE = 1024 * 1024
FROM_FOLDER_KEY = "written-through-the-folder.txt"
#: where r2fs.s3.launch records the gateway it starts (in the cluster directory)
GATEWAY_PID = "gateway.pid"


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
    if clear_dead_mount(mountpoint):
        _say(f"mount     {mountpoint} was a dead r2fs mount (its daemon had exited); cleared it")
    if is_r2fs_mount(mountpoint):
        mine = [m for m in running_mounts(cluster_path(args))
                if m.mountpoint == mountpoint and m.bucket == DEMO_BUCKET]
        if not mine:
            other = [m for m in running_mounts() if m.mountpoint == mountpoint]
            who = f" (pid {other[0].pid}: bucket {other[0].bucket} of {other[0].cluster})" if other else ""
            raise MountFailed(f"{mountpoint} is an r2fs mount of another cluster or bucket{who}; "
                              f"unmount it first: {r2fs_command()} umount {shlex.quote(mountpoint)}")
        _say(f"mount     {mountpoint} is already an r2fs mount (pid {mine[0].pid}); using it")
    else:
        os.makedirs(mountpoint, exist_ok=True)
        check_mount_point(mountpoint, nonempty=False)
        clean_leftovers(os.path.join(cluster_path(args), "cache"))
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


def _stop_command(args: argparse.Namespace) -> str:
    """The command that undoes this demo, as it can be pasted."""
    cmd = [r2fs_command()]
    if args.cluster:
        cmd += ["--cluster", shlex.quote(os.path.abspath(args.cluster))]
    cmd += ["demo", "--stop", "--mountpoint", shlex.quote(os.path.abspath(args.mountpoint))]
    return " ".join(cmd)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.stop:
        return stop_demo(args)
    existed = os.path.exists(os.path.join(cluster_path(args), "cluster.toml"))
    with open_cluster(args) as cluster:
        run(engine_step, cluster, args, existed)
    if args.no_mount:
        _say(f"done; try: {r2fs_command()} get {DEMO_BUCKET}/{DEMO_KEY} -")
        return 0
    mountpoint = mount_step(args)
    with open_cluster(args) as cluster:
        back = run(_read, cluster, FROM_FOLDER_KEY)
    _say(f"get       {DEMO_BUCKET}/{FROM_FOLDER_KEY}: written through the folder, "
         f"{len(back)} bytes read back through the engine")
    _say("")
    _say(f"The bucket '{DEMO_BUCKET}' is mounted at {mountpoint}: use it like any folder")
    _say("(ls, cp, rsync, tar, git, sqlite...). Unmount with:")
    _say(f"  {r2fs_command()} umount {shlex.quote(mountpoint)}")
    if not args.no_gateway:
        gateway_step(args)
    _say("")
    _say(f"Stop the demo (unmount{'' if args.no_gateway else ', stop the gateway'}) with:")
    _say(f"  {_stop_command(args)}")
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


def stop_demo(args: argparse.Namespace) -> int:
    """`demo --stop`: unmount the demo's folder and stop the gateway it started."""
    mountpoint = os.path.abspath(args.mountpoint)
    did = False
    if clear_dead_mount(mountpoint):
        _say(f"cleared the dead mount at {mountpoint}")
        did = True
    elif is_r2fs_mount(mountpoint):
        unmount(mountpoint)
        _say(f"unmounted {mountpoint}")
        did = True
    pidfile = os.path.join(cluster_path(args), GATEWAY_PID)
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pid = None
    gateways = [g for g in running_gateways(cluster_path(args)) if g.pid == pid]
    if gateways:
        os.kill(pid, signal.SIGTERM)
        if not wait_for_exit(pid, 30):
            raise DemoFailed(f"the demo's S3 gateway (pid {pid}) did not stop within 30 s")
        _say(f"stopped the S3 gateway at http://{gateways[0].listen} (pid {pid})")
        did = True
    if pid is not None:
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
    if not did:
        _say(f"nothing to stop: no r2fs mount at {mountpoint}, no demo gateway running")
    return 0


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
    p.add_argument("--stop", action="store_true",
                   help="unmount the demo's folder and stop the S3 gateway the demo started")
    p.set_defaults(func=cmd_demo)
