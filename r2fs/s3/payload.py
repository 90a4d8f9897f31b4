"""Request payloads on their way to the store: decode, hash, verify, stream.

One pipeline for PutObject and UploadPart: the raw body (checked against
Content-Length) -> aws-chunked decoding if the client streams -> regrouping
into pieces of up to 1 MiB, hashed in a worker thread -> the store. At the
end it checks the signed payload SHA-256 and any `x-amz-checksum-*` (from a
header or the aws-chunked trailer); a mismatch raises, so the store commits
nothing. Memory stays at about one piece whatever the object size.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import AsyncIterator

import trio

from . import checksums, sigv4
from .chunked import PIECE, THREAD_THRESHOLD, ChunkedDecoder
from .context import content_md5
from .errors import S3Error
from .http import Request
CHECKSUM_HEADER = "x-amz-checksum-"
#: x-amz-checksum-* headers that are settings, not checksum values.
NOT_VALUES = ("type", "mode", "algorithm")


class Payload:
    """An async iterable body; after it is exhausted, `checksums` holds verified values.

    `compute`: algorithms to compute (and report in `checksums`) even if the client
    sent no value for them -- a multipart upload's parts all need the upload's
    algorithm. `header_checksums=False`: the x-amz-checksum-* headers describe
    something else than this body (CompleteMultipartUpload: the whole object)."""

    def __init__(self, req: Request, ctx: sigv4.SigningContext | None, *,
                 compute: tuple[str, ...] = (), header_checksums: bool = True) -> None:
        self._req = req
        self._ctx = ctx
        self.mode = ctx.payload_hash if ctx is not None else sigv4.UNSIGNED_PAYLOAD
        encoding = (req.header("content-encoding") or "").lower()
        self.chunked = self.mode in sigv4.STREAMING_MODES or "aws-chunked" in encoding
        self.checksums: dict[str, str] = {}
        self._expected: dict[str, str | None] = {}  # algorithm -> value (None: from trailer)
        self._compute = compute
        for name, value in req.headers if header_checksums else ():
            if name.startswith(CHECKSUM_HEADER) and name[len(CHECKSUM_HEADER):] not in NOT_VALUES:
                algo = checksums.normalize_algorithm(name[len(CHECKSUM_HEADER):])
                self._expected[algo] = checksums.check_b64(algo, value)
        trailer = req.header("x-amz-trailer")
        if trailer:
            for name in trailer.split(","):
                name = name.strip().lower()
                if not name.startswith(CHECKSUM_HEADER):
                    raise S3Error("InvalidRequest", f"unsupported trailer {name!r}")
                self._expected.setdefault(checksums.normalize_algorithm(name[len(CHECKSUM_HEADER):]), None)
            if not self.chunked:
                raise S3Error("InvalidRequest", "x-amz-trailer needs an aws-chunked body")
        self._decoded_length: int | None = None
        if self.chunked:
            value = req.header("x-amz-decoded-content-length")
            if value is None or not value.strip().isdigit():
                raise S3Error("MissingContentLength", "aws-chunked bodies need x-amz-decoded-content-length")
            self._decoded_length = int(value)
        self._signed_hash = None if self.mode in (sigv4.UNSIGNED_PAYLOAD, *sigv4.STREAMING_MODES) else self.mode

    @property
    def length(self) -> int | None:
        """The object size the client announced, when known before reading."""
        return self._decoded_length if self.chunked else self._req.content_length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        source = self._req.body()
        decoder = None
        if self.chunked:
            decoder = ChunkedDecoder(source.__aiter__(), self.mode, self._ctx, self._decoded_length)
            source = decoder.__aiter__()
        hashers = checksums.MultiHasher(list(dict.fromkeys([*self._expected, *self._compute])))
        sha = hashlib.sha256() if self._signed_hash else None

        def update(data: bytes) -> None:
            hashers.update(data)
            if sha is not None:
                sha.update(data)

        pending: list[bytes] = []
        size = 0
        async for piece in source:
            pending.append(piece)
            size += len(piece)
            if size >= PIECE:
                data = b"".join(pending)
                pending, size = [], 0
                await trio.to_thread.run_sync(update, data)
                yield data
        if pending:
            data = b"".join(pending)
            if len(data) >= THREAD_THRESHOLD:
                await trio.to_thread.run_sync(update, data)
            else:
                update(data)
            yield data
        self._verify(hashers, sha, decoder.trailers if decoder else {})

    def _verify(self, hashers: checksums.MultiHasher, sha, trailers: dict[str, str]) -> None:
        if sha is not None and not hmac.compare_digest(sha.hexdigest(), self._signed_hash):
            raise S3Error("XAmzContentSHA256Mismatch")
        computed = hashers.digests()
        for algo, value in self._expected.items():
            if value is None:
                value = trailers.get(CHECKSUM_HEADER + algo)
                if value is None:
                    raise S3Error("InvalidRequest", f"the declared trailer x-amz-checksum-{algo} is missing")
                value = checksums.check_b64(algo, value)
            if computed[algo] != value:
                raise S3Error("BadDigest", f"the x-amz-checksum-{algo} you specified did not match "
                                           "the calculated checksum")
            self.checksums[algo] = value
        for algo in self._compute:
            self.checksums.setdefault(algo, computed[algo])


async def read_document(req: Request, ctx: sigv4.SigningContext | None, limit: int, *,
                        header_checksums: bool = True) -> bytes:
    """A small request document (XML), verified like any payload: signed SHA-256,
    aws-chunked signatures, x-amz-checksum-* and Content-MD5; refused beyond `limit`."""
    md5 = content_md5(req)
    parts, total = [], 0
    async for piece in Payload(req, ctx, header_checksums=header_checksums):
        total += len(piece)
        if total > limit:
            raise S3Error("InvalidRequest", f"request body larger than {limit} bytes")
        parts.append(piece)
    body = b"".join(parts)
    if md5 is not None and hashlib.md5(body).digest() != md5:
        raise S3Error("BadDigest", "the Content-MD5 you specified did not match what was received")
    return body
