"""Running a mount: the kernel session (kernel/), trio for I/O, change poller, clean shutdown.

SIGINT/SIGTERM/SIGHUP flush every dirty open file, then end the FUSE loop
and unmount. An external `fusermount3 -u` ends the loop too; whatever is
still dirty is flushed before the process exits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from functools import partial
import time
from typing import Callable

import trio

from ..engine.errors import R2fsError
from ..engine.store import Cluster
from .attrs import Owner
from .context import MountContext, MountOptions
from ..engine.maintenance import run_maintenance
from ..engine.metasnap import run_snapshotter
from ..engine.replicator import run_replicator
from .invalidate import ChangePoller
from .kernel import mounting
from .kernel.session import Session, StateLock
from .deletes import DeferredDeletes
from .dirattrs import DeferredDirAttrs
from .journal import Journal, journal_dir, replay
from .ops import R2Operations
from .inodes import InoPool
from .names import KEY_MAX
from .tracked import OwnChanges, TrackedBucket

log = logging.getLogger("r2fs.fuse")

#: Options r2fs understands itself; everything else goes to the kernel (kernel/mounting.py).
R2FS_OPTIONS = ("attr_timeout", "entry_timeout", "poll_interval", "writeback", "debug",
                "read_ahead_kb")


class MountError(R2fsError):
    """The mount could not be set up (bad options, mount point, bucket)."""


def parse_options(text: str | None) -> tuple[MountOptions, bool]:
    """`-o a=1,b` -> (MountOptions, debug)."""
    opts = MountOptions()
    debug = False
    for item in filter(None, (text or "").split(",")):
        name, has_value, value = item.partition("=")
        name = name.strip()
        try:
            if name == "read_ahead_kb":
                opts.read_ahead_kb = int(value)
                opts.read_ahead_asked = True
                if opts.read_ahead_kb < 0:
                    raise ValueError
            elif name in ("attr_timeout", "entry_timeout", "poll_interval"):
                setattr(opts, name, float(value))
                if float(value) < 0 or (name == "poll_interval" and float(value) == 0):
                    raise ValueError
            elif name == "writeback":
                opts.writeback = value.lower() not in ("0", "no", "false") if has_value else True
            elif name == "debug":
                debug = True
            elif name in ("rw", "defaults", "nofail", "_netdev", "auto", "noauto", "user", "nouser"):
                continue  # fstab words with no meaning here
            else:
                opts.fuse_options.add(item.strip())
        except ValueError:
            raise MountError(f"bad mount option {item!r}") from None
    return opts, debug


def kernel_options(opts: MountOptions) -> mounting.KernelMountOptions:
    """The mount(2) flags and fuse driver options; MountError for an unknown option."""
    words = {"default_permissions", "fsname=r2fs", "subtype=r2fs"}  # the kernel checks modes
    try:
        return mounting.parse(words | opts.fuse_options)
    except mounting.MountOptionError as exc:
        raise MountError(str(exc)) from None


async def serve(cluster: Cluster, bucket_name: str, mountpoint: str, opts: MountOptions,
                staging_dir: str, on_ready: Callable[[], None] | None = None) -> None:
    """Mount `bucket_name` at `mountpoint` and serve until unmounted or signalled."""
    await cluster.head_bucket(bucket_name)  # NoSuchBucket before anything is mounted
    jdir = journal_dir(cluster.path)
    replayed = await replay(cluster, jdir)  # files closed under mounts that were killed
    if replayed:
        log.info("published %d files closed before an earlier mount went away", replayed)
    # the layout from cluster.toml (status() would walk every shard file)
    cfg = cluster.config
    own = OwnChanges()
    bucket = TrackedBucket(cluster.bucket(bucket_name, max_key=KEY_MAX), own)
    # background merges of slices change layouts, not content: not a foreign change
    cluster.merger.expect = lambda b, k: own.expect(k) if b == bucket_name else None
    cluster.merger.unexpect = lambda b, k: own.unexpect(k) if b == bucket_name else None
    ctx = MountContext(cluster=cluster, bucket=bucket, bucket_name=bucket_name,  # type: ignore[arg-type]
                       owner=Owner(os.getuid(), os.getgid()), chunk_size=cfg.chunk_size,
                       staging_dir=staging_dir, inline_threshold=cfg.inline_threshold,
                       options=opts, mounted_ns=time.time_ns(),
                       layout=(cfg.k, cfg.m, [n.path for n in cfg.nodes]),
                       inos=InoPool(cluster.reserve_inodes))
    ops = R2Operations(ctx)
    ops.files.journal = Journal(cluster, jdir)
    ops.deletes = ops.files.deletes = DeferredDeletes(ctx, ops.files.journal)
    ops.dir_attrs = ops.files.markers = DeferredDirAttrs(ctx, ops.files.journal)
    ops.deletes.creating = ops.dir_attrs.creating
    poller = ChangePoller(ctx, own, lambda ino: ops.files.get(ino) is not None,
                          ops.changed_elsewhere, ops.forget_all_paths)
    state = StateLock()  # request thread <-> trio thread (docs/architecture.md)
    trio.lowlevel.add_instrument(state.instrument())
    # The instrument now ends this very task step with a release, yet no before_task_step
    # took the lock for it: take it here, or that release fails and trio disables the
    # instrument, leaving the request thread and trio unsynchronised for the whole mount.
    state.acquire()
    try:
        mounted = mounting.mount(mountpoint, kernel_options(opts))
    except OSError as exc:
        raise MountError(f"cannot mount at {mountpoint}: {exc}") from None
    session = Session(mounted.fd, ops, state, writeback=opts.writeback, killpriv=True)
    poller.session = session
    log.info("mounted bucket %r at %s", bucket_name, mountpoint)
    stop = trio.Event()  # ends the replicator (draining local uploads) and the snapshotter
    quit = trio.Event()  # the kernel ended the connection, or a signal asked to unmount
    try:
        async with trio.open_nursery() as nursery:
            ctx.nursery = nursery
            ctx.trio_token = trio.lowlevel.current_trio_token()
            ctx.clock = trio.lowlevel.current_clock()
            session.start(nursery)
            nursery.start_soon(_until_ended, session, quit)
            nursery.start_soon(_publish_stats, session, stats_path(staging_dir))
            nursery.start_soon(run_replicator, cluster, stop)
            nursery.start_soon(run_snapshotter, cluster, stop)
            nursery.start_soon(run_maintenance, cluster, stop)  # background scrub + gc
            nursery.start_soon(poller.run)
            nursery.start_soon(ops.files.run_publisher)
            nursery.start_soon(ops.deletes.run)
            nursery.start_soon(ops.dir_attrs.run)
            nursery.start_soon(_on_signals, ops, mountpoint, quit)
            # from a thread: the kernel finishes the knob only once FUSE INIT is answered
            nursery.start_soon(partial(trio.to_thread.run_sync, set_read_ahead, mountpoint,
                                       opts.read_ahead_kb, abandon_on_cancel=True))
            if on_ready is not None:
                on_ready()
            await quit.wait()
            stop.set()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await ops.dir_attrs.settle()  # (new directories before the files in them)
            await ops.files.commit_all()
            await ops.deletes.settle()
            await ops.dir_attrs.settle()
        ops.files.journal.close()
        if not session.ended.is_set():
            mounting.unmount(mountpoint)
        mounted.close()
        log.info("unmounted %s", mountpoint)


def stats_path(staging_dir: str, pid: int | None = None) -> str:
    """Where a mount daemon keeps its request count (for `tools/bench mount`): beside its staging."""
    return os.path.join(os.path.dirname(staging_dir), f"fuse-stats-{pid or os.getpid()}.json")


async def _publish_stats(session: Session, path: str) -> None:
    """Keep the request count readable from outside (every 0.5 s, when it changed), and how
    many of them, by op, had to run in trio (not answered from memory)."""
    last = -1
    try:
        while True:
            if session.requests != last:
                last = session.requests
                with open(path + ".tmp", "w") as f:
                    json.dump({"requests": last, "slow": dict(session.slow)}, f)
                os.replace(path + ".tmp", path)
            await trio.sleep(0.5)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


async def _until_ended(session: Session, quit: trio.Event) -> None:
    await session.wait_ended()
    quit.set()


def kernel_read_ahead_kb(opts: MountOptions, cluster: Cluster) -> int:
    """The kernel read-ahead window to set for this mount (0: the kernel's default).

    The enlarged kernel window is half of r2fs's read-ahead for sequential
    readers (the engine's chunk prefetch is the other half): it keeps several
    requests in flight. `--no-readahead` promises no prefetching for sequential
    readers, so it switches off both -- the window stays at the kernel's own
    default (128 KiB) -- unless `-o read_ahead_kb=N` asks for one explicitly.
    """
    return opts.read_ahead_kb if cluster.reader.readahead.enabled or opts.read_ahead_asked else 0


def read_ahead_knob(mountpoint: str) -> str | None:
    """The sysfs file of the kernel read-ahead window (KiB) of the mount at `mountpoint`."""
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == target:
                return f"/sys/class/bdi/{fields[2]}/read_ahead_kb"
    return None


def set_read_ahead(mountpoint: str, kib: int) -> None:
    """Let the kernel read ahead `kib` KiB on this mount (its FUSE default is 128 KiB).

    Sequential reads then arrive as large, concurrent requests instead of a
    stream of 128 KiB round trips: the single biggest lever for big-file reads
    (measured here: 337 -> 526 MB/s for a cold 1 GiB read). Best effort: it
    needs root (the sysfs knob); otherwise the default stays.
    """
    if not kib:
        return
    try:
        knob = read_ahead_knob(mountpoint)
        if knob is not None:
            with open(knob, "w") as f:
                f.write(f"{kib}\n")
    except OSError as exc:
        log.info("kernel read-ahead left at its default (%s)", exc)


async def _on_signals(ops: R2Operations, mountpoint: str, quit: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %s: flushing and unmounting", signal.Signals(signum).name)
            await ops.dir_attrs.settle()
            await ops.files.commit_all()
            await ops.deletes.settle()
            await ops.dir_attrs.settle()
            await trio.to_thread.run_sync(mounting.unmount, mountpoint)
            quit.set()
            return


def run(cluster_path: str, bucket_name: str, mountpoint: str, options: str | None,
        cache_dir: str | None, on_ready: Callable[[], None] | None = None,
        configure: Callable[[Cluster], None] | None = None) -> int:
    """Blocking entry point for the CLI (foreground).

    `configure` sets up the engine's read tiers and write mode for a
    long-running process (the CLI passes its cache and write flags).
    """
    opts, debug = parse_options(options)
    kernel_options(opts)  # an unknown option fails here, before anything is opened
    # The trio thread answers the kernel and gives the GIL away on every
    # syscall; worker threads running Python (metadata commits) would keep it
    # for the default 5 ms each time. 1 ms bounds that wait per request.
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mountpoint = os.path.abspath(mountpoint)
    if not os.path.isdir(mountpoint):
        raise MountError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already a mount point")
    cluster = Cluster.open(cluster_path)
    if configure is not None:
        try:
            configure(cluster)
        except BaseException:
            cluster.close()
            raise
    opts.read_ahead_kb = kernel_read_ahead_kb(opts, cluster)
    base = cache_dir or os.path.join(cluster_path, "cache")
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f"fuse-staging-{os.getpid()}-", dir=base)  # pid: see cli.fuse_cmds.clean_leftovers
    try:
        trio.run(serve, cluster, bucket_name, mountpoint, opts, staging, on_ready)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        cluster.close()
    return 0
