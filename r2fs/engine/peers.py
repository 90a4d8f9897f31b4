"""L2: peer caches -- the "upper tier" a process asks before reading the nodes.

* Which peer: rendezvous (highest-random-weight) hashing of (chunk id, peer
  id) over the live peers, so every process agrees on a chunk's upper tier
  without a shared table, and a peer going away only moves its own chunks.
  A process may be one of the peers itself; when it wins a chunk, it reads
  the nodes (it *is* that chunk's upper tier).
* Trust: peers exchange only SEALED chunks (the bytes the nodes hold), and the
  receiver authenticates every one (AES-GCM, chunk id in the AAD) before use,
  so a lying or broken peer costs a retry on the nodes, never wrong data.
  Requests carry an HMAC over method, path and time with a token derived
  from the cluster's master key; a request without it is refused (401/403),
  so the endpoint is no oracle for outsiders.
* Failure: short timeouts, and a circuit breaker per peer with exponential
  backoff: a dead peer is skipped (its chunks rendezvous to the next live
  peer, or the nodes) and probed again later by one request.

The endpoint is an ASGI app under `/_r2fs/peer/` (outside the S3 namespace:
bucket names cannot start with `_`), mounted by the S3 gateway or run by
`PeerServer` (a small HTTP/1.1 server on trio, in a thread of its own) in a
mount process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import select
import threading
import time
import weakref
from typing import TYPE_CHECKING, Awaitable, Callable
from urllib.parse import urlsplit

import trio

from .chunks import plaintext_buffer
from .errors import DataUnavailable, R2fsError

if TYPE_CHECKING:
    from .keys import MasterKey

log = logging.getLogger("r2fs.peers")

PREFIX = "/_r2fs/"
CHUNK_PREFIX = "/_r2fs/peer/chunk/"
METRICS_PATH = "/_r2fs/metrics"
AUTH_SCHEME = "R2FS-HMAC1"
DATE_HEADER = "x-r2fs-date"
#: A signed request is accepted this long before/after its date (clock skew).
MAX_SKEW = 300.0
CONNECT_TIMEOUT = 0.5
#: Per request: this much, plus the time to move the chunk at MIN_RATE.
BASE_TIMEOUT = 2.0
MIN_RATE = 25e6
BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0


class PeerError(R2fsError):
    """A peer did not give a usable answer (down, slow, refused, malformed)."""


class PeerMiss(PeerError):
    """The peer answered that it does not know the chunk (404)."""


# --- the cluster token ------------------------------------------------------------------


def cluster_token(master: "MasterKey") -> bytes:
    """The HMAC key peers of one cluster share, derived from the master key.

    Derived with a label of its own so that it can never be replayed as a
    chunk key or id (`MasterKey.derive`).
    """
    return master.derive("peer-token")


def _message(method: str, path: str, date: str) -> bytes:
    return f"{AUTH_SCHEME}\n{method.upper()}\n{path}\n{date}".encode()


def sign(token: bytes, method: str, path: str, now: float | None = None) -> list[tuple[str, str]]:
    """The headers that authenticate one request."""
    date = str(int(time.time() if now is None else now))
    mac = hmac.new(token, _message(method, path, date), hashlib.sha256).hexdigest()
    return [(DATE_HEADER, date), ("authorization", f"{AUTH_SCHEME} {mac}")]


def check_auth(token: bytes, method: str, path: str, headers: dict[str, str],
               now: float | None = None) -> int | None:
    """None if the request is authentic; else the HTTP status to refuse it with."""
    auth = headers.get("authorization", "")
    date = headers.get(DATE_HEADER, "")
    if not auth or not date:
        return 401
    scheme, _, mac = auth.partition(" ")
    if scheme != AUTH_SCHEME or not date.isdigit():
        return 401
    if abs((time.time() if now is None else now) - int(date)) > MAX_SKEW:
        return 403
    want = hmac.new(token, _message(method, path, date), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, mac.strip()) else 403


# --- choosing a peer --------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """`http://HOST:PORT` (no path, no trailing slash); PeerError if it is not one.

    https is accepted here (a TLS gateway names itself so), but `Peer` only
    speaks plain http: peers are on a trusted network, their traffic is
    sealed chunks and HMAC-signed requests.
    """
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise PeerError(f"peer address {url!r}: expected http://HOST:PORT")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise PeerError(f"peer address {url!r}: bad port") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}:{port}"


def score(chunk_id: bytes, peer_id: str) -> bytes:
    return hashlib.blake2b(peer_id.encode(), key=chunk_id[:64], digest_size=8,
                           person=b"r2fs-peer-hrw").digest()


def rank(chunk_id: bytes, peer_ids: list[str]) -> list[str]:
    """Peer ids, the chunk's upper tier first (rendezvous hashing)."""
    return sorted(peer_ids, key=lambda p: (score(chunk_id, p), p), reverse=True)


class CircuitBreaker:
    """Closed (use the peer) until a failure; then open for a backoff that
    doubles per consecutive failure; after it, one probe request decides."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self.open_until = 0.0
        self._probing = False

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.failures == 0:
                return True
            if now < self.open_until or self._probing:
                return False
            self._probing = True  # half-open: this caller is the probe
            return True

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self._probing = False

    def failure(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.failures += 1
            self._probing = False
            self.open_until = now + min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (self.failures - 1))

    @property
    def state(self) -> str:
        with self._lock:
            if self.failures == 0:
                return "closed"
            return "open" if time.monotonic() < self.open_until else "half-open"


class Peer:
    """One peer process, reached over plain HTTP/1.1 with kept-alive connections.

    Why keep-alive: a new TCP connection per 4 MiB chunk (connect, accept,
    request-head parsing, thread hops on both sides) was ~10% of the CPU of a
    read from a peer's L2. Idle connections wait in a small pool (at most
    POOL_SIZE, each at most POOL_IDLE seconds, below the servers' idle
    timeouts) and every request is still signed on its own. A pooled
    connection the peer has closed meanwhile costs one retry on a fresh
    connection, never an error.
    """

    POOL_SIZE = 8
    POOL_IDLE = 3.0  # < hypercorn's default keep_alive_timeout (5 s) and PeerServer.IDLE_TIMEOUT

    def __init__(self, url: str, token: bytes) -> None:
        self.url = normalize_url(url)
        if self.url.startswith("https:"):
            raise PeerError(f"peer {url}: peers are reached over plain http (give its http address)")
        parts = urlsplit(self.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._token = token
        self.breaker = CircuitBreaker()
        self._pool = _ConnectionPool(self.POOL_SIZE, self.POOL_IDLE)
        self.connects = 0  # new connections opened (observability, tests)
        weakref.finalize(self, self._pool.close)

    def __repr__(self) -> str:
        return f"Peer({self.url})"

    def close(self) -> None:
        """Close the idle pooled connections (shutdown); the peer stays usable."""
        self._pool.close()

    async def fetch_chunk(self, chunk_id: bytes, sealed_len: int, *,
                          into: memoryview | None = None) -> bytearray | memoryview:
        """The sealed chunk as the peer sends it -- NOT yet authenticated.

        `into`: a buffer of `sealed_len` bytes to receive it in (returned when
        used). PeerMiss if the peer does not know it; PeerError for anything else.
        """
        path = CHUNK_PREFIX + chunk_id.hex()
        timeout = BASE_TIMEOUT + sealed_len / MIN_RATE
        status, body = await self._get(path, timeout, max_body=sealed_len, into=into)
        if status == 404:
            raise PeerMiss(f"peer {self.url} does not have chunk {chunk_id.hex()}")
        if status != 200:
            raise PeerError(f"peer {self.url} answered HTTP {status} for chunk {chunk_id.hex()}")
        if len(body) != sealed_len:
            raise PeerError(f"peer {self.url} sent {len(body)} bytes for chunk {chunk_id.hex()}, "
                            f"expected {sealed_len}")
        return body

    async def _get(self, path: str, timeout: float, *, max_body: int,
                   into: memoryview | None = None) -> tuple[int, bytearray | memoryview]:
        """GET `path`: (status, body), on a blocking socket in a worker thread.

        Measured on the reference VM (8 concurrent 4 MiB answers): ~210 MiB/s
        through trio's socket (one scheduler round per few KiB received) and
        ~640-770 MiB/s with blocking recv_into in threads (GIL released while
        the kernel copies). Own limiter: a slow peer never holds the threads
        the rest of the process works in.
        """
        return await trio.to_thread.run_sync(self._get_blocking, path, timeout, max_body, into,
                                             limiter=_fetch_limiter(), abandon_on_cancel=True)

    def _get_blocking(self, path: str, timeout: float, max_body: int,
                      into: memoryview | None) -> tuple[int, bytearray | memoryview]:
        deadline = time.monotonic() + timeout
        head = [f"GET {path} HTTP/1.1", f"host: {self.host}:{self.port}",
                *(f"{k}: {v}" for k, v in sign(self._token, "GET", path))]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        sock = self._pool.take()
        if sock is not None:
            try:
                return self._exchange(sock, request, max_body, deadline, into)
            except socket.timeout:
                raise PeerError(f"peer {self.url}: no answer within {timeout:.1f}s") from None
            except (OSError, PeerError):
                pass  # the peer closed or broke the idle connection: once more, on a fresh one
        try:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=min(CONNECT_TIMEOUT, timeout))
        except OSError as e:
            raise PeerError(f"peer {self.url}: {e.strerror or e}") from None
        self.connects += 1
        try:
            return self._exchange(sock, request, max_body, deadline, into)
        except socket.timeout:
            raise PeerError(f"peer {self.url}: no answer within {timeout:.1f}s") from None
        except OSError as e:
            raise PeerError(f"peer {self.url}: {e.strerror or e}") from None
        except PeerError as e:
            raise PeerError(f"peer {self.url}: {e}") from None

    def _exchange(self, sock: socket.socket, request: bytes, max_body: int, deadline: float,
                  into: memoryview | None) -> tuple[int, bytearray | memoryview]:
        """One request/response on `sock`; the socket goes back to the pool only
        after a complete answer that allows it, and is closed on any failure."""
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(request)
            status, body, reusable = _receive(sock, max_body, deadline, into)
        except BaseException:
            sock.close()
            raise
        if reusable:
            self._pool.give(sock)
        else:
            sock.close()
        return status, body


class _ConnectionPool:
    """Idle kept-alive sockets of one peer: bounded in number and idle time.

    Sockets past their idle time are closed whenever the pool is touched, and
    a socket that is readable while idle (the peer closed it, or sent bytes no
    request asked for) is never handed out.
    """

    def __init__(self, size: int, idle: float) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[float, socket.socket]] = []
        self._size = size
        self._max_idle = idle
        self._closed = False

    def take(self) -> socket.socket | None:
        """A live idle connection (the most recently used), or None."""
        while True:
            with self._lock:
                self._expire(time.monotonic())
                if not self._idle:
                    return None
                _, sock = self._idle.pop()
            if _idle_and_open(sock):
                return sock
            sock.close()

    def give(self, sock: socket.socket) -> None:
        with self._lock:
            self._expire(time.monotonic())
            if not self._closed and len(self._idle) < self._size:
                self._idle.append((time.monotonic(), sock))
                return
        sock.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, sock in idle:
            sock.close()

    def _expire(self, now: float) -> None:
        """Close the connections idle too long (the lock is held)."""
        keep = []
        for since, sock in self._idle:
            if now - since > self._max_idle:
                sock.close()
            else:
                keep.append((since, sock))
        self._idle = keep


def _idle_and_open(sock: socket.socket) -> bool:
    """Whether an idle connection is still open and has nothing unread."""
    try:
        return not select.select([sock], [], [], 0)[0]
    except (OSError, ValueError):
        return False


MAX_HEAD = 16 * 1024
FETCH_THREADS = 16
_limiter: trio.lowlevel.RunVar = trio.lowlevel.RunVar("r2fs_peer_fetch_limiter")


def _fetch_limiter() -> trio.CapacityLimiter:
    """One limiter per trio run (a mount runs two loops; a benchmark many runs)."""
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(FETCH_THREADS)
        _limiter.set(limiter)
        return limiter


def _receive(sock: socket.socket, max_body: int, deadline: float,
             into: memoryview | None = None) -> tuple[int, bytearray | memoryview, bool]:
    """Read one HTTP/1.1 response with a Content-Length body of at most `max_body`
    bytes; a body of exactly len(`into`) bytes is received into `into`.

    Third: whether the connection may carry another request (HTTP/1.1, no
    `connection: close`, nothing received beyond this response)."""

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        return left

    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise PeerError("response head too long")
        sock.settimeout(remaining())
        data = sock.recv(65536)
        if not data:
            raise PeerError("connection closed before the response head")
        buf += data
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise PeerError(f"not an HTTP response: {lines[0][:80]!r}")
    status = int(parts[1])
    length = None
    reusable = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length" and value.strip().isdigit():
            length = int(value.strip())
        elif name == "connection" and "close" in value.lower():
            reusable = False
        elif name == "transfer-encoding":
            raise PeerError("unexpected transfer-encoding in a peer response")
    if length is None:
        raise PeerError("response without content-length")
    if length > max_body:
        raise PeerError(f"answer of {length} bytes, at most {max_body} expected")
    # filled completely below, or thrown away; recycled once the reader is done with it
    body = into if into is not None and len(into) == length else plaintext_buffer(length)
    got = min(length, len(buf) - end - 4)
    if len(buf) - end - 4 > length:
        reusable = False  # bytes beyond the answer: this connection is out of step
    body[:got] = buf[end + 4:end + 4 + got]
    view = memoryview(body)
    while got < length:
        sock.settimeout(remaining())
        n = sock.recv_into(view[got:], length - got)
        if n == 0:
            raise PeerError(f"connection closed after {got} of {length} body bytes")
        got += n
    del view
    return status, body, reusable


class PeerSet:
    """The peers of this process and the choice of a chunk's upper tier."""

    def __init__(self, urls: list[str], token: bytes, *, self_url: str | None = None) -> None:
        self.self_url = normalize_url(self_url) if self_url else None
        self.peers: dict[str, Peer] = {}
        for url in urls:
            p = Peer(url, token)
            if p.url != self.self_url:
                self.peers.setdefault(p.url, p)

    def __bool__(self) -> bool:
        return bool(self.peers)

    def choose(self, chunk_id: bytes) -> Peer | None:
        """The live peer to ask for this chunk, or None when this process is
        the chunk's upper tier or no peer is live (read the nodes)."""
        live = [url for url, p in self.peers.items() if p.breaker.state != "open"]
        if self.self_url:
            live.append(self.self_url)
        for url in rank(chunk_id, live):
            if url == self.self_url:
                return None
            peer = self.peers[url]
            if peer.breaker.allow():
                return peer
        return None

    def status(self) -> dict[str, str]:
        return {url: p.breaker.state for url, p in self.peers.items()}

    def close(self) -> None:
        """Close every peer's idle pooled connections (process shutdown)."""
        for p in self.peers.values():
            p.close()


# --- the endpoint -----------------------------------------------------------------------


SealedSource = Callable[[bytes], Awaitable[bytes | bytearray | memoryview | None]]


class PeerApp:
    """ASGI app answering `GET /_r2fs/peer/chunk/<hex>` with the sealed chunk.

    `source(chunk_id)` gives the sealed chunk from this process's L1, staging
    or the nodes (filling L1), or None if the cluster has no such chunk.
    `metrics()` (optional) gives Prometheus text for `GET /_r2fs/metrics`.
    """

    def __init__(self, token: bytes, source: SealedSource,
                 metrics: Callable[[], str] | None = None,
                 on_request: Callable[[str], None] | None = None) -> None:
        self._token = token
        self._source = source
        self._metrics = metrics
        self._count = on_request or (lambda outcome: None)

    @staticmethod
    def handles(path: str) -> bool:
        """Whether a gateway should hand this request path to the peer app."""
        return path.startswith(PREFIX)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, body, ctype = await self.answer(scope["method"], path, headers)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": bytes(body)})

    async def answer(self, method: str, path: str,
                     headers: dict[str, str]) -> tuple[int, bytes | bytearray | memoryview, bytes]:
        """(status, body, content type) for one request; `headers` lowercased."""
        text = b"text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", text
        if path in (METRICS_PATH, "/metrics") and self._metrics is not None:
            return 200, self._metrics().encode(), b"text/plain; version=0.0.4"
        if not path.startswith(CHUNK_PREFIX):
            return 404, b"not found\n", text
        refused = check_auth(self._token, method, path, headers)
        if refused is not None:
            self._count("refused")
            return refused, b"peer request not authenticated\n", text
        try:
            chunk_id = bytes.fromhex(path[len(CHUNK_PREFIX):])
        except ValueError:
            chunk_id = b""
        if len(chunk_id) != 32:
            return 400, b"bad chunk id\n", text
        try:
            sealed = await self._source(chunk_id)
        except DataUnavailable as e:
            self._count("unavailable")
            return 503, f"{e}\n".encode(), text
        if sealed is None:
            self._count("missing")
            return 404, b"no such chunk\n", text
        self._count("served")
        return 200, sealed, b"application/octet-stream"


class PeerServer:
    """The peer endpoint on a small HTTP/1.1 server of its own, in its own thread.

    For processes that are not gateways (mounts): their trio loop belongs to
    FUSE, so the server gets its own loop; it shares the reader (thread-safe)
    with the rest of the process.

    Not hypercorn: measured on the reference VM, a 4 MiB answer through
    hypercorn ran at ~200 MB/s, the same answer written straight to the trio
    socket at ~550 MB/s, and this endpoint does nothing but send such answers
    (GET only, bounded request head, timeouts). Connections are kept alive
    (several requests each, one at a time; idle ones closed after
    IDLE_TIMEOUT; beyond MAX_KEPT open connections, answers close them).
    Answers are sent from a worker thread on a duplicate of the socket.
    """

    HEAD_TIMEOUT = 10.0
    SEND_TIMEOUT = 60.0
    #: An idle kept-alive connection is closed after this long (clients keep theirs less).
    IDLE_TIMEOUT = 15.0
    #: Connections beyond this many open at once get `connection: close` answers.
    MAX_KEPT = 64

    def __init__(self, app: PeerApp, listen: str) -> None:
        self.app = app
        self.listen = listen
        self.url: str | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._open = 0  # connections open now (touched only on the server's loop)

    def start(self, timeout: float = 10.0) -> str:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise PeerError(f"peer listen address {self.listen!r}: expected HOST:PORT")
        self._thread = threading.Thread(target=self._run, args=(host.strip("[]"), int(port)),
                                        name="r2fs-peer-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.url is None:
            err = self._error
            why = (err.strerror if isinstance(err, OSError) else err) or "timeout"
            raise PeerError(f"cannot serve peers on {self.listen}: {why}")
        return self.url

    def _run(self, host: str, port: int) -> None:
        try:
            trio.run(self._main, host, port)
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = e
            self._ready.set()

    async def _main(self, host: str, port: int) -> None:
        self._token = trio.lowlevel.current_trio_token()
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        self.url = normalize_url(f"http://{host}:{bound[1]}")
        with trio.CancelScope() as self._cancel:
            self._ready.set()
            await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        """Serve requests on one connection, one after another (keep-alive),
        until the client closes it, asks to, or stays idle for IDLE_TIMEOUT."""
        self._open += 1
        async with stream:
            try:
                buf = bytearray()
                wait = self.HEAD_TIMEOUT
                while True:
                    with trio.move_on_after(wait) as waited:
                        request = await _read_head(stream, buf)
                    if waited.cancelled_caught or request is None:
                        return
                    method, path, headers = request
                    keep = (method is not None and self._open <= self.MAX_KEPT
                            and "close" not in headers.get("connection", "").lower())
                    if method is None:
                        status, body, ctype = 400, b"bad request\n", b"text/plain; charset=utf-8"
                    else:
                        status, body, ctype = await self.app.answer(method, path, headers)
                    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                            f"content-type: {ctype.decode()}\r\ncontent-length: {len(body)}\r\n"
                            "cache-control: no-store\r\n"
                            f"connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode()
                    await trio.to_thread.run_sync(_send_blocking, stream.socket.fileno(), head,
                                                  body if method != "HEAD" else b"",
                                                  self.SEND_TIMEOUT, limiter=_fetch_limiter())
                    del body
                    if not keep:
                        return
                    wait = self.IDLE_TIMEOUT
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return  # the client went away
            except Exception:  # noqa: BLE001 - one bad request must not stop the server
                log.exception("peer server: request failed")
            finally:
                self._open -= 1

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None:
            try:
                self._token.run_sync_soon(self._cancel.cancel)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            self._thread.join(5)


def _send_blocking(fd: int, head: bytes, body: bytes, timeout: float) -> None:
    """Send on a duplicate of the connection's socket from a worker thread (the
    same measured reason as the client's blocking receive); `timeout` per send."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.settimeout(timeout)  # poll() + non-blocking send: trio's fd mode is untouched
        sock.sendall(head)
        if body:
            sock.sendall(body)
    finally:
        sock.close()


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def _read_head(stream: trio.SocketStream,
                     buf: bytearray) -> tuple[str | None, str, dict[str, str]] | None:
    """(method, path, lowercased headers) of the next request; method None if
    malformed; None if the client closed without sending one. `buf` holds the
    connection's bytes received but not yet used (kept for the next request)."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            return None, "", {}
        data = await stream.receive_some(MAX_HEAD)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None, "", {}
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if parts[2] != "HTTP/1.1":
        headers["connection"] = headers.get("connection", "") + ",close"
    if "content-length" in headers or "transfer-encoding" in headers:
        headers["connection"] = headers.get("connection", "") + ",close"  # a body we do not read
    return parts[0], parts[1].split("?", 1)[0], headers
