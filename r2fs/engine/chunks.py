"""The chunk data path: seal -> RS-encode -> shard files on nodes, and back.

This is the only module that combines keys, crypto, erasure, shards and nodes.
It knows nothing about buckets, objects or LMDB: the store passes in a chunk
id, a generation (bumped when a chunk is stored again after garbage
collection, so old and new shard files never share a name) and the placement
recorded in the chunk's metadata record.

Every method is synchronous, thread-safe and meant to be called through
`trio.to_thread.run_sync`. Shard files of one chunk are written and read
concurrently on a small shared I/O pool: an fsync waits on the disk, not the
CPU, so k+m of them in parallel cost about as much as one.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Mapping, Sequence

from .crypto import open_chunk, seal_chunk
from .erasure import Erasure
from .errors import ChunkCorrupt, DataUnavailable, UnsupportedFormat
from .keys import MasterKey
from .nodes import LocalNode, NodeUnavailable
from .shards import ShardInvalid, pack_shard_parts, read_shard

Buffer = bytes | bytearray | memoryview

_SHARD_NAME = re.compile(r"^([0-9a-f]{64})\.(\d+)\.(\d+)$")
_IO_WORKERS = 12
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _io_pool() -> ThreadPoolExecutor:
    """One process-wide pool for shard I/O (threads are made lazily, at most _IO_WORKERS)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_IO_WORKERS, thread_name_prefix="r2fs-shard-io")
        return _pool


def _describe(context: str, chunk_id: bytes) -> str:
    where = f"{context}: " if context else ""
    return f"{where}chunk {chunk_id.hex()}"


class ChunkStore:
    def __init__(self, master: MasterKey, nodes: Mapping[str, LocalNode], k: int, m: int,
                 stripe_size: int = 256 * 1024) -> None:
        self.master = master
        self.nodes = nodes
        self.k, self.m = k, m
        self.erasure = Erasure(k, m, stripe_size)
        self.stripe_size = stripe_size

    # --- crypto --------------------------------------------------------------------

    def seal(self, chunk_id: bytes, plaintext: Buffer) -> bytearray:
        return seal_chunk(self.master, chunk_id, plaintext)

    def unseal(self, chunk_id: bytes, sealed: Buffer) -> bytearray:
        return open_chunk(self.master, chunk_id, sealed)

    # --- names -----------------------------------------------------------------------

    def shard_names(self, chunk_id: bytes, gen: int) -> list[str]:
        h = chunk_id.hex()
        base = f"shards/{h[:2]}/{h[2:4]}/{h}.{gen}."
        return [f"{base}{i}" for i in range(self.k + self.m)]

    @staticmethod
    def parse_shard_name(name: str) -> tuple[bytes, int, int] | None:
        """(chunk id, gen, index) of a shard file name (bare or node-relative), else None.

        Temp files and anything unexpected give None, so an orphan scan can
        treat "not a shard name" and "shard of no known chunk" alike.
        """
        parts = name.split("/")
        match = _SHARD_NAME.match(parts[-1])
        if match is None:
            return None
        h = match.group(1)
        if len(parts) > 1 and parts[-4:-1] != ["shards", h[:2], h[2:4]]:
            return None
        return bytes.fromhex(h), int(match.group(2)), int(match.group(3))

    # --- write -----------------------------------------------------------------------

    def _node(self, node_id: str) -> LocalNode:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise NodeUnavailable(f"node {node_id} is not part of this cluster") from None

    def write_shards(self, chunk_id: bytes, gen: int, sealed: Buffer,
                     placement: Sequence[str]) -> int:
        """RS-encode a sealed chunk and durably write shard i on node placement[i].

        All k+m shards must land, otherwise the ones written are removed and
        NodeUnavailable is raised: a chunk is never recorded with less
        redundancy than the cluster promises. Returns the bytes stored.
        """
        n = self.k + self.m
        if len(placement) != n:
            raise ValueError(f"placement has {len(placement)} nodes, need {n}")
        nodes = [self._node(nid) for nid in placement]
        names = self.shard_names(chunk_id, gen)
        parts = self.erasure.encode_parts(sealed)
        files = [pack_shard_parts(chunk_id, i, self.k, self.m, self.stripe_size, parts[i],
                                  self.erasure.codec) for i in range(n)]
        pool = _io_pool()
        futures: list[Future[None]] = [pool.submit(nodes[i].write_parts, names[i], files[i])
                                       for i in range(n)]
        errors = []
        for i, fut in enumerate(futures):
            try:
                fut.result()
            except (OSError, NodeUnavailable) as e:
                errors.append(f"{placement[i]}: {getattr(e, 'strerror', None) or e}")
        if errors:
            for i in range(n):
                try:
                    nodes[i].delete(names[i])
                except OSError:
                    pass
            raise NodeUnavailable(
                f"chunk {chunk_id.hex()}: could not store shards ({'; '.join(errors)})")
        return sum(len(p) for f in files for p in f)

    # --- read ------------------------------------------------------------------------

    def _fetch(self, chunk_id: bytes, name: str, index: int, node_id: str) -> memoryview:
        """One verified shard payload; raises on anything short of a good shard."""
        node = self.nodes.get(node_id)
        if node is None:
            raise NodeUnavailable(f"unknown node {node_id}")
        header, payload = read_shard(node.read(name), expect_chunk_id=chunk_id, expect_index=index)
        if (header.k, header.m, header.codec, header.stripe_size) != (
                self.k, self.m, self.erasure.codec, self.stripe_size):
            raise ShardInvalid(
                f"shard coded as RS({header.k},{header.m}) codec {header.codec} stripe "
                f"{header.stripe_size}, cluster uses RS({self.k},{self.m}) codec "
                f"{self.erasure.codec} stripe {self.stripe_size}")
        return payload

    def read_sealed(self, chunk_id: bytes, gen: int, placement: Sequence[str], sealed_len: int,
                    *, context: str = "") -> bytearray | memoryview:
        """The sealed chunk from any k good shards (data shards first, in parallel).

        Parity shards are read only when a data shard is missing or fails its
        checksum. Fewer than k good shards -> DataUnavailable naming `context`.
        """
        n = self.k + self.m
        if len(placement) != n:
            raise ValueError(f"placement has {len(placement)} nodes, need {n}")
        names = self.shard_names(chunk_id, gen)
        pool = _io_pool()
        good: dict[int, memoryview] = {}
        problems: list[str] = []
        unsupported: list[str] = []

        def collect(indices: range) -> None:
            futures = {i: pool.submit(self._fetch, chunk_id, names[i], i, placement[i])
                       for i in indices}
            for i, fut in futures.items():
                try:
                    good[i] = fut.result()
                except FileNotFoundError:
                    problems.append(f"shard {i} on {placement[i]}: missing")
                except UnsupportedFormat as e:
                    unsupported.append(str(e))
                    problems.append(f"shard {i} on {placement[i]}: {e}")
                except (ShardInvalid, NodeUnavailable) as e:
                    problems.append(f"shard {i} on {placement[i]}: {e}")
                except OSError as e:
                    problems.append(f"shard {i} on {placement[i]}: {e.strerror or e}")

        collect(range(self.k))
        if len(good) < self.k:
            collect(range(self.k, n))
        if len(good) < self.k:
            what = _describe(context, chunk_id)
            if unsupported and len(good) + len(unsupported) >= self.k:
                raise UnsupportedFormat(f"{what}: {unsupported[0]}")
            raise DataUnavailable(
                f"{what} is unreadable: {len(good)} good shards of {self.k} needed "
                f"({'; '.join(problems)})")
        try:
            return self.erasure.decode(good, sealed_len)
        except DataUnavailable as e:
            raise DataUnavailable(f"{_describe(context, chunk_id)} is unreadable: {e}") from None

    def read(self, chunk_id: bytes, gen: int, placement: Sequence[str], sealed_len: int,
             *, context: str = "") -> bytearray:
        """The authenticated plaintext of a chunk; never unauthenticated bytes."""
        sealed = self.read_sealed(chunk_id, gen, placement, sealed_len, context=context)
        try:
            return self.unseal(chunk_id, sealed)
        except ChunkCorrupt as e:
            if not context:
                raise
            raise ChunkCorrupt(f"{context}: {e}") from None

    # --- delete ------------------------------------------------------------------------

    def delete_shards(self, chunk_id: bytes, gen: int, placement: Sequence[str]) -> tuple[int, int]:
        """(files removed, bytes freed); missing files and unknown nodes are fine."""
        removed = freed = 0
        for name, node_id in zip(self.shard_names(chunk_id, gen), placement):
            node = self.nodes.get(node_id)
            if node is None:
                continue
            size = node.size_of(name)
            if size is not None and node.delete(name):
                removed += 1
                freed += size
        return removed, freed
