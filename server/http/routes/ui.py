"""The judgment inspector page (`GET /ui`): static HTML/CSS/JS shipped as package data, no data of its own."""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

# The shell is public (it holds no data); every call it makes goes to the API, which enforces the API keys.
# The CSP allows only this server's own script, style and fetch targets: no inline script, no CDN.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    return (files("server.http") / "static" / name).read_bytes()


def _asset(name: str, media_type: str) -> Response:
    return Response(_read(name), media_type=media_type, headers=HEADERS)


@router.get("/ui")
async def page() -> Response:
    return _asset("index.html", "text/html")


@router.get("/ui/")
async def page_slash() -> Response:
    return RedirectResponse("../ui", status_code=308)


@router.get("/ui/app.css")
async def stylesheet() -> Response:
    return _asset("app.css", "text/css")


@router.get("/ui/app.js")
async def script() -> Response:
    return _asset("app.js", "text/javascript")
