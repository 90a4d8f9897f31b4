"""Decoding of `aws-chunked` request bodies (SigV4 streaming payloads).

Wire format, one chunk after another, then trailers:

    <hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n ... 0[;chunk-signature=<sig>]\\r\\n
    [x-amz-checksum-crc32:<b64>\\r\\n ...][x-amz-trailer-signature:<sig>\\r\\n]\\r\\n

The decoder streams: data is yielded as it arrives (never a whole chunk in
memory beyond one rechunking buffer), each chunk's signature is checked when
the chunk ends, and any problem raises -- the store commits an object only when
the body iterable finishes cleanly, so a forged or truncated upload leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import AsyncIterator

import trio

from .errors import S3Error
from .sigv4 import STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, SigningContext

MAX_LINE = 4096
#: Hash in a worker thread when at least this much is pending (thread hop ~50us).
THREAD_THRESHOLD = 256 * 1024
#: Pieces handed downstream are at most this big.
PIECE = 1024 * 1024


def _bad(message: str) -> S3Error:
    return S3Error("InvalidRequest", f"malformed aws-chunked body: {message}")


class _Reader:
    """Byte-level access to an async iterator of pieces, with a small lookahead buffer."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self._buf = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            piece = await self._source.__anext__()
        except StopAsyncIteration:
            self._eof = True
            return False
        self._buf += piece
        return True

    async def line(self) -> bytes:
        while True:
            idx = self._buf.find(b"\r\n")
            if idx >= 0:
                line = bytes(self._buf[:idx])
                del self._buf[: idx + 2]
                return line
            if len(self._buf) > MAX_LINE:
                raise _bad("line too long")
            if not await self._fill():
                raise S3Error("IncompleteBody", "aws-chunked body ended early")

    async def upto(self, n: int) -> bytes:
        """Between 1 and n bytes (whatever is buffered or arrives next)."""
        if not self._buf and not await self._fill():
            raise S3Error("IncompleteBody", "aws-chunked body ended early")
        take = bytes(self._buf[:n])
        del self._buf[: len(take)]
        return take

    async def at_end(self) -> bool:
        return not self._buf and not await self._fill()


async def _hash(h, data: bytes) -> None:
    if len(data) >= THREAD_THRESHOLD:
        await trio.to_thread.run_sync(h.update, data)
    else:
        h.update(data)


class ChunkedDecoder:
    """Iterate the decoded payload; afterwards `trailers` holds the trailing headers."""

    def __init__(self, source: AsyncIterator[bytes], mode: str, ctx: SigningContext | None,
                 decoded_length: int | None) -> None:
        self._reader = _Reader(source)
        self._signed = mode in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
        self._expect_trailer_sig = mode == STREAMING_SIGNED_TRAILER
        self._ctx = ctx
        self._decoded_length = decoded_length
        self.trailers: dict[str, str] = {}
        self.total = 0
        if self._signed and ctx is None:
            raise S3Error("AccessDenied", "signed streaming payload without a signature")

    def _check_sig(self, previous: str, digest: str, given: str | None) -> str:
        if given is None:
            raise S3Error("SignatureDoesNotMatch", "a chunk lacks its chunk-signature")
        expected = self._ctx.sign(self._ctx.chunk_string_to_sign(previous, digest))
        if not hmac.compare_digest(expected.encode(), given.lower().encode()):
            raise S3Error("SignatureDoesNotMatch", "a chunk signature does not match")
        return expected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        r = self._reader
        previous = self._ctx.seed_signature if self._ctx else ""
        while True:
            header = await r.line()
            size_text, _, ext = header.partition(b";")
            try:
                size = int(size_text.strip(), 16)
            except ValueError:
                raise _bad(f"bad chunk size {size_text[:20]!r}") from None
            if size < 0:
                raise _bad("negative chunk size")
            signature = None
            if ext:
                name, _, value = ext.decode("latin-1").partition("=")
                if name.strip() == "chunk-signature":
                    signature = value.strip()
            sha = hashlib.sha256() if self._signed else None
            remaining = size
            pending: list[bytes] = []
            pending_len = 0
            while remaining:
                piece = await r.upto(min(remaining, PIECE))
                remaining -= len(piece)
                pending.append(piece)
                pending_len += len(piece)
                if pending_len >= PIECE or not remaining:
                    data = b"".join(pending)
                    pending, pending_len = [], 0
                    if sha is not None:
                        await _hash(sha, data)
                    self.total += len(data)
                    yield data
            if size:
                if await r.line() != b"":
                    raise _bad("chunk data not followed by CRLF")
            if self._signed:
                previous = self._check_sig(previous, sha.hexdigest(), signature)
            if size == 0:
                break
        await self._read_trailers(previous)
        if self._decoded_length is not None and self.total != self._decoded_length:
            raise S3Error("IncompleteBody", "decoded body length differs from x-amz-decoded-content-length")

    async def _read_trailers(self, previous: str) -> None:
        r = self._reader
        raw_lines: list[bytes] = []
        trailer_sig = None
        while True:
            if await r.at_end():
                break  # some clients end right after the final chunk
            line = await r.line()
            if line == b"":
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise _bad("malformed trailer line")
            name = name.strip().lower()
            if name == "x-amz-trailer-signature":
                trailer_sig = value.strip()
                continue
            raw_lines.append(line)
            if len(raw_lines) > 16:
                raise _bad("too many trailers")
            self.trailers[name] = value.strip()
        if self._expect_trailer_sig:
            if trailer_sig is None:
                raise S3Error("SignatureDoesNotMatch", "the trailer signature is missing")
            canonical = b"".join(line.replace(b" ", b"") + b"\n" for line in raw_lines)
            expected = self._ctx.sign(self._ctx.trailer_string_to_sign(
                previous, hashlib.sha256(canonical).hexdigest()))
            if not hmac.compare_digest(expected.encode(), trailer_sig.lower().encode()):
                raise S3Error("SignatureDoesNotMatch", "the trailer signature does not match")
