"""Remote engines that drop or restart mid-request (#11): the real app over the `openai` backend in front of a
real vLLM server, through a proxy that loses answers, and a real vLLM server SIGKILLed mid-request and
restarted. Seeded calls are sent again once; what cannot be saved is a 503 with the one error body."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.core.embedded import prepare_embedded_model
from server.core.generators import openai_remote
from tests.conftest import app_client, cache_dir
from tests.proxy import dropping_proxy
from tests.servers import Background, descendants, start_vllm_server

BODY = {"query": "Name a primary colour.", "responses": ["Red.", "Green grass."], "k": 2, "seed": 11}
ERROR_KEYS = {"message", "type", "param", "code"}


def overrides(base_url: str) -> dict[str, Any]:
    return {
        "generator.backend": "openai",
        "generator.base_url": base_url + "/v1",
        "judging.max_tokens": 160,
        "judging.retries": 0,
    }


def retries(metrics: str, engine: str = "grm") -> float:
    line = next(x for x in metrics.splitlines() if x.startswith(f'grm_engine_retries_total{{engine="{engine}"}}'))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.remote
async def test_a_lost_answer_to_a_seeded_call_is_asked_again_once(remote_url: str) -> None:
    async with dropping_proxy(remote_url.removesuffix("/v1")) as proxy:
        async with app_client(overrides(proxy.url), generator=None) as (client, _):
            proxy.drop = 1
            r = await client.post("/score", json=BODY)
            assert r.status_code == 200, r.text
            assert r.json()["valid"] == 2 and len(r.json()["rewards"]) == 2
            # k=2 over 2 responses = 2 orders = 2 engine calls; one answer was lost and asked again
            assert (proxy.dropped, proxy.posts) == (1, 3)
            assert retries((await client.get("/metrics")).text) == 1


@pytest.mark.remote
async def test_a_backend_that_keeps_dropping_gives_503_and_is_retried_only_once(remote_url: str) -> None:
    async with dropping_proxy(remote_url.removesuffix("/v1")) as proxy:
        async with app_client(overrides(proxy.url), generator=None) as (client, _):
            proxy.drop = -1
            r = await client.post("/score", json={**BODY, "k": 1})  # one order: one engine call
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert set(error) == ERROR_KEYS and error["type"] == "backend_unavailable"
            assert "unreachable" in error["message"]
            assert proxy.posts == 2  # the call and its one retry, no more
            assert (await client.get("/health")).status_code == 200  # someone else's process: not ours to kill
            proxy.drop = 0
            assert (await client.post("/score", json=BODY)).status_code == 200


@pytest.mark.remote
async def test_ready_follows_a_backend_that_goes_away_and_comes_back(remote_url: str) -> None:
    async with dropping_proxy(remote_url.removesuffix("/v1")) as proxy:
        async with app_client(overrides(proxy.url), generator=None) as (client, _):
            assert (await client.get("/ready")).status_code == 200
            await proxy.pause()
            ready = await client.get("/ready")
            assert ready.status_code == 503 and "not reachable" in ready.json()["error"]["message"]
            r = await client.post("/score", json=BODY)
            assert r.status_code == 503 and set(r.json()["error"]) == ERROR_KEYS
            assert (await client.get("/health")).status_code == 200
            await proxy.resume()
            assert (await client.get("/ready")).status_code == 200
            assert (await client.post("/score", json=BODY)).status_code == 200


@pytest.mark.remote
async def test_ready_answers_503_quickly_when_the_backend_hangs(
    remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_remote, "READY_TIMEOUT_S", 0.5)
    async with dropping_proxy(remote_url.removesuffix("/v1")) as proxy:
        async with app_client(overrides(proxy.url), generator=None) as (client, _):
            assert (await client.get("/ready")).status_code == 200
            proxy.hang = True  # accepts, never answers
            started = time.monotonic()
            ready = await client.get("/ready")
            assert ready.status_code == 503 and "did not answer in 0.5 s" in ready.json()["error"]["message"]
            assert time.monotonic() - started < 4  # before a readiness probe (timeoutSeconds: 5) gives up
            proxy.hang = False
            await proxy.pause()  # the hung connections go; the next check opens a fresh one
            await proxy.resume()
            assert (await client.get("/ready")).status_code == 200


async def running_requests(url: str) -> float:
    """vLLM's own gauge of requests being generated (0 when it cannot be read)."""
    async with httpx.AsyncClient() as http:
        try:
            text = (await http.get(url + "/metrics", timeout=5)).text
        except httpx.HTTPError:
            return 0
    lines = [x for x in text.splitlines() if x.startswith("vllm:num_requests_running")]
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines)


def kill_tree(server: Background) -> None:
    """SIGKILL the server and its EngineCore (as an OOM kill of the pod would)."""
    for pid in [*descendants(server.proc.pid), server.proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.proc.wait(30)


async def until(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached in {timeout_s} s")
        await asyncio.sleep(0.1)


@pytest.mark.engine
async def test_a_real_backend_killed_mid_request_gives_503_then_serving_resumes_after_its_restart() -> None:
    model: Path = prepare_embedded_model(cache_dir())
    backend = start_vllm_server(model, name="vllm-killed")
    try:
        url = await asyncio.to_thread(backend.wait)
        async with app_client(overrides(url), generator=None) as (client, _):
            assert (await client.get("/ready")).status_code == 200
            call = asyncio.create_task(client.post("/score", json={**BODY, "k": 4}, timeout=300))
            await until("the backend generating", lambda: running_requests(url), 120)
            await asyncio.to_thread(kill_tree, backend)

            r = await asyncio.wait_for(call, 60)  # fails cleanly, never hangs
            assert r.status_code == 503, r.text
            assert set(r.json()["error"]) == ERROR_KEYS and r.json()["error"]["type"] == "backend_unavailable"
            assert retries((await client.get("/metrics")).text) >= 1  # asked again once before giving up
            assert (await client.get("/ready")).status_code == 503
            assert (await client.get("/health")).status_code == 200

            backend = start_vllm_server(model, name="vllm-restarted", port=backend.port)
            await asyncio.to_thread(backend.wait)
            assert (await client.get("/ready")).status_code == 200
            again = await client.post("/score", json=BODY, timeout=300)
            assert again.status_code == 200 and again.json()["valid"] == 2
    finally:
        backend.stop()
