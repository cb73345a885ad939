"""Fault injection against a real uvicorn server (in-process) with a controllable engine:
timeouts, client disconnects, a backend going down and coming back, and overload."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server.core.settings import Settings
from server.http.app import create_app
from tests.fakes import ScriptedGenerator
from tests.servers import serve_in_loop

BODY = {"query": "q", "responses": ["a", "bb"], "k": 2, "seed": 1}


@contextlib.asynccontextmanager
async def live(gen: ScriptedGenerator, **overrides: object) -> AsyncIterator[str]:
    async with serve_in_loop(create_app(Settings().with_overrides(overrides), generator=gen)) as url:
        yield url


async def wait_for(predicate: object, timeout_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def test_slow_backend_gives_504_and_aborts_engine_requests() -> None:
    gen = ScriptedGenerator(delay_s=30)
    async with live(gen, **{"limits.request_timeout_s": 0.5}) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/score", json=BODY)
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
        assert gen.cancelled == 2  # both distinct-order engine calls aborted
        assert (await client.get("/health")).status_code == 200


async def test_client_disconnect_aborts_its_engine_requests() -> None:
    gen = ScriptedGenerator(delay_s=30)
    async with live(gen) as url:
        async with httpx.AsyncClient(base_url=url, timeout=0.5) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/score", json=BODY)
        assert await wait_for(lambda: gen.cancelled == 2), gen.cancelled
        async with httpx.AsyncClient(base_url=url) as client:
            assert "grm_client_disconnects_total 1.0" in (await client.get("/metrics")).text


async def test_backend_down_then_recovery() -> None:
    gen = ScriptedGenerator()
    async with live(gen) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/score", json=BODY)).status_code == 200
        gen.down = True
        r = await client.post("/score", json=BODY)
        assert r.status_code == 503 and r.json()["error"]["type"] == "backend_unavailable"
        ready = await client.get("/ready")
        assert ready.status_code == 503 and "down" in ready.json()["error"]["message"]
        assert (await client.get("/health")).status_code == 200
        gen.down = False
        assert (await client.get("/ready")).status_code == 200
        assert (await client.post("/score", json=BODY)).json()["rewards"] == [2, 4]


async def test_engine_crash_is_a_502_not_a_500() -> None:
    def explode(prompt: str, i: int) -> str:
        raise RuntimeError("CUDA error: device-side assert")

    async with live(ScriptedGenerator(judge=explode)) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/score", json=BODY)
        assert r.status_code == 502 and "device-side assert" in r.json()["error"]["message"]


async def test_overload_gets_429_with_retry_after_and_nothing_is_lost() -> None:
    gen = ScriptedGenerator(delay_s=1.0)  # 19 of the 50 must arrive within one judgment
    async with (
        live(gen, **{"limits.max_concurrent_requests": 8, "limits.max_queued_items": 10}) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        bodies: list[dict[str, Any]] = [
            {"query": "q", "responses": ["a" * (1 + i % 9)], "k": 1, "seed": i} for i in range(50)
        ]
        responses = await asyncio.gather(*(client.post("/score", json=b) for b in bodies))
    statuses = [r.status_code for r in responses]
    assert len(responses) == 50 and set(statuses) <= {200, 429}
    assert 18 <= statuses.count(200) < 50 and statuses.count(429) >= 1  # 8 judged + 10 queued at least
    for body, r in zip(bodies, responses, strict=True):
        if r.status_code == 200:  # every accepted request got its own, correct answer
            assert r.json()["rewards"] == [len(body["responses"][0])]
        else:
            assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "rate_limit_exceeded"
