"""Route dependencies: the serving object, Bearer auth, request ids, and cancel-on-disconnect."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from server.core.errors import AuthenticationError, ClientDisconnected
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


def check_auth(request: Request) -> None:
    keys = request.app.state.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not any(secrets.compare_digest(token.encode(), k) for k in keys):
        raise AuthenticationError("missing or invalid API key (Authorization: Bearer <key>)")


ServingDep = Annotated[Serving, Depends(get_serving)]
RequestIdDep = Annotated[str, Depends(request_id)]


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`; if the client goes away first, cancel it (aborting its engine requests)."""
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
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            request.app.state.metrics.disconnects.inc()
            raise ClientDisconnected("client disconnected; its engine requests were aborted")
        return task.result()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
