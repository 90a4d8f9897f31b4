"""The engine's own commands: init, bucket, put, get, ls, rm, stat, status, gc.

Each command is a thin shell over the store API (`r2fs.engine.store`): parse
and check the arguments first (so a typo never creates or touches a cluster),
open the cluster, run one async function under `trio.run`, print a result.
Errors are raised, never printed here: `r2fs.cli.main` turns them into the
one stderr line and the exit status.

Shared helpers other CLI modules import from here:

* `parse_size("4MiB")` -- sizes on the command line (`--chunk-size`,
  `--cache-size`, ...). Use it as an argparse `type=`: a bad value becomes
  a one-line usage error either way.
* `open_cluster(args)` / `run(fn, *args)` -- the cluster of `--cluster` and
  the trio entry point every command uses.
* `bucket_group(subparsers)` -- the `bucket` sub-command group. Another
  module adds an action to it from its own `register`::

      def register(subparsers):
          p = bucket_group(subparsers).add_parser("public", help="...")
          p.add_argument("name"); p.add_argument("state", choices=("on", "off"))
          p.set_defaults(func=cmd_bucket_public)

  The group is created by whichever module asks first, so the order of
  `COMMAND_MODULES` does not matter.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import mimetypes
import os
import re
import secrets
import stat as stat_mod
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, AsyncIterator, BinaryIO, Awaitable, Callable, Iterator, TypeVar

from ..engine.errors import ClusterExists, ClusterNotFound, InvalidClusterConfig, NoSuchKey
from . import UsageError, cluster_path, default_cluster_location
from .progress import Progress, format_size

if TYPE_CHECKING:  # imported where used: `r2fs --help` and `r2fs ls` start fast
    from ..engine.store import Bucket, Cluster
    from ..engine.types import ClusterStatus, GcReport, ObjectInfo

T = TypeVar("T")
MiB = 1024 * 1024

#: Bytes read from a local file or stdin per step of `put`: bounded memory,
#: and large enough that the per-piece overhead is negligible.
PIECE_SIZE = 1 * MiB

# --- sizes ---------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024 ** 2, "mib": 1024 ** 2, "mb": 1000 ** 2,
    "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3,
    "t": 1024 ** 4, "tib": 1024 ** 4, "tb": 1000 ** 4,
}


class BadArgument(UsageError, argparse.ArgumentTypeError):
    """An argument that does not parse.

    Both a UsageError (one line, exit 2, when raised by a command) and an
    ArgumentTypeError (argparse reports it naming the argument, when the
    parser is used as `type=`), so the helpers below work either way.
    """


class InvalidSize(BadArgument):
    """A size argument that is not a size."""


def parse_size(text: str) -> int:
    """`4MiB` -> 4194304. Plain bytes, or a number with a unit: KiB MiB GiB TiB
    (or K M G T, also binary), KB MB GB TB (decimal). Case-insensitive."""
    match = _SIZE_RE.match(text)
    factor = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise InvalidSize(f"invalid size {text!r}: use bytes (4194304) or a number with a unit "
                          "(512KiB, 4MiB, 2GiB; KB/MB/GB are decimal)")
    value = float(match.group(1)) * factor
    if value != int(value):
        raise InvalidSize(f"invalid size {text!r}: not a whole number of bytes")
    return int(value)


# --- arguments -------------------------------------------------------------------

def parse_object_path(text: str, *, key_required: bool = True) -> tuple[str, str]:
    """`BUCKET/KEY` -> (bucket, key). With key_required=False, `BUCKET[/PREFIX]`.

    Only the first `/` separates: the key keeps any further slashes.
    """
    bucket, _, key = text.partition("/")
    if not bucket or (key_required and not key):
        form = "BUCKET/KEY" if key_required else "BUCKET[/PREFIX]"
        raise BadArgument(f"expected {form}, got {text!r}")
    return bucket, key


def object_path(text: str) -> tuple[str, str]:
    """argparse `type=` for BUCKET/KEY: checked before any cluster is opened."""
    return parse_object_path(text)


def prefix_path(text: str) -> tuple[str, str]:
    """argparse `type=` for BUCKET[/PREFIX]."""
    return parse_object_path(text, key_required=False)


def format_time(ts: float) -> str:
    """Local time, to the second, as `ls` shows it (like `aws s3 ls`)."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def format_utc(ts: float) -> str:
    """Exact UTC time for `stat`."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- running ------------------------------------------------------------------------

@contextlib.contextmanager
def open_cluster(args: argparse.Namespace) -> Iterator[Cluster]:
    """The cluster of `--cluster` (or $R2FS_CLUSTER, or the default location).

    Only the default location (~/.local/share/r2fs) is created, with the
    embedded defaults, on first use. Any other directory must already be a
    cluster: a mistyped --cluster or $R2FS_CLUSTER must not quietly become a
    new, empty cluster with a master key of its own.
    """
    from ..engine.store import Cluster

    path = cluster_path(args)
    create = not os.path.exists(os.path.join(path, "cluster.toml")) and _may_create(path)
    cluster = Cluster.open(path, create=create)
    try:
        yield cluster
    finally:
        cluster.close()


def _may_create(path: str) -> bool:
    """Whether `path` may become a cluster by itself (else ClusterNotFound, saying why)."""
    if os.path.realpath(path) == os.path.realpath(default_cluster_location()):
        if not os.path.isdir(path) or not os.listdir(path):
            return True
        raise ClusterNotFound(f"{path} is not an r2fs cluster (no cluster.toml) and is not empty; "
                              f"nothing was created (move its contents away, or: r2fs init)")
    raise not_a_cluster(path)


def require_cluster(path: str) -> None:
    """ClusterNotFound, naming `path` and how to make one, unless it is a cluster
    (for commands that never create one: a mount, before its daemon starts)."""
    if not os.path.exists(os.path.join(path, "cluster.toml")):
        raise not_a_cluster(path)


def not_a_cluster(path: str) -> ClusterNotFound:
    """The one-line error for a path that is not a cluster: why, and the `init` to run."""
    init = "r2fs init" if os.environ.get("R2FS_CLUSTER") == path else f"r2fs --cluster {path} init"
    inside = _enclosing_cluster(path)
    if inside:
        why = f"it is inside the cluster at {inside}"
    elif os.path.exists(path) and not os.path.isdir(path):
        why = "it is not a directory"
    elif os.path.isdir(path):
        why = "no cluster.toml in it"
    else:
        why = "no such directory"
    return ClusterNotFound(f"{path} is not an r2fs cluster ({why}); to create one there: {init}")


def _enclosing_cluster(path: str) -> str | None:
    """The cluster directory `path` lies inside (its nodes/, meta/...), if any."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent != os.path.dirname(parent):
        if os.path.exists(os.path.join(parent, "cluster.toml")):
            return parent
        parent = os.path.dirname(parent)
    return None


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Every command's async body runs here, one trio run per process."""
    import trio

    return trio.run(fn, *args)


def _with_cluster(fn: Callable[[Cluster, argparse.Namespace], Awaitable[int | None]]
                  ) -> Callable[[argparse.Namespace], int]:
    """Make `func(args)` for argparse out of `async fn(cluster, args)`."""
    def command(args: argparse.Namespace) -> int:
        with open_cluster(args) as cluster:
            return run(fn, cluster, args) or 0
    command.__doc__ = fn.__doc__
    return command


# --- init ------------------------------------------------------------------------------

_REGION_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def parse_regions(text: str) -> dict[str, int]:
    """`east:3,west:3` -> {"east": 3, "west": 3} (argparse type)."""
    regions: dict[str, int] = {}
    for part in text.split(","):
        name, sep, count = part.strip().partition(":")
        if not sep or not _REGION_RE.match(name) or not count.isdigit() or int(count) < 1:
            raise BadArgument(f"invalid --regions {text!r}: use NAME:COUNT pairs, e.g. east:3,west:3")
        if name in regions:
            raise BadArgument(f"invalid --regions {text!r}: region {name} given twice")
        regions[name] = int(count)
    return regions


def cmd_init(args: argparse.Namespace) -> int:
    path = cluster_path(args)
    nodes = args.nodes
    if args.regions:
        total = sum(args.regions.values())
        if nodes is not None and nodes != total:
            raise InvalidClusterConfig(f"--regions list {total} nodes but --nodes is {nodes}")
        nodes = total
    nodes = 6 if nodes is None else nodes
    from ..engine.config import validate_layout
    from ..engine.store import Cluster

    validate_layout(nodes, args.k, args.m, args.chunk_size, spell=lambda name: f"--{name}")
    if os.path.exists(os.path.join(path, "cluster.toml")):
        raise ClusterExists(f"a cluster already exists at {path}")
    cluster = Cluster.init(path, nodes=nodes, k=args.k, m=args.m, chunk_size=args.chunk_size,
                           regions=args.regions, meta_url=args.meta)
    meta = cluster.meta.describe()
    cluster.close()
    where = ", ".join(f"{r}: {n}" for r, n in args.regions.items()) if args.regions else ""
    print(f"initialised cluster at {path}: {nodes} nodes{f' ({where})' if where else ''}, "
          f"k={args.k}, m={args.m}, chunk size {format_size(args.chunk_size)}, metadata: {meta}")
    return 0


# --- buckets -------------------------------------------------------------------------------

def bucket_group(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-parsers of `r2fs bucket`, created on first request (see module doc)."""
    group = getattr(subparsers, "_r2fs_bucket_group", None)
    if group is None:
        parser = subparsers.add_parser("bucket", help="create, delete and list buckets",
                                       description="Manage buckets.")
        group = parser.add_subparsers(dest="bucket_command", metavar="ACTION")
        group.required = True
        subparsers._r2fs_bucket_group = group  # type: ignore[attr-defined]
    return group


async def _bucket_create(cluster: Cluster, args: argparse.Namespace) -> None:
    info = await cluster.create_bucket(args.name, location=args.location)
    where = f" in {info.location}" if info.location else ""
    print(f"created bucket {info.name}{where}")


async def _bucket_delete(cluster: Cluster, args: argparse.Namespace) -> None:
    await cluster.delete_bucket(args.name)
    print(f"deleted bucket {args.name}")


async def _bucket_list(cluster: Cluster, args: argparse.Namespace) -> None:
    for info in await cluster.list_buckets():
        where = f"  ({info.location})" if info.location else ""
        print(f"{format_time(info.created)}  {info.name}{where}")


# --- put / get --------------------------------------------------------------------------------

async def _read_pieces(source: BinaryIO, progress: Progress) -> AsyncIterator[bytes]:
    """The local file as pieces of PIECE_SIZE, read off the trio loop."""
    import trio

    while True:
        piece = await trio.to_thread.run_sync(source.read, PIECE_SIZE)
        if not piece:
            return
        progress.update(len(piece))
        yield piece


def cmd_put(args: argparse.Namespace) -> int:
    bucket, key = args.target
    if args.source == "-":
        source, total, content_type = sys.stdin.buffer, None, None
        closer: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    else:
        source = open(args.source, "rb")  # before the cluster: a typo touches nothing
        closer = source
        st = os.fstat(source.fileno())
        total = st.st_size if stat_mod.S_ISREG(st.st_mode) else None
        content_type = mimetypes.guess_type(args.source)[0]
    with closer, open_cluster(args) as cluster:
        info = run(_put, cluster, bucket, key, source, total, content_type)
    print(f"put {bucket}/{key}: {format_size(info.size)}, etag {info.etag}")
    return 0


async def _put(cluster: Cluster, bucket: str, key: str, source: BinaryIO, total: int | None,
               content_type: str | None) -> ObjectInfo:
    http_metadata = {"content-type": content_type} if content_type else None
    with Progress(f"put {bucket}/{key}", total) as progress:
        async with contextlib.aclosing(_read_pieces(source, progress)) as pieces:
            return await cluster.bucket(bucket).put(key, pieces, http_metadata=http_metadata)


class _LocalSink:
    """Where `get` writes: stdout, or a file that appears only when complete.

    A regular file is written under a temporary name in the same directory and
    renamed over the target at the end, so a failed get (missing chunk,
    Ctrl-C, full disk) never leaves a truncated file where a good one was.
    Anything else (a FIFO, /dev/null, a terminal) is written in place.
    """

    def __init__(self, dest: str, key: str) -> None:
        self.final: str | None = None
        self.temp: str | None = None
        if dest == "-":
            self.file: BinaryIO = sys.stdout.buffer
            self.is_stdout = True
            return
        self.is_stdout = False
        if os.path.isdir(dest):
            dest = os.path.join(dest, os.path.basename(key.rstrip("/")) or "object")
        if os.path.exists(dest) and not os.path.isfile(dest):
            self.file = open(dest, "wb")
            return
        shown = dest
        if os.path.islink(dest):
            dest = os.path.realpath(dest)  # replace the file the link points to, not the link
        self.final = dest
        directory = os.path.dirname(dest) or "."
        temp = os.path.join(directory, f".{os.path.basename(dest)}.r2fs-{secrets.token_hex(4)}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, shown) from None
        try:  # from here on, whatever happens (Ctrl-C included) leaves no temporary file
            self.temp = temp
            self.file = os.fdopen(fd, "wb")
            with contextlib.suppress(FileNotFoundError):  # overwriting: keep the mode, like cp
                os.chmod(fd, stat_mod.S_IMODE(os.stat(dest).st_mode))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    @property
    def shown_name(self) -> str:
        return "-" if self.is_stdout else (self.final or self.file.name)

    def commit(self) -> None:
        self.file.flush()
        if self.is_stdout:
            return
        self.file.close()
        if self.temp and self.final:
            os.replace(self.temp, self.final)
            self.temp = None

    def abort(self) -> None:
        if self.is_stdout:
            return
        self.file.close()
        if self.temp:
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
            self.temp = None


def cmd_get(args: argparse.Namespace) -> int:
    bucket, key = args.source
    with open_cluster(args) as cluster:
        size, shown = run(_get, cluster, bucket, key, args.dest)
    if shown != "-":
        print(f"got {bucket}/{key}: {format_size(size)} -> {shown}")
    return 0


async def _get(cluster: Cluster, bucket: str, key: str, dest: str) -> tuple[int, str]:
    import trio

    body = await cluster.bucket(bucket).get(key)  # NoSuchKey before any file is created
    try:
        sink = _LocalSink(dest, key)
        try:
            # Data and bar on the same terminal would garble each other.
            quiet = sink.is_stdout and sys.stdout.isatty()
            with Progress(f"get {bucket}/{key}", body.length, enabled=False if quiet else None) as progress:
                async for piece in body:
                    await trio.to_thread.run_sync(sink.file.write, piece)
                    progress.update(len(piece))
            sink.commit()
        except BaseException:
            sink.abort()
            raise
    finally:
        await body.aclose()
    return body.length, sink.shown_name


# --- ls / rm / stat ---------------------------------------------------------------------------------

def listing_lines(objects: list[ObjectInfo], prefixes: list[str], strip: str) -> list[str]:
    """`aws s3 ls` style: `PRE name/` for prefixes, then date, size, name."""
    lines = [f"{'PRE':>30} {p[len(strip):]}" for p in prefixes]
    lines += [f"{format_time(o.uploaded)} {o.size:>10} {o.key[len(strip):]}" for o in objects]
    return lines


async def list_all(bucket: Bucket, prefix: str, recursive: bool
                   ) -> AsyncIterator[tuple[list[ObjectInfo], list[str]]]:
    """Every page of a listing, following cursors."""
    cursor: str | None = None
    while True:
        page = await bucket.list(prefix=prefix, delimiter=None if recursive else "/", cursor=cursor)
        yield page.objects, page.delimited_prefixes
        if not page.truncated or not page.cursor:
            return
        cursor = page.cursor


async def _ls(cluster: Cluster, args: argparse.Namespace) -> None:
    name, prefix = args.path
    # Like `aws s3 ls`: names relative to the prefix's "directory", full keys when recursive.
    strip = "" if args.recursive else prefix[: prefix.rfind("/") + 1]
    async with contextlib.aclosing(list_all(cluster.bucket(name), prefix, args.recursive)) as pages:
        async for objects, prefixes in pages:
            for line in listing_lines(objects, prefixes, strip):
                print(line)


async def _rm(cluster: Cluster, args: argparse.Namespace) -> None:
    bucket, key = args.path
    if not await cluster.bucket(bucket).delete(key):
        raise NoSuchKey(f"no such key: {bucket}/{key}")
    print(f"deleted {bucket}/{key}")


def stat_lines(info: ObjectInfo) -> list[str]:
    size = f"{info.size} bytes" + (f" ({format_size(info.size)})" if info.size >= 1024 else "")
    storage = "inline in the manifest" if info.inline else f"{len(info.chunks)}"
    lines = [
        f"bucket:    {info.bucket}",
        f"key:       {info.key}",
        f"size:      {size}",
        f"etag:      {info.etag}",
        f"uploaded:  {format_utc(info.uploaded)}",
        f"version:   {info.version}",
        f"chunks:    {storage}",
    ]
    if info.parts:
        lines.append(f"parts:     {len(info.parts)}")
    for title, values in (("http", info.http_metadata), ("custom", info.custom_metadata),
                          ("checksums", info.checksums)):
        if values:
            lines.append(f"{title}:")
            lines += [f"  {k}: {v}" for k, v in sorted(values.items())]
    return lines


async def _stat(cluster: Cluster, args: argparse.Namespace) -> None:
    bucket, key = args.path
    for line in stat_lines(await cluster.bucket(bucket).head(key)):
        print(line)


# --- status / gc -----------------------------------------------------------------------------------

def _value_lines(value: Any, indent: str) -> list[str]:
    """Any nested dict/list/scalar as indented `name: value` lines."""
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list, tuple)) and v:
                lines.append(f"{indent}{k}:")
                lines += _value_lines(v, indent + "  ")
            else:
                lines.append(f"{indent}{k}: {v}")
        return lines
    if isinstance(value, (list, tuple)):
        lines = []
        for item in value:
            sub = _value_lines(item, indent + "  ")
            lines += [f"{indent}- {sub[0].strip()}"] + sub[1:] if sub else []
        return lines
    return [f"{indent}{value}"]


def status_lines(st: ClusterStatus) -> list[str]:
    lines = [
        f"cluster:  {st.path}",
        f"coding:   RS k={st.k} m={st.m} (survives {st.m} lost node(s) per chunk), "
        f"chunk size {format_size(st.chunk_size)}",
        f"nodes:    {len(st.nodes)} (space: what `du` sees in each node directory)",
        f"  {'ID':<6} {'REGION':<8} {'STATE':<9} {'FREE':>10} {'SHARDS':>8} {'MISSING':>7} "
        f"{'DAMAGED':>7} {'OBJ DATA':>10} {'SNAPSHOTS':>10} {'OTHER':>10} {'DU':>10}  PATH",
    ]
    for n in st.nodes:
        state = ("up" if n.available else "DOWN") + (" drain" if n.state == "draining" else "")
        kinds = n.kinds or {}

        def disk(*names: str) -> str:
            return format_size(sum((kinds.get(k) or {}).get("disk_bytes", 0) for k in names))
        sh = n.shards or {}
        lines.append(f"  {n.id:<6} {n.region or '-':<8} {state:<9} {format_size(n.free_bytes):>10} "
                     f"{n.shard_count:>8} {sh.get('missing', 0):>7} {sh.get('damaged', 0):>7} "
                     f"{disk('object_data'):>10} {disk('metadata_snapshots'):>10} "
                     f"{disk('temp', 'other', 'directories'):>10} {format_size(n.disk_bytes):>10}"
                     f"  {n.path}")
    overhead = f" ({st.stored_bytes / st.unique_bytes:.2f}x unique)" if st.unique_bytes else ""
    h = st.health or {}
    lines += [
        f"buckets:  {st.buckets}",
        f"objects:  {st.objects}",
        f"chunks:   {st.chunks}" + (f" ({h.get('degraded_chunks', 0)} degraded: fewer than "
                                    f"k+m good shards; {h.get('lost_chunks', 0)} lost; "
                                    f"{h.get('staged_chunks', 0)} still in local staging)"
                                    if h else ""),
        f"logical:  {format_size(st.logical_bytes)} ({st.logical_bytes} bytes, sum of object sizes)",
        f"unique:   {format_size(st.unique_bytes)} ({st.unique_bytes} bytes, after dedup)",
        f"stored:   {format_size(st.stored_bytes)} ({st.stored_bytes} bytes on the nodes, all "
        f"kinds){overhead}",
    ]
    for example in h.get("examples") or []:
        lines.append(f"  degraded chunk {example}")
    if st.local:
        lines.append("this machine: " + ", ".join(
            f"{kind} {format_size(v['disk_bytes'])}" for kind, v in st.local.items()))
    if st.counters:
        lines.append("counters:")
        for bucket, counts in sorted(st.counters.items()):
            lines.append(f"  {bucket}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    sections = ({"durability": st.durability} if st.durability else {}) | st.extra
    for section, value in sections.items():
        if isinstance(value, (dict, list, tuple)):
            lines.append(f"{section}:")
            lines += _value_lines(value, "  ")
        else:
            lines.append(f"{section}: {value}")
    return lines


async def _status(cluster: Cluster, args: argparse.Namespace) -> None:
    from .running import running_section

    st = await cluster.status()
    st.extra["running here"] = running_section(cluster.path)
    if args.json:
        print(json.dumps(dataclasses.asdict(st), indent=2, sort_keys=True, default=str))
        return
    for line in status_lines(st):
        print(line)


def gc_lines(report: GcReport, seconds: float) -> list[str]:
    return [
        f"gc done in {seconds:.2f} s",
        f"chunks removed:  {report.chunks_removed}",
        f"shards removed:  {report.shards_removed}",
        f"orphans removed: {report.orphans_removed}",
        f"bytes freed:     {format_size(report.bytes_freed)} ({report.bytes_freed} bytes)",
    ] + ([f"kept for the newest metadata snapshot: {report.held_for_snapshot} chunks"]
         if report.held_for_snapshot else [])


async def _gc(cluster: Cluster, args: argparse.Namespace) -> None:
    started = time.monotonic()
    report = await cluster.gc(grace=args.grace)
    for line in gc_lines(report, time.monotonic() - started):
        print(line)


def _grace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise BadArgument(f"invalid grace {text!r}: a number of seconds >= 0")
    return value


# --- registration -------------------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("init", help="create a cluster",
                              description="Create a cluster: node directories, metadata, master key.")
    p.add_argument("--nodes", type=int, default=None, help="number of node directories (default 6)")
    p.add_argument("--regions", type=parse_regions, default=None, metavar="NAME:N,...",
                   help="regions of the nodes, e.g. east:3,west:3 (default: one region)")
    p.add_argument("--k", type=int, default=4, help="data shards per chunk (default 4)")
    p.add_argument("--m", type=int, default=2, help="parity shards per chunk (default 2)")
    p.add_argument("--meta", default=os.environ.get("R2FS_META_URL") or None,
                   metavar="URL",
                   help="keep the metadata in the PostgreSQL database URL (postgresql://..., an empty one) so that "
                        "hosts can share the cluster (default: $R2FS_META_URL, else the "
                        "embedded LMDB in meta/)")
    p.add_argument("--chunk-size", type=parse_size, default=4 * MiB, metavar="SIZE",
                   help="chunk size, e.g. 4MiB (default)")
    p.set_defaults(func=cmd_init)

    group = bucket_group(subparsers)
    p = group.add_parser("create", help="create a bucket")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--location", metavar="REGION", default=None, help="location hint")
    p.set_defaults(func=_with_cluster(_bucket_create))
    p = group.add_parser("delete", help="delete an empty bucket")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_with_cluster(_bucket_delete))
    p = group.add_parser("list", help="list buckets")
    p.set_defaults(func=_with_cluster(_bucket_list))

    p = subparsers.add_parser(
        "put", help="upload a file (or - for stdin) to BUCKET/KEY",
        description="Upload LOCAL_FILE, or standard input with -, as the object BUCKET/KEY, "
                    "streamed in 1 MiB pieces (memory stays bounded for any size). The content "
                    "type is guessed from the file name. Atomic: readers see the old object or "
                    "the new one. A progress bar is drawn on stderr when it is a terminal.")
    p.add_argument("source", metavar="LOCAL_FILE|-")
    p.add_argument("target", metavar="BUCKET/KEY", type=object_path)
    p.set_defaults(func=cmd_put)

    p = subparsers.add_parser(
        "get", help="download BUCKET/KEY to a file (or - for stdout)",
        description="Download the object BUCKET/KEY to LOCAL_FILE, or standard output with -. "
                    "A file is written under a temporary name and renamed when complete, so a "
                    "failed download never leaves a truncated file; into an existing directory, "
                    "the file takes the key's base name.")
    p.add_argument("source", metavar="BUCKET/KEY", type=object_path)
    p.add_argument("dest", metavar="LOCAL_FILE|-")
    p.set_defaults(func=cmd_get)

    p = subparsers.add_parser(
        "ls", help="list objects and prefixes",
        description="List a bucket like `aws s3 ls`: `PRE name/` for common prefixes, then date, "
                    "size and name of each object, names relative to the prefix's directory. "
                    "--recursive lists every key under the prefix in full.")
    p.add_argument("path", metavar="BUCKET[/PREFIX]", type=prefix_path)
    p.add_argument("--recursive", "-r", action="store_true", help="every key, no PRE grouping")
    p.set_defaults(func=_with_cluster(_ls))

    p = subparsers.add_parser(
        "rm", help="delete an object",
        description="Delete the object BUCKET/KEY (an error if it does not exist). Its chunks "
                    "are freed by `r2fs gc`.")
    p.add_argument("path", metavar="BUCKET/KEY", type=object_path)
    p.set_defaults(func=_with_cluster(_rm))

    p = subparsers.add_parser(
        "stat", help="show an object's manifest",
        description="Show the manifest of BUCKET/KEY: size, ETag, upload time, version, chunk "
                    "count (or inline), HTTP and custom metadata, checksums.")
    p.add_argument("path", metavar="BUCKET/KEY", type=object_path)
    p.set_defaults(func=_with_cluster(_stat))

    p = subparsers.add_parser(
        "status", help="nodes, buckets, objects and space used",
        description="The cluster at a glance: coding (k, m, chunk size), every node (region, "
                    "up/down, free space, shards missing or damaged, space by kind: object "
                    "data, metadata snapshots, other -- adding up to what du sees), degraded "
                    "and lost chunks, counts of buckets, objects and chunks, bytes logical, "
                    "unique and stored, scrub and repair state, the mounts and gateways "
                    "running on this machine, and the sections other subsystems add.")
    p.add_argument("--json", action="store_true",
                   help="every figure as JSON (stored_bytes, health, nodes[].kinds, ...)")
    p.set_defaults(func=_with_cluster(_status))

    p = subparsers.add_parser(
        "gc", help="remove shards of unreferenced chunks",
        description="Remove the shards of chunks no object references (for at least --grace "
                    "seconds) and orphaned shard files; prints what it removed.")
    p.add_argument("--grace", type=_grace, default=60.0, metavar="SECONDS",
                   help="keep chunks unreferenced for less than this (default 60)")
    p.set_defaults(func=_with_cluster(_gc))
