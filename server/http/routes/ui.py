"""The judgment inspector page (`GET /ui`): static HTML/CSS/JS shipped as package data, no data of its own."""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from server.core.errors import NotFoundError

router = APIRouter(include_in_schema=False)

# The files under server/http/static/ the page loads (index.html is /ui itself); nothing else is served.
ASSETS = {
    "app.css": "text/css",
    "common.js": "text/javascript",
    "score.js": "text/javascript",
    "runs.js": "text/javascript",
    "app.js": "text/javascript",
}
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


@router.get("/ui")
async def page() -> Response:
    return Response(_read("index.html"), media_type="text/html", headers=HEADERS)


@router.get("/ui/")
async def page_slash() -> Response:
    return RedirectResponse("../ui", status_code=308)


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundError(f"no such file of the /ui page: {name!r}")
    return Response(_read(name), media_type=media_type, headers=HEADERS)
