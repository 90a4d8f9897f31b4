"""A node store in a bucket (and prefix) of any S3-compatible object store.

cluster.toml:

    [nodes.n3]
    url = "s3://bucket/prefix"
    endpoint = "https://s3.example.net"   # optional; else AWS_ENDPOINT_URL, else AWS
    profile = "name"                      # optional; else the default credential chain
    s3_region = "eu-central-1"            # optional; else AWS_REGION / the profile's
    region = "default"                    # r2fs placement region, as for any node

Credentials come from the environment (AWS_ACCESS_KEY_ID, ...), the profile,
or whatever else boto3's default chain finds; cluster.toml never holds them.

Shard files map to objects `prefix/shards/...`; an S3 PUT is atomic, so a
reader sees a whole shard or none and no temp files are ever left behind.

Failure handling: every request has connect and read timeouts and is retried
a few times with exponential backoff and full jitter on timeouts, connection
errors and 5xx/throttling answers. When the retries run out the node is
marked down for `DOWN_FOR` seconds: every call fails fast with
NodeUnavailable naming the node, the store and the last error, so reads
decode around it (the other k shards) and placement leaves it out while
enough other nodes are up; after that time the next call tries it again.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

from ..errors import InvalidClusterConfig
from ..fileio import Buffer
from .interface import NodeStore, NodeUnavailable, Scratch

#: Requests in flight at once per node: at least the shard-I/O threads plus the
#: worker threads that read a shard themselves (chunks._IO_WORKERS + trio's).
MAX_POOL_CONNECTIONS = 64
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 10.0
ATTEMPTS = 4
BACKOFF_BASE = 0.05
BACKOFF_MAX = 1.0
DOWN_FOR = 5.0
#: What free_bytes reports: an object store has no fixed capacity.
UNLIMITED = 1 << 60

_RETRY_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "500", "502",
                "503", "504"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def parse_url(url: str, where: str) -> tuple[str, str]:
    """(bucket, prefix) of an s3://bucket/prefix URL, or InvalidClusterConfig."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc or u.query or u.fragment:
        raise InvalidClusterConfig(f"{where}: {url!r} is not an s3://bucket/prefix URL")
    prefix = u.path.strip("/")
    if any(p in (".", "..") for p in prefix.split("/") if p):
        raise InvalidClusterConfig(f"{where}: {url!r}: the prefix may not contain . or ..")
    return u.netloc, prefix


class S3Node(NodeStore):
    """A node whose files are objects in an S3-compatible bucket."""

    def __init__(self, node_id: str, url: str, region: str = "default", *,
                 endpoint: str | None = None, profile: str | None = None,
                 s3_region: str | None = None) -> None:
        self.id = node_id
        self.url = url.rstrip("/")
        self.region = region
        self.bucket, prefix = parse_url(url, f"cluster.toml [nodes.{node_id}] url")
        self.prefix = prefix + "/" if prefix else ""
        self.endpoint = endpoint
        self.profile = profile
        self.s3_region = s3_region
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._down_until = 0.0
        self._down_reason = ""
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"S3Node({self.id!r}, {self.url!r}, region={self.region!r})"

    @property
    def location(self) -> str:
        return self.url + (f" at {self.endpoint}" if self.endpoint else "")

    # --- the client and its failures -------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config
                    session = boto3.session.Session(profile_name=self.profile)
                    self._client = session.client(
                        "s3", endpoint_url=self.endpoint, region_name=self.s3_region,
                        config=Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                                      retries={"total_max_attempts": 1},
                                      max_pool_connections=MAX_POOL_CONNECTIONS,
                                      s3={"addressing_style": "path"}))
        return self._client

    @property
    def marked_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _unavailable(self, why: str) -> NodeUnavailable:
        return NodeUnavailable(f"node {self.id}: {self.location} is not answering ({why})")

    def _call(self, what: str, fn: Callable[..., Any], **kw: Any) -> Any:
        """fn(**kw) with retries; FileNotFoundError for a missing key; NodeUnavailable
        (and the node marked down) when the store does not answer properly."""
        from botocore.exceptions import BotoCoreError, ClientError
        if self.marked_down:
            left = self._down_until - time.monotonic()
            raise self._unavailable(f"marked down after: {self._down_reason}; "
                                    f"tried again in {left:.1f}s")
        last = ""
        for attempt in range(ATTEMPTS):
            try:
                result = fn(**kw)
                self._down_reason = ""
                return result
            except ClientError as e:
                err = e.response.get("Error", {})
                code = str(err.get("Code", ""))
                status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
                if code in _MISSING_CODES or (status == "404" and code not in ("NoSuchBucket",)):
                    raise FileNotFoundError(f"node {self.id}: {kw.get('Key', what)}") from None
                last = f"{what}: {code or status} {err.get('Message', '')}".strip()
                if code not in _RETRY_CODES and status not in _RETRY_CODES:
                    # the store answers, but refuses (no such bucket, access denied): down
                    self._mark_down(last)
                    raise self._unavailable(last) from None
            except (BotoCoreError, OSError) as e:
                last = f"{what}: {e}"
            if attempt + 1 < ATTEMPTS:  # full jitter: sleep uniform(0, base * 2**attempt)
                time.sleep(self._rng.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt)))
        self._mark_down(last)
        raise self._unavailable(f"{last}; gave up after {ATTEMPTS} attempts")

    def _mark_down(self, reason: str) -> None:
        self._down_reason = reason
        self._down_until = time.monotonic() + DOWN_FOR

    def _key(self, name: str) -> str:
        if (not name or name.startswith("/") or "\\" in name
                or any(part in ("", ".", "..") for part in name.split("/"))):
            raise ValueError(f"invalid node file name {name!r}")
        return self.prefix + name

    # --- files -----------------------------------------------------------------------------

    def write_parts(self, name: str, parts: Sequence[Buffer], *,
                    scratch: Scratch | None = None,
                    sync_later: list[str] | None = None) -> None:
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        data = bytes(body) if not isinstance(body, bytes) else body
        self._call("put", self.client().put_object, Bucket=self.bucket, Key=self._key(name),
                   Body=data)

    def read(self, name: str) -> bytes:
        resp = self._call("get", self.client().get_object, Bucket=self.bucket, Key=self._key(name))
        return self._body(resp, None)

    def read_into(self, name: str, alloc: Callable[[int], Buffer], *,
                  only_if_cached: bool = False, direct: bool = False) -> memoryview | None:
        if only_if_cached:
            return None  # never in this machine's page cache: the caller reads it in parallel
        resp = self._call("get", self.client().get_object, Bucket=self.bucket, Key=self._key(name))
        size = int(resp["ContentLength"])
        view = memoryview(alloc(size))[:size]
        self._body(resp, view)
        return view

    def _body(self, resp: dict, into: memoryview | None) -> Any:
        """The body of a GET (into `into`, if given); a broken transfer is NodeUnavailable."""
        from botocore.exceptions import BotoCoreError
        stream = resp["Body"]
        try:
            if into is None:
                return stream.read()
            got = 0
            while got < len(into):
                piece = stream.read(min(len(into) - got, 1 << 20))
                if not piece:
                    break
                into[got:got + len(piece)] = piece
                got += len(piece)
            if got != len(into):
                raise NodeUnavailable(f"node {self.id}: {self.location}: short read "
                                      f"({got} of {len(into)} bytes)")
            return into
        except (BotoCoreError, OSError) as e:
            raise self._unavailable(f"reading a body: {e}") from None
        finally:
            stream.close()

    def delete(self, name: str) -> bool:
        if self.size_of(name) is None:
            return False
        self._call("delete", self.client().delete_object, Bucket=self.bucket, Key=self._key(name))
        return True

    def size_of(self, name: str) -> int | None:
        try:
            resp = self._call("head", self.client().head_object, Bucket=self.bucket,
                              Key=self._key(name))
        except FileNotFoundError:
            return None
        return int(resp["ContentLength"])

    def _list(self, sub: str) -> Iterator[dict]:
        token = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + sub,
                                  "MaxKeys": 1000}
            if token:
                kw["ContinuationToken"] = token
            page = self._call("list", self.client().list_objects_v2, **kw)
            yield from page.get("Contents", ())
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def names(self) -> Iterator[tuple[str, float]]:
        """Every object under prefix/shards/ with its modification time, page by page."""
        for obj in self._list("shards/"):
            yield obj["Key"][len(self.prefix):], obj["LastModified"].timestamp()

    def entries(self) -> Iterator[tuple[str, int, int, bool]]:
        """(name, size, stored size, is_dir) of every object under the prefix (no dirs here)."""
        for obj in self._list(""):
            size = int(obj["Size"])
            yield obj["Key"][len(self.prefix):], size, size, False

    def usage(self) -> tuple[int, int]:
        count = total = 0
        for obj in self._list("shards/"):
            count += 1
            total += int(obj["Size"])
        return count, total

    def free_bytes(self) -> int:
        return UNLIMITED

    def available(self) -> bool:
        """Not marked down, and the bucket answers (probed when not known to be up)."""
        if self.marked_down:
            return False
        try:
            self._call("head bucket", self.client().head_bucket, Bucket=self.bucket)
        except (NodeUnavailable, FileNotFoundError):
            return False
        return True
