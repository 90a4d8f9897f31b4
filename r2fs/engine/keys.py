"""The cluster's master key and every key derived from it.

One 256-bit secret (`master.key`) protects a cluster. Nothing is ever
encrypted or keyed with it directly: each purpose (chunk ids, chunk
encryption, small secrets, the key check value) gets its own subkey, derived
with keyed BLAKE2b and a purpose label, so that a value computed for one
purpose can never be replayed as another (a chunk id is not a chunk key, a
secret sealed for "access-keys" does not open as "webhook").
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ChunkCorrupt, ClusterError, WrongMasterKey
from .fileio import fsync_dir, write_all

#: BLAKE2b personalisation for key derivation (at most 16 bytes).
_KDF_PERSON = b"r2fs-kdf-v1"
_SECRET_VERSION = 1
_NONCE = 12


def _sodium_keyed_blake2b_256() -> "Callable[[bytes | bytearray | memoryview, bytes], bytes] | None":
    """libsodium's keyed BLAKE2b-256 (through PyNaCl's cffi binding), or None.

    Why: the chunk id is the largest CPU cost of a put after the ETag's MD5.
    libsodium picks an AVX2 BLAKE2b where the CPU has it; measured on the
    reference VM (4 MiB inputs) 840 MB/s against 587 MB/s for hashlib's. Same function -- keyed BLAKE2b, 32-byte digest, zero salt
    and personalisation -- so the same ids: checked against hashlib before it
    is used, else hashlib stays. The call releases the GIL, as hashlib does.
    PyNaCl is optional; without it hashlib computes the same ids.
    """
    try:
        from nacl._sodium import ffi, lib  # type: ignore[import-not-found]
        fn = lib.crypto_generichash_blake2b_salt_personal
        # sodium_init picks the CPU's fastest BLAKE2b (AVX2); importing the raw
        # binding skips PyNaCl's own call, and without it libsodium runs its
        # portable reference code: 537 instead of 840 MB/s on the reference VM.
        if lib.sodium_init() < 0:
            return None
    except (ImportError, AttributeError):
        return None

    def keyed_blake2b_256(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
        out = ffi.new("unsigned char[32]")
        buf = ffi.from_buffer(data)
        if fn(out, 32, buf, len(buf), key, len(key), ffi.NULL, ffi.NULL) != 0:
            raise ClusterError("libsodium BLAKE2b failed")
        return ffi.buffer(out, 32)[:]

    try:
        for size in (0, 1, 127, 128, 129, 70_000):
            data, key = os.urandom(size), os.urandom(32)
            if keyed_blake2b_256(data, key) != hashlib.blake2b(data, key=key,
                                                               digest_size=32).digest():
                return None
    except Exception:  # noqa: BLE001 -- any trouble: keep hashlib
        return None
    return keyed_blake2b_256


_sodium_blake2b = _sodium_keyed_blake2b_256()
#: Inputs at least this long are hashed by libsodium (shorter: the call costs more).
_SODIUM_MIN = 16 * 1024


def _derive(master: bytes, purpose: str) -> bytes:
    """A 32-byte subkey for `purpose`: BLAKE2b keyed with the master key.

    BLAKE2b in keyed mode is a PRF, so distinct labels give independent keys.
    """
    return hashlib.blake2b(purpose.encode("utf-8"), key=master, digest_size=32,
                           person=_KDF_PERSON).digest()


class MasterKey:
    """A loaded master key with its derived subkeys cached (derivation is per call otherwise)."""

    SIZE = 32

    __slots__ = ("_raw", "_id_key", "_chunk_kdf_key", "_check")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != self.SIZE:
            raise ClusterError(f"master key must be {self.SIZE} bytes, got {len(raw)}")
        self._raw = bytes(raw)
        self._id_key = _derive(self._raw, "chunk-id")
        self._chunk_kdf_key = _derive(self._raw, "chunk-key")
        self._check = _derive(self._raw, "check-value")[:16].hex()

    # --- creation and loading ------------------------------------------------

    @classmethod
    def create(cls, path: str) -> "MasterKey":
        """Write a fresh random key to `path` (must not exist), mode 0600, fsynced.

        O_EXCL so that a second `init` can never silently replace the key that
        existing data is encrypted with.
        """
        raw = secrets.token_bytes(cls.SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ClusterError(f"master key {path} already exists; refusing to overwrite it") from None
        except OSError as e:
            raise ClusterError(f"cannot create master key {path}: {e.strerror}") from None
        try:
            os.fchmod(fd, 0o600)  # umask may have narrowed it; never widen beyond 0600
            write_all(fd, [raw])
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
        return cls(raw)

    @classmethod
    def load(cls, path: str) -> "MasterKey":
        try:
            with open(path, "rb") as f:
                raw = f.read(cls.SIZE + 1)
        except FileNotFoundError:
            raise ClusterError(f"master key {path} is missing; without it no data can be read") from None
        except OSError as e:
            raise ClusterError(f"cannot read master key {path}: {e.strerror}") from None
        if len(raw) != cls.SIZE:
            raise ClusterError(
                f"master key {path} has the wrong size "
                f"({'more than ' + str(cls.SIZE) if len(raw) > cls.SIZE else len(raw)} bytes; "
                f"expected {cls.SIZE})")
        return cls(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "MasterKey":
        return cls(raw)

    # --- derived values --------------------------------------------------------

    def chunk_id(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Content address of a chunk: keyed BLAKE2b-256 of its plaintext.

        Keyed so that a chunk id reveals nothing about content to someone who
        can read the metadata but has no key (no confirmation-of-file attacks).
        hashlib and libsodium release the GIL for large inputs, so threads
        hash in parallel.
        """
        if _sodium_blake2b is not None and len(plaintext) >= _SODIUM_MIN:
            return _sodium_blake2b(plaintext, self._id_key)
        return hashlib.blake2b(plaintext, key=self._id_key, digest_size=32).digest()

    def chunk_key(self, chunk_id: bytes) -> bytes:
        """The AES-256 key of one chunk (unique per chunk id)."""
        return hashlib.blake2b(chunk_id, key=self._chunk_kdf_key, digest_size=32).digest()

    def derive(self, purpose: str) -> bytes:
        """A 32-byte subkey for `purpose` (e.g. "peer-token"), independent of every other."""
        return _derive(self._raw, purpose)

    def check_value(self) -> str:
        """A public fingerprint of the key, stored in cluster.toml.

        Lets the cluster refuse a wrong key up front (WrongMasterKey) instead
        of failing later on every chunk; it reveals nothing about the key.
        """
        return self._check

    def matches(self, check_value: str) -> bool:
        return hmac.compare_digest(self._check, check_value)

    # --- small secrets -----------------------------------------------------------

    def seal_secret(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt a small secret (an access key...) for one named context.

        Format: version byte + 12-byte random nonce + AES-GCM ciphertext+tag;
        the context is both in the key derivation and in the AAD.
        """
        nonce = os.urandom(_NONCE)
        aad = bytes([_SECRET_VERSION]) + context.encode("utf-8")
        ct = AESGCM(_derive(self._raw, "secret:" + context)).encrypt(nonce, plaintext, aad)
        return bytes([_SECRET_VERSION]) + nonce + ct

    def open_secret(self, sealed: bytes, context: str) -> bytes:
        if len(sealed) < 1 + _NONCE + 16:
            raise ChunkCorrupt(f"sealed secret for {context!r} is truncated ({len(sealed)} bytes)")
        if sealed[0] != _SECRET_VERSION:
            raise ChunkCorrupt(f"sealed secret for {context!r} has unknown format version {sealed[0]}")
        aad = bytes([_SECRET_VERSION]) + context.encode("utf-8")
        try:
            return AESGCM(_derive(self._raw, "secret:" + context)).decrypt(
                sealed[1:1 + _NONCE], sealed[1 + _NONCE:], aad)
        except InvalidTag:
            raise WrongMasterKey(
                f"secret for {context!r} does not open with this master key "
                "(wrong key or tampered record)") from None

    def __repr__(self) -> str:  # never print key material
        return f"MasterKey(check={self._check})"
