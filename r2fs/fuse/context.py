"""What every part of a mount shares: the bucket, the inode table, settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import trio

from ..engine.store import Bucket, Cluster
from .attrs import Owner
from .inodes import InodeTable, InoPool


@dataclass
class MountOptions:
    # Kernel attribute and name caches: long, because the change poller
    # invalidates what other writers change and our own changes go through the
    # kernel; short timeouts only cost round trips (rsync, tar, stat loops).
    attr_timeout: float = 30.0
    entry_timeout: float = 30.0
    poll_interval: float = 0.25  # change-sequence polling
    writeback: bool = False  # FUSE writeback cache
    read_ahead_kb: int = 4096  # kernel read-ahead for this mount (0: leave the default)
    read_ahead_asked: bool = False  # read_ahead_kb was given with -o (kept under --no-readahead)
    fuse_options: set[str] = field(default_factory=set)  # passed through to libfuse


@dataclass
class MountContext:
    cluster: Cluster
    bucket: Bucket
    bucket_name: str
    owner: Owner
    chunk_size: int
    staging_dir: str
    options: MountOptions
    mounted_ns: int
    layout: tuple[int, int, list[str]]  # k, m, node directories (for statfs)
    inline_threshold: int = 128 * 1024  # files up to this size may be published deferred
    inos: InoPool | None = None  # numbers for files the mount creates
    table: InodeTable = field(default_factory=InodeTable)
    nursery: trio.Nursery | None = None  # background work (encoding completed slots)
    trio_token: trio.lowlevel.TrioToken | None = None  # hands work to trio from the request thread
    clock: trio.abc.Clock | None = None  # trio's clock, readable from the request thread too
    encoders: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(2))

    def now(self) -> float:
        """trio.current_time(), from either thread."""
        return self.clock.current_time() if self.clock is not None else trio.current_time()

    def in_trio(self, fn: "Callable[..., object]", *args: object) -> None:
        """Run `fn(*args)` in the trio thread soon (from either thread)."""
        if self.trio_token is None:
            fn(*args)
        else:
            self.trio_token.run_sync_soon(fn, *args)

    def context(self, key: str) -> str:
        return f"{self.bucket_name}/{key}"
