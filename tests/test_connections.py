"""Connections that never finish are closed: the real app on a real uvicorn server (the config `grm-server
serve` builds) on 127.0.0.1, small timeouts, raw sockets for the clients that misbehave. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from server.core.settings import Settings
from server.http.app import create_app
from server.http.connections import uvicorn_config
from tests.fakes import ScriptedGenerator

PROTOCOLS = ["httptools", "h11"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner keeps its own signal handlers
        yield


@contextlib.asynccontextmanager
async def serving(http: str = "auto", **server: Any) -> AsyncIterator[int]:
    """The app on a scripted backend behind uvicorn on a free loopback port, with `server.*` settings."""
    overrides = {"server.port": 0, **{f"server.{k}": v for k, v in server.items()}}
    settings = Settings().with_overrides(overrides)
    config = uvicorn_config(
        create_app(settings, generator=ScriptedGenerator()), settings.server, http=http, log_level="warning"
    )
    srv = _Server(config)
    task = asyncio.create_task(srv.serve())
    try:
        async with asyncio.timeout(30):
            while not srv.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield int(srv.servers[0].sockets[0].getsockname()[1])
    finally:
        srv.should_exit = True
        async with asyncio.timeout(30):
            await task


async def closed_after(reader: asyncio.StreamReader, limit_s: float) -> tuple[float, bytes]:
    """Seconds until the server closes the connection (failing after `limit_s`), and what it sent."""
    start, got = time.monotonic(), b""
    async with asyncio.timeout(limit_s):
        while chunk := await reader.read(65536):
            got += chunk
    return time.monotonic() - start, got


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_json_error(body: bytes, code: str) -> None:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(http: str) -> None:
    async with serving(http, header_timeout_s=1.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        elapsed, got = await closed_after(reader, 4)
        writer.close()
    assert got == b"" and 0.8 <= elapsed <= 2.0, elapsed


async def trickle(port: int, payload: bytes, every_s: float, limit_s: float) -> tuple[float, int]:
    """Send `payload` one byte per `every_s` until the server closes; (seconds until closed, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    closed = asyncio.create_task(closed_after(reader, limit_s))
    sent = 0
    try:
        for byte in payload:
            if closed.done():
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            sent += 1
            await asyncio.wait([closed], timeout=every_s)
        elapsed, _ = await closed
        return elapsed, sent
    finally:
        closed.cancel()
        writer.close()


SLOW_HEADERS = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: " + b"a" * 200 + b"\r\n\r\n"


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_a_client_trickling_header_bytes_is_closed_within_twice_the_timeout(http: str) -> None:
    async with serving(http, header_timeout_s=2.0) as port:
        elapsed, sent = await trickle(port, SLOW_HEADERS, every_s=0.5, limit_s=8)
    assert elapsed <= 4.0 and sent < len(SLOW_HEADERS), (elapsed, sent)


async def test_fifty_tricklers_are_all_closed_while_health_still_answers() -> None:
    async with serving(header_timeout_s=2.0) as port:
        clients = [asyncio.create_task(trickle(port, SLOW_HEADERS, every_s=0.5, limit_s=10)) for _ in range(50)]
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            assert (await client.get("/health")).status_code == 200
        results = await asyncio.gather(*clients)
    assert all(elapsed <= 4.0 for elapsed, _ in results), sorted(e for e, _ in results)[-3:]


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(http: str) -> None:
    async with serving(http, body_timeout_s=1.0, header_timeout_s=5.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /score HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"query": "q", '
        )
        await writer.drain()
        elapsed, raw = await closed_after(reader, 5)  # the server answers, then closes
        writer.close()
    status, headers, body = parse(raw)
    assert status == 408 and headers["connection"] == "close" and headers.get("x-request-id"), raw
    assert_json_error(body, "body_timeout")
    assert 0.8 <= elapsed <= 2.5, elapsed


async def test_a_body_sent_in_pieces_within_the_timeout_is_judged() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        body = json.dumps({"query": "q", "responses": ["a", "bb"], "k": 2, "seed": 0}).encode()
        for i in range(0, len(body), 16):
            yield body[i : i + 16]
            await asyncio.sleep(0.1)

    async with serving(body_timeout_s=3.0) as port, httpx.AsyncClient(timeout=10) as client:
        r = await client.post(
            f"http://127.0.0.1:{port}/score", content=pieces(), headers={"content-type": "application/json"}
        )
    assert r.status_code == 200, r.text
    assert r.json()["valid"] == 2


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_s(http: str) -> None:
    async with serving(http, keep_alive_s=1, header_timeout_s=10.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        elapsed, raw = await closed_after(reader, 4)
        writer.close()
    assert parse(raw)[0] == 200 and elapsed <= 2.0, elapsed


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_trickling_after_a_response_is_bounded_by_the_header_timeout(http: str) -> None:
    """uvicorn's keep-alive timer stops at the first byte of the next request: the header deadline takes over."""
    request = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    async with serving(http, keep_alive_s=30, header_timeout_s=2.0) as port:
        elapsed, sent = await trickle(port, request + SLOW_HEADERS, every_s=0.02, limit_s=10)  # 1 byte / 20 ms
    # the first request goes out whole in ~0.8 s, the second would take ~5 s: it is cut 2 s after its first byte
    assert len(request) < sent < len(request) + len(SLOW_HEADERS) and elapsed <= 5.0, (elapsed, sent)


async def test_an_unread_body_after_its_response_does_not_hold_the_connection() -> None:
    async with serving(header_timeout_s=1.5, keep_alive_s=30) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000\r\n\r\nabc")
        await writer.drain()

        async def drip() -> None:
            for _ in range(40):
                await asyncio.sleep(0.1)
                writer.write(b"x")

        dripping = asyncio.create_task(drip())
        try:
            elapsed, raw = await closed_after(reader, 5)
        finally:
            dripping.cancel()
            writer.close()
    assert parse(raw)[0] == 200 and elapsed <= 3.0, elapsed


@pytest.mark.parametrize("http", PROTOCOLS)
async def test_headers_over_the_limit_get_431_and_the_connection_closes(http: str) -> None:
    async with serving(http, max_header_bytes=4096) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pad = b"".join(b"x-pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(6))  # no end of headers
        writer.write(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n" + pad)
        await writer.drain()
        _, raw = await closed_after(reader, 5)
        writer.close()
    status, _, body = parse(raw)
    assert status == 431, raw  # counted by the protocol subclass before either parser's own limit
    assert_json_error(body, "headers_too_large")
