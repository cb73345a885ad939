"""The one error boundary and the request middleware (ids, body limit, metrics, access log)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.core.errors import BodyTimeoutError, GRMError, PayloadTooLargeError, invalid_from_errors
from server.http.metrics import Metrics

logger = logging.getLogger("server.access")


REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
"""A caller's `X-Request-Id` is kept only in this form (no markup, no control bytes), else replaced."""


def error_response(exc: GRMError, request_id: str | None = None) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.retry_after:
        headers["Retry-After"] = str(exc.retry_after)
    if request_id:
        headers["X-Request-Id"] = request_id
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as {"error": {message, type, param, code}}; nothing else reaches the client."""

    def rid(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    async def on_grm(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GRMError)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(invalid_from_errors(exc.errors()))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, GRMError):  # FastAPI wraps what the strict body parser raised
            return error_response(exc.__cause__)
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
        detail = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "the body could not be parsed as JSON"
        allow = (exc.headers or {}).get("Allow")
        if exc.status_code == 405 and allow:
            detail = f"{request.method} is not allowed on {request.url.path}; it accepts {allow}"
        err = GRMError(detail, headers=exc.headers)  # a 405 carries `Allow`
        err.status, err.type = exc.status_code, kind
        return error_response(err)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette answers this one from its outermost middleware, past EdgeMiddleware: tag it here.
        logger.exception("%s: unexpected error", rid(request))
        return error_response(GRMError(f"internal error ({type(exc).__name__}); see the server log"), rid(request))

    app.add_exception_handler(GRMError, on_grm)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def closing_response(exc: GRMError, request_id: str | None = None) -> JSONResponse:
    """An error answered before the body was read: the connection closes after it (its unread rest is dropped)."""
    response = error_response(exc, request_id)
    response.headers["connection"] = "close"
    return response


class NoQueryString(logging.Filter):
    """On uvicorn's access logger: its line shows the path without the query string (which may carry a key
    or a caller's data); EdgeMiddleware's own line shows the route's path template only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:  # client, method, path?query, version, status
            client, method, target, version, status = record.args
            record.args = (client, method, str(target).split("?", 1)[0], version, status)
        return True


class EdgeMiddleware:
    """Assigns the request id, caps the body size and the time it may take to arrive (408), times and counts
    the request, logs one line (no texts)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"")
        rid = given.decode("ascii") if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        start, status, seen = time.perf_counter(), 500, 0
        refusal: GRMError | None = None  # set while reading the body: answered instead of what the app says
        started, body_done = False, False
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s

        async def send_tagged(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", rid.encode("latin-1")))
            await send(message)

        async def send_app(message: Message) -> None:
            if refusal is not None:  # the app saw a disconnect; answer 413/408 instead of whatever it says
                if message["type"] == "http.response.start":
                    await closing_response(refusal)(scope, receive, send_tagged)
                return
            await send_tagged(message)

        async def receive_capped() -> Message:
            nonlocal seen, refusal, body_done
            if body_done:
                return await receive()  # the body is in: what follows is a disconnect, whenever it comes
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                refusal = BodyTimeoutError(
                    f"the request body did not arrive within {self.body_timeout_s:g} s", code="body_timeout"
                )
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.max_body:
                    refusal = PayloadTooLargeError(f"the body exceeds {self.max_body} bytes", code="body_too_large")
                    return {"type": "http.disconnect"}
            else:
                body_done = True
            return message

        declared = headers.get(b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                err = PayloadTooLargeError(
                    f"the body has {int(declared)} bytes (limit {self.max_body})", code="body_too_large"
                )
                await closing_response(err)(scope, receive, send_tagged)
                return
            self.metrics.in_flight.inc()
            try:
                await self.app(scope, receive_capped, send_app)
            except Exception:
                if refusal is None or started:
                    raise
                await closing_response(refusal)(scope, receive, send_tagged)  # the app gave up on the body
            finally:
                self.metrics.in_flight.dec()
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - start
            self.metrics.observe_request(path, status, elapsed)
            logger.info("%s %s %s %d %.3fs %dB", rid, scope.get("method"), path, status, elapsed, seen)
