"""Connection bounds uvicorn lacks: a header deadline and a header size cap, in a small subclass of its
HTTP/1.1 protocol, plus `uvicorn_config()`, the one place the server settings become uvicorn options.

uvicorn's keep-alive timer only runs between a response and the next byte: a connection that sends nothing,
or trickles header bytes, is never closed by it, and its httptools parser buffers headers without a limit.
Here a deadline starts when a connection opens and whenever a byte arrives past a finished response; it ends
when a request's headers are complete (uvicorn starts a new request cycle). Past it the connection is closed.
The body deadline (408) lives in the ASGI layer (`EdgeMiddleware`), where an error body can still be sent;
bytes of a body still arriving after its response count as "past a response", so they are bounded here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.core.settings import ServerSettings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

logger = logging.getLogger("server.connections")

_HEADERS_TOO_LARGE = json.dumps(
    {
        "error": {
            "message": "the request line and headers exceed the limit",
            "type": "invalid_request_error",
            "param": None,
            "code": "headers_too_large",
        }
    }
).encode()


class _HeaderDeadline:
    """Mixin over a uvicorn HTTP/1.1 protocol class (`bounded_protocol` sets the two limits)."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 65_536

    # provided by the uvicorn protocol this is mixed into
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes: int = 0
    _header_tail: bytes = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if before is None or before.response_complete:
            self._arm()  # between requests: every byte belongs to the next request's headers
        if self._header_timer is not None:
            # Count only the bytes up to the blank line that ends the headers (a chunk may carry the body too,
            # or all 100 kB of headers at once); the last 3 bytes seen so far join the search across chunks.
            seen = self._header_tail + data
            end = seen.find(b"\r\n\r\n")
            head = len(data) if end < 0 else end + 4 - len(self._header_tail)
            self._header_bytes += head
            self._header_tail = seen[-3:]
            if self._header_bytes > self.max_header_bytes:
                self._refuse_headers()
                return
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not before:  # headers complete: uvicorn started a request cycle
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_bytes, self._header_tail = 0, b""
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._on_header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            logger.info("closing a connection: request headers not complete within %.1f s", self.header_timeout_s)
            self.transport.close()

    def _refuse_headers(self) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_HEADERS_TOO_LARGE)
        )
        self.transport.write(head + _HEADERS_TOO_LARGE)
        self.transport.close()


class BoundedH11Protocol(_HeaderDeadline, H11Protocol):  # type: ignore[misc]  # uvicorn narrows the transport
    """uvicorn's h11 protocol with the header deadline and size cap."""


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's httptools protocol with the header deadline and size cap."""


def bounded_protocol(settings: ServerSettings, base: str = "auto") -> type[asyncio.Protocol]:
    """A protocol class carrying the limits of `settings`; `base` is h11, httptools, or auto (httptools if
    installed, as uvicorn picks)."""
    if base == "httptools" or (base == "auto" and HttpToolsProtocol is not None):
        parent: type[_HeaderDeadline] = BoundedHttpToolsProtocol
    else:
        parent = BoundedH11Protocol
    limits = {"header_timeout_s": settings.header_timeout_s, "max_header_bytes": settings.max_header_bytes}
    return type(parent.__name__, (parent,), limits)  # type: ignore[return-value]


def uvicorn_config(app: ASGIApp, settings: ServerSettings, *, http: str = "auto", **options: Any) -> uvicorn.Config:
    """uvicorn's Config for `app` with the connection bounds of `settings` (host and port too)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=bounded_protocol(settings, http),
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        **options,
    )
