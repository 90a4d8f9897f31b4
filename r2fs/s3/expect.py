"""`Expect: 100-continue` answered only once the gateway wants the body.

hypercorn's HTTP/1.1 protocol sends `100 Continue` as soon as it has parsed a
request's head, before the application has looked at it -- so a client that
waits for it (curl, botocore) would send a whole body that a bad signature or
a missing bucket refuses anyway. S3 checks first. Here hypercorn's loop never
sees the client waiting; the gateway calls `send_continue` from the request's
scope state when it starts reading the body (after routing and auth). A
request refused before that gets its final response instead of 100, and the
connection closes without the body being read.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import h11
import hypercorn.protocol
from hypercorn.protocol.h11 import H11Protocol

from .http import SEND_CONTINUE_STATE


class _GatewayConnection:
    """hypercorn's h11.Connection with two adjustments: it never tells hypercorn
    that the client awaits 100 Continue, and responses carry their reason phrase
    ("HTTP/1.1 403 Forbidden", as S3 sends; botocore's 100-continue handling
    does not recognise a status line without one)."""

    def __init__(self, inner: h11.Connection) -> None:
        self.__dict__["_inner"] = inner

    they_are_waiting_for_100_continue = False

    def send(self, event: Any) -> bytes | None:
        if isinstance(event, (h11.Response, h11.InformationalResponse)) and not event.reason:
            try:
                reason = HTTPStatus(event.status_code).phrase.encode()
            except ValueError:
                reason = b""
            event = type(event)(status_code=event.status_code, headers=event.headers, reason=reason,
                                http_version=event.http_version)
        return self._inner.send(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


class DeferredContinueH11(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h11 = self.connection
        self.connection = _GatewayConnection(self.connection)  # type: ignore[assignment]
        self.connection_state[SEND_CONTINUE_STATE] = self._send_continue

    async def _send_continue(self) -> None:
        if isinstance(self._h11, h11.Connection) and self._h11.they_are_waiting_for_100_continue:
            await self._send_h11_event(
                h11.InformationalResponse(status_code=100, headers=self.config.response_headers("h11")))


def install() -> None:
    """Make hypercorn build HTTP/1.1 connections with deferred 100 Continue."""
    hypercorn.protocol.H11Protocol = DeferredContinueH11  # type: ignore[misc]
