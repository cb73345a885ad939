"""Route classes and dependencies: the serving object, Bearer auth and strict JSON before the body is
parsed, request ids, and cancel-on-disconnect."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from server.core.errors import AuthenticationError, ClientDisconnected, InvalidRequestError
from server.core.reattach import call_key
from server.http.protocol import ErrorResponse
from server.http.serving import Serving

T = TypeVar("T")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why}
    for status, why in [
        (400, "bad input; `param` names the field"),
        (401, "missing or wrong API key"),
        (404, "unknown model"),
        (413, "body too large"),
        (429, "the judging queue is full, or an item waited past queue_timeout_s (Retry-After)"),
        (502, "the engine or the Meta RM failed, or no judgment was parseable"),
        (503, "engines not loaded or not ready"),
        (504, "judging timed out"),
    ]
}
"""The error statuses the judging routes document in OpenAPI, all with the one error body."""


def get_serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


def request_id(request: Request) -> str:
    rid: str = request.state.request_id
    return rid


REALM = "grm-server"


def check_auth(request: Request) -> None:
    """With API keys configured, a request must carry `Authorization: Bearer <key>` (RFC 6750): the 401
    names the scheme in `WWW-Authenticate`, with `error="invalid_token"` when a credential was sent."""
    keys = request.app.state.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not any(secrets.compare_digest(token.encode(), k) for k in keys):
        challenge = f'Bearer realm="{REALM}"'
        if header:
            challenge += ', error="invalid_token", error_description="the API key is not accepted"'
        raise AuthenticationError(
            "missing or invalid API key (Authorization: Bearer <key>)", headers={"WWW-Authenticate": challenge}
        )


_BOMS = [  # longest first: the UTF-32 LE mark begins with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xef\xbb\xbf", "UTF-8"),
    (b"\xff\xfe", "UTF-16-LE"),
    (b"\xfe\xff", "UTF-16-BE"),
]


def _refuse_constant(name: str) -> Any:
    raise InvalidRequestError(f"the body is not valid JSON: {name} is not a JSON number", code="json_invalid")


def parse_json_body(body: bytes) -> Any:
    """A request body as JSON text (RFC 8259: UTF-8, no byte order mark); each refusal says what is wrong."""
    for mark, name in _BOMS:
        if body.startswith(mark):
            raise InvalidRequestError(
                f"the body starts with the byte order mark of {name}; send JSON encoded as UTF-8, without a "
                "byte order mark",
                code="invalid_encoding",
            )
    guess = json.detect_encoding(body)  # JSON starts with ASCII: NUL bytes around it mean UTF-16/32
    if guess != "utf-8":
        try:
            json.loads(body.decode(guess))
        except (UnicodeDecodeError, ValueError):
            pass
        else:
            raise InvalidRequestError(
                f"the body is JSON encoded as {guess.upper()}; send it encoded as UTF-8", code="invalid_encoding"
            )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"the body is not valid UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start}); "
            "send JSON encoded as UTF-8",
            code="invalid_encoding",
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", code="json_invalid"
        ) from None
    except ValueError as exc:  # Python's int-str conversion limit (a number of thousands of digits)
        if "integer string conversion" not in str(exc):
            raise
        raise InvalidRequestError(
            f"the body holds an integer of more than {sys.get_int_max_str_digits()} digits; no field takes one",
            code="number_too_long",
        ) from None


class _JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """A route whose JSON body is read strictly (`parse_json_body`); FastAPI wraps the refusal in a 400
    HTTPException whose cause the error boundary answers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_JSONRequest(request.scope, request.receive))

        return strict


class KeyedRoute(JSONRoute):
    """A protected route: the API key is checked first, before FastAPI reads or parses the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def keyed(request: Request) -> Response:
            check_auth(request)
            return await handler(request)

        return keyed


ServingDep = Annotated[Serving, Depends(get_serving)]
RequestIdDep = Annotated[str, Depends(request_id)]


async def until_disconnect(request: Request, work: Awaitable[T], on_disconnect: Callable[[], None] | None = None) -> T:
    """Run `work`; if the client goes away first, cancel it (aborting its engine requests), after calling
    `on_disconnect` (a re-attached call's judgment then waits for a retry instead)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.create_task(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            if on_disconnect is not None:
                on_disconnect()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            request.app.state.metrics.disconnects.inc()
            raise ClientDisconnected("client disconnected; its engine requests were aborted")
        return task.result()
    finally:
        watcher.cancel()
        if not task.done():  # the handler itself was cancelled: the work's cleanup (slots, engine aborts) ends first
            task.cancel()
            await asyncio.wait({task})


def caller_identity(request: Request) -> str:
    """Who the caller is for sharing results: a digest of its API key when keys are configured, else nobody."""
    if not request.app.state.api_keys:
        return ""
    token = request.headers.get("authorization", "").partition(" ")[2]
    return hashlib.sha256(token.encode()).hexdigest()


async def reattached(request: Request, serving: Serving, body: BaseModel, work: Callable[[], Awaitable[T]]) -> T:
    """`work()` until the client disconnects, shared with identical calls (same route, API key and body JSON)
    while it runs and for `rewards.reattach_ttl_s` after (`rewards.reattach`); a disconnected caller's judgment
    waits `rewards.abandon_grace_s` for a retry before it is aborted."""
    if not serving.settings.rewards.reattach:
        return await until_disconnect(request, work())
    key = call_key(request.url.path, caller_identity(request), body.model_dump_json())
    attachment = serving.reattacher.attach(key, work)
    return await until_disconnect(request, attachment.result(), on_disconnect=attachment.leave)
