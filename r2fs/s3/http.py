"""A thin request/response layer over ASGI for the gateway.

Keeps the raw path and query (SigV4 signs what the client sent, byte for
byte) next to decoded views, and turns the ASGI receive channel into an async
iterator of body pieces that fails loudly -- a disconnect or a body shorter
than Content-Length raises, so the engine commits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import unquote

from .errors import S3Error

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

#: Largest body message handed to the HTTP server. The engine's plaintext is a
#: 4 MiB bytearray and ASGI wants bytes, so hypercorn copies every message with
#: bytes(); a 4 MiB copy is a fresh mmap (glibc's threshold) whose pages are
#: faulted in under the GIL: in isolation about 0.9 CPU-s per GiB on the
#: reference VM, against about 0.05 in pieces of 1 MiB that reuse heap memory
#: (in the gateway, a GET from L1: ~0.1 CPU-s/GiB less, ~10% more MB/s).
SEND_PIECE = 1024 * 1024


def send_pieces(data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """`data` as bytes of at most SEND_PIECE each (a bytes object as is: no copy)."""
    if type(data) is bytes:
        yield data
        return
    view = memoryview(data)
    for start in range(0, len(view), SEND_PIECE):
        yield bytes(view[start:start + SEND_PIECE])


#: key in the ASGI scope's `state` of the server's "send 100 Continue now" hook (expect.py)
SEND_CONTINUE_STATE = "r2fs.send_continue"


class ClientGone(Exception):
    """The client closed the connection mid-request; nothing can be answered."""


@dataclass
class Request:
    method: str
    raw_path: str  # percent-encoded path exactly as sent
    query_string: str  # raw query string as sent
    headers: list[tuple[str, str]]  # lowercase names, latin-1 decoded values
    receive: Receive
    client: str = ""
    query: dict[str, str] = field(default_factory=dict)  # decoded, first value wins
    bucket: str | None = None
    key: str | None = None
    #: sends `100 Continue` if the client waits for it (see expect.py); called on first read
    send_continue: Callable[[], Awaitable[None]] | None = None
    _consumed: bool = False
    #: name -> first value: a request's headers are looked up some twenty times
    #: (auth, checksums, conditions, metadata), a linear scan each time showed up
    #: in profiles of small PUTs.
    _first: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        first = self._first
        for k, v in self.headers:
            first.setdefault(k, v)

    @classmethod
    def from_scope(cls, scope: dict, receive: Receive) -> "Request":
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope.get("path", "/")
        path = path.split("?", 1)[0]
        qs = scope.get("query_string", b"").decode("latin-1")
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        client = scope.get("client")
        req = cls(method=scope["method"].upper(), raw_path=path, query_string=qs,
                  headers=headers, receive=receive, client=f"{client[0]}" if client else "",
                  send_continue=(scope.get("state") or {}).get(SEND_CONTINUE_STATE))
        req.query = parse_query(qs)
        return req

    @property
    def consumed(self) -> bool:
        """Whether the body has been (or is being) read."""
        return self._consumed

    def header(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name, default)

    def headers_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise S3Error("InvalidArgument", "Content-Length is not a number")
        return int(value)

    async def body(self) -> AsyncIterator[bytes]:
        """The raw request body, piece by piece, checked against Content-Length."""
        if self._consumed:
            raise RuntimeError("request body already consumed")
        self._consumed = True
        expected = self.content_length
        if self.send_continue is not None and expected != 0:
            await self.send_continue()
        total = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("client disconnected during the request body")
            piece = message.get("body", b"")
            if piece:
                total += len(piece)
                if expected is not None and total > expected:
                    raise S3Error("InvalidRequest", "body longer than Content-Length")
                yield piece
            if not message.get("more_body", False):
                break
        if expected is not None and total != expected:
            raise S3Error("IncompleteBody")

    async def drain(self) -> None:
        """Consume an unread body so the connection can be reused."""
        if not self._consumed:
            try:
                async for _ in self.body():
                    pass
            except (S3Error, ClientGone):
                pass


def parse_query(qs: str) -> dict[str, str]:
    """Decoded query parameters; a parameter without '=' maps to ''."""
    out: dict[str, str] = {}
    if not qs:
        return out
    for pair in qs.split("&"):
        if not pair:
            continue
        k, _, v = pair.partition("=")
        k = unquote(k)
        if k not in out:
            out[k] = unquote(v)
    return out


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # streamed body (GET)
    on_close: Callable[[], Awaitable[None]] | None = None

    def set(self, name: str, value: str) -> None:
        self.headers.append((name, value))

    async def send(self, send: Send, *, head_only: bool = False) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in self.headers]
        if self.stream is None and not any(k.lower() == "content-length" for k, _ in self.headers):
            headers.append((b"content-length", str(len(self.body)).encode()))
        try:
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            if head_only or self.status in (204, 304):
                await send({"type": "http.response.body", "body": b""})
                return
            if self.stream is not None:
                async for data in self.stream:
                    for piece in send_pieces(data):
                        if piece:
                            await send({"type": "http.response.body", "body": piece, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.body", "body": self.body})
        finally:
            if self.on_close is not None:
                await self.on_close()
