"""S3 gateway commands: `serve`, `keys create|list|delete`, `bucket public NAME on|off`."""

from __future__ import annotations

import argparse
import errno
import os
import time
from functools import partial
from typing import TYPE_CHECKING

from ..engine.errors import R2fsError
from . import UsageError, root_cause
from .cache_cmds import add_cache_arguments, apply_cache_arguments
from .engine_cmds import bucket_group, open_cluster, run
from .uploads_cmds import add_write_arguments, apply_write_arguments

if TYPE_CHECKING:
    from ..engine.store import Cluster


class NoSuchAccessKey(R2fsError):
    """`keys delete` named a key that does not exist."""


class CannotListen(R2fsError):
    """`serve` could not bind its address (in use, not on this machine, privileged port)."""


#: bind() errors that are the user's to fix, not internal errors
_BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def _listen(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"invalid address {text!r}: use HOST:PORT, e.g. 127.0.0.1:9000")
    return text


def cmd_serve(args: argparse.Namespace) -> int:
    from ..s3 import server

    if (args.certfile is None) != (args.keyfile is None):
        raise UsageError("--certfile and --keyfile go together")
    server.configure_logging()

    def ready(url: str) -> None:
        print(f"r2fs S3 gateway listening on {url} (region auto; path-style, or BUCKET.{args.domain})",
              flush=True)

    with open_cluster(args) as cluster:
        apply_write_arguments(cluster, args)
        scheme = "https" if args.certfile else "http"
        apply_cache_arguments(cluster, args, self_url=f"{scheme}://{args.listen}")
        try:
            run(partial(server.serve, cluster, args.listen, virtual_hosts=(args.domain,),
                        certfile=args.certfile, keyfile=args.keyfile, on_ready=ready))
        except BaseException as exc:
            cause = root_cause(exc)  # hypercorn binds inside a nursery: an ExceptionGroup
            if isinstance(cause, OSError) and cause.errno in _BIND_ERRORS:
                raise CannotListen(f"cannot listen on {args.listen}: "
                                   f"{os.strerror(cause.errno).lower()}") from None
            raise
    return 0


async def _keys_create(cluster: Cluster, args: argparse.Namespace) -> None:
    from ..s3 import keys

    if args.bucket is not None:
        await cluster.head_bucket(args.bucket)  # NoSuchBucket: refuse keys for missing buckets
    key = await keys.create_key(cluster, bucket=args.bucket, read_only=args.read_only)
    print(f"AWS_ACCESS_KEY_ID={key.id}")
    print(f"AWS_SECRET_ACCESS_KEY={key.secret}")


async def _keys_list(cluster: Cluster, args: argparse.Namespace) -> None:
    from ..s3 import keys

    for key in sorted(await keys.list_keys(cluster), key=lambda k: k.created):
        scope = f"bucket {key.bucket}" if key.bucket else "all buckets"
        mode = "read-only" if key.read_only else "read-write"
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(key.created))
        print(f"{key.id}  {mode:10}  {scope}  created {created}")


async def _keys_delete(cluster: Cluster, args: argparse.Namespace) -> None:
    from ..s3 import keys

    if not await keys.delete_key(cluster, args.id):
        raise NoSuchAccessKey(f"no access key {args.id}")
    print(f"deleted access key {args.id}")


async def _bucket_public(cluster: Cluster, args: argparse.Namespace) -> None:
    await cluster.update_bucket_settings(args.name, public=True if args.state == "on" else None)
    print(f"bucket {args.name}: anonymous read access {args.state}")


def _runner(fn):
    def cmd(args: argparse.Namespace) -> int:
        with open_cluster(args) as cluster:
            run(fn, cluster, args)
        return 0
    return cmd


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the S3-compatible gateway",
                              description="Serve the cluster's buckets over an S3-compatible API (SigV4).")
    p.add_argument("--listen", type=_listen, default="127.0.0.1:9000", metavar="HOST:PORT",
                   help="address to bind (default 127.0.0.1:9000)")
    p.add_argument("--domain", default="localhost",
                   help="virtual-host-style suffix: BUCKET.DOMAIN addresses a bucket (default localhost)")
    p.add_argument("--certfile", help="TLS certificate (PEM) to serve https")
    p.add_argument("--keyfile", help="TLS private key (PEM)")
    add_write_arguments(p)  # --region, --write-mode: shared with `mount`
    add_cache_arguments(p)  # --cache-dir, --cache-size, --peer...: shared with `mount`
    p.set_defaults(func=cmd_serve)

    k = subparsers.add_parser("keys", help="manage S3 access keys", description="Manage S3 access keys.")
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION")
    ks.required = True
    c = ks.add_parser("create", help="create a key pair (the secret is shown once)")
    c.add_argument("--bucket", help="restrict the key to this bucket")
    c.add_argument("--read-only", action="store_true", help="allow only reads and listings")
    c.set_defaults(func=_runner(_keys_create))
    ks.add_parser("list", help="list access keys (without secrets)").set_defaults(func=_runner(_keys_list))
    d = ks.add_parser("delete", help="delete an access key")
    d.add_argument("id", metavar="ID", help="access key id")
    d.set_defaults(func=_runner(_keys_delete))

    pub = bucket_group(subparsers).add_parser(
        "public", help="allow or stop anonymous read-only access (like r2.dev)")
    pub.add_argument("name", metavar="NAME", help="bucket name")
    pub.add_argument("state", choices=("on", "off"))
    pub.set_defaults(func=_runner(_bucket_public))
