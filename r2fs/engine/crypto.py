"""Chunk encryption: AES-256-GCM with a per-chunk key.

Sealed chunk format (version 1)::

    version (1 byte) | nonce (12 bytes) | ciphertext (len(plaintext)) | GCM tag (16 bytes)

The key is derived from the master key and the chunk id, and the AAD is the
version byte + chunk id, so a sealed chunk only opens as the chunk it was
written for: a shard set swapped between two chunks fails authentication
instead of returning the other chunk's bytes.

`encrypt_into`/`decrypt_into` write straight into one preallocated buffer:
measured 1.3-2.3 GB/s against 0.6-1.0 GB/s for the allocating calls (DESIGN.md),
and it saves the copy that prefixing the header would otherwise cost.
"""

from __future__ import annotations

import ctypes
import os
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ChunkCorrupt
from .keys import MasterKey

SEAL_VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
_HEADER = 1 + NONCE_SIZE
#: len(sealed) - len(plaintext)
SEAL_OVERHEAD = _HEADER + TAG_SIZE

Buffer = bytes | bytearray | memoryview


def _uninitialized_factory() -> Callable[[int], bytearray]:
    """bytearray(n) without zero-filling it, where CPython allows.

    `bytearray(n)` memsets n bytes: ~0.5 ms per 4 MiB chunk, ~5% of a chunk
    read's CPU, for bytes the cipher overwrites at once. The C API's
    PyByteArray_FromStringAndSize(NULL, n) leaves them uninitialised. Only
    for buffers that are completely written before anyone reads them.
    """
    try:
        fn = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except AttributeError:  # not CPython
        return bytearray
    fn.restype = ctypes.py_object
    fn.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    return lambda n: fn(None, n) if n > 0 else bytearray()


#: A fresh bytearray of n bytes with undefined contents (see _uninitialized_factory).
uninitialized: Callable[[int], bytearray] = _uninitialized_factory()


def _aad(chunk_id: bytes) -> bytes:
    return bytes([SEAL_VERSION]) + chunk_id


def seal_chunk(master: MasterKey, chunk_id: bytes, plaintext: Buffer) -> bytearray:
    """Encrypt and authenticate one chunk; returns a fresh buffer the caller owns."""
    out = uninitialized(SEAL_OVERHEAD + len(plaintext))
    seal_chunk_into(master, chunk_id, plaintext, out)
    return out


def seal_chunk_into(master: MasterKey, chunk_id: bytes, plaintext: Buffer,
                    out: bytearray | memoryview) -> None:
    """`seal_chunk` into a caller's buffer of exactly len(plaintext) + SEAL_OVERHEAD bytes.

    A random nonce per seal: the key is already unique per chunk id, the
    nonce keeps re-sealing the same chunk (after gc, in another process) safe too.
    """
    view = memoryview(out).cast("B")
    if len(view) != SEAL_OVERHEAD + len(plaintext):
        raise ValueError(f"seal buffer is {len(view)} bytes, need {SEAL_OVERHEAD + len(plaintext)}")
    nonce = os.urandom(NONCE_SIZE)
    view[0] = SEAL_VERSION
    view[1:_HEADER] = nonce
    AESGCM(master.chunk_key(chunk_id)).encrypt_into(nonce, plaintext, _aad(chunk_id), view[_HEADER:])


def open_chunk(master: MasterKey, chunk_id: bytes, sealed: Buffer) -> bytearray:
    """Decrypt and authenticate; ChunkCorrupt on any failure, never unauthenticated bytes."""
    if len(sealed) < SEAL_OVERHEAD:
        raise ChunkCorrupt(f"chunk {chunk_id.hex()}: sealed data truncated ({len(sealed)} bytes)")
    out = uninitialized(len(sealed) - SEAL_OVERHEAD)
    open_chunk_into(master, chunk_id, sealed, out)
    return out


def open_chunk_into(master: MasterKey, chunk_id: bytes, sealed: Buffer,
                    out: bytearray | memoryview) -> None:
    """`open_chunk` into a caller's buffer of exactly len(sealed) - SEAL_OVERHEAD bytes.

    On failure `out` may hold partial plaintext: the caller must discard it.
    """
    view = memoryview(sealed).cast("B")
    if len(view) < SEAL_OVERHEAD:
        raise ChunkCorrupt(f"chunk {chunk_id.hex()}: sealed data truncated ({len(view)} bytes)")
    if view[0] != SEAL_VERSION:
        raise ChunkCorrupt(f"chunk {chunk_id.hex()}: unknown encryption format version {view[0]}")
    if len(out) != len(view) - SEAL_OVERHEAD:
        raise ValueError(f"open buffer is {len(out)} bytes, need {len(view) - SEAL_OVERHEAD}")
    try:
        AESGCM(master.chunk_key(chunk_id)).decrypt_into(
            view[1:_HEADER], view[_HEADER:], _aad(chunk_id), out)
    except InvalidTag:
        raise ChunkCorrupt(
            f"chunk {chunk_id.hex()} failed authentication (tampered data or wrong master key)") from None
