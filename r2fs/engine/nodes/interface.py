"""The node-store interface: where one node keeps its shard files.

A node is a flat namespace of named files (shards, snapshot pieces), each
written whole and durably before `write_parts` returns, then read, sized,
listed and deleted; nothing is ever modified in place. `local.py` keeps them
in a directory (ideally its own disk); other stores (an S3-compatible bucket)
implement the same methods, so placement, erasure coding, gc and repair never
know which kind a node is.

Names are relative paths ("shards/ab/cd/<id>.<gen>.<i>"); a store must reject
names that would leave its namespace. A writer killed mid-write leaves either
nothing or a temp file (suffix `TEMP_SUFFIX`) that `names()` still reports, so
that an orphan scan can remove it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Iterator, Protocol, Sequence

from ..errors import R2fsError
from ..fileio import Buffer

TEMP_SUFFIX = ".tmp"


class Scratch(Protocol):
    """A pool of reusable (page-aligned) buffers, as `chunks.BufferPool` is."""

    def get(self, size: int) -> Buffer: ...

    def put(self, buf: object) -> None: ...


class NodeUnavailable(R2fsError):
    """A node cannot be used now (directory missing, disk full or read-only, store not answering)."""


class NodeStore(ABC):
    """One node's files. Blocking methods: call them from the shard-I/O threads."""

    id: str
    region: str

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the node keeps its files (a directory, an s3:// URL), for status and messages."""

    @abstractmethod
    def write_parts(self, name: str, parts: Sequence[Buffer], *,
                    scratch: Scratch | None = None,
                    sync_later: list[str] | None = None) -> None:
        """Durably write the concatenation of `parts` as `name`, replacing any file of that name.

        sync_later: a store whose names become durable only after a further
        step (a directory fsync) appends what to sync for `sync_dirs`; others
        leave it alone. scratch: aligned buffers the store may use for copies.
        """

    def write(self, name: str, data: Buffer) -> None:
        self.write_parts(name, [data])

    @abstractmethod
    def read(self, name: str) -> bytes:
        """The whole file; FileNotFoundError if there is none."""

    @abstractmethod
    def read_into(self, name: str, alloc: Callable[[int], Buffer], *,
                  only_if_cached: bool = False, direct: bool = False) -> memoryview | None:
        """The whole file in a buffer from `alloc(size)` (`view.obj` is that buffer).

        only_if_cached: None, without reading, unless the read is cheap now
        (local page cache); a remote store always answers None to it.
        direct: the file is known to be cold (a hint, for stores that care).
        """

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Remove the file; False if there was none."""

    @abstractmethod
    def size_of(self, name: str) -> int | None:
        """The file's size, or None if there is none."""

    @abstractmethod
    def names(self) -> Iterator[tuple[str, float]]:
        """Every file under shards/ (shards and leftover temp files) with its mtime, streamed."""

    @abstractmethod
    def usage(self) -> tuple[int, int]:
        """(file count, bytes) under shards/ -- a full listing; for status, not hot paths."""

    @abstractmethod
    def entries(self) -> Iterator[tuple[str, int, int, bool]]:
        """Everything the node holds, streamed: (name relative to the root, bytes, bytes of
        storage used, is a directory). A directory store lists its root as "" and every
        directory, and reports allocated blocks (so the sum equals `du`); an object store
        reports objects only, storage used = size. For space accounting (`r2fs status`)."""

    @abstractmethod
    def free_bytes(self) -> int:
        """Space left for more files (a store without a limit reports a large number)."""

    @abstractmethod
    def available(self) -> bool:
        """Can the node be used now? (for status and gc; may probe the store)"""

    @property
    def marked_down(self) -> bool:
        """Known not to answer right now (no probe: placement asks it for every chunk)."""
        return False
