"""Retries re-attach: a trainer's retry of a reward call (its client timed out) gets the judgment already under way,
or just finished, instead of a new one. A real uvicorn server with a scripted slow engine; clients that give up
are real disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server.core.reattach import Reattacher, call_key
from server.core.settings import Settings
from server.http.app import create_app
from tests.fakes import ScriptedGenerator, wait_until
from tests.servers import serve_in_loop

ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/get_reward", {"query": ["P: abc"], "prompts": ["P: "], "k": 2}),
    ("/reward", {"prompt": "P: ", "response": "abc", "k": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "P"}, {"role": "assistant", "content": "abc"}]}),
]
BODY = ROUTES[0][1]
_FRESH_SEEDS = itertools.count(1000)


@contextlib.asynccontextmanager
async def live(gen: ScriptedGenerator, **overrides: object) -> AsyncIterator[str]:
    settings = Settings().with_overrides({"rewards.join": False, "judging.k": 2, **overrides})
    async with serve_in_loop(create_app(settings, generator=gen)) as url:
        yield url


async def metric(url: str, line: str) -> float:
    async with httpx.AsyncClient(base_url=url) as client:
        text = (await client.get("/metrics")).text
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


async def one_judgment_calls(url: str, gen: ScriptedGenerator, route: str, body: dict[str, Any]) -> int:
    """Engine calls one judgment of `body` makes (measured on a body no other call of the test shares)."""
    before = len(gen.calls)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.post(route, json={**body, "seed": next(_FRESH_SEEDS)})).status_code == 200
    return len(gen.calls) - before


async def gave_up(url: str, route: str, body: dict[str, Any], timeout_s: float = 0.3) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(route, json=body)


@pytest.mark.parametrize(("route", "body"), ROUTES)
async def test_a_retry_while_in_flight_gets_the_same_judgment(route: str, body: dict[str, Any]) -> None:
    gen = ScriptedGenerator(delay_s=0.5)
    async with live(gen) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        first = asyncio.create_task(client.post(route, json=body))
        await wait_until(lambda: len(gen.calls) >= 1, 10, "the first judgment under way")
        second = await client.post(route, json=body)
        r1 = await first
        assert r1.status_code == second.status_code == 200
        assert r1.json() == second.json()  # the chat route's id names the first call: the very same judgment
        shared = len(gen.calls)
        assert shared == await one_judgment_calls(url, gen, route, body)  # one judgment for both calls
        assert await metric(url, 'grm_reward_reattached_total{state="in_flight"}') == 1.0


async def test_without_reattach_each_identical_call_is_judged() -> None:
    gen = ScriptedGenerator(delay_s=0.3)
    async with live(gen, **{"rewards.reattach": False}) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        rs = await asyncio.gather(client.post("/get_reward", json=BODY), client.post("/get_reward", json=BODY))
        assert [r.status_code for r in rs] == [200, 200]
        assert len(gen.calls) == 2 * await one_judgment_calls(url, gen, "/get_reward", BODY)


async def test_a_retry_after_the_caller_disconnected_re_attaches_within_the_grace() -> None:
    gen = ScriptedGenerator(delay_s=4.0)  # long enough that the retry comes in flight on a loaded machine too
    async with live(gen, **{"rewards.abandon_grace_s": 10}) as url:
        await gave_up(url, "/get_reward", BODY)
        await wait_until(lambda: gen.cancelled == 0 and len(gen.calls) >= 1, 5, "the judgment under way")
        for _ in range(150):  # bounded: until the server noticed the disconnect
            if await metric(url, "grm_client_disconnects_total") == 1.0:
                break
            await asyncio.sleep(0.02)
        assert await metric(url, "grm_client_disconnects_total") == 1.0
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            r = await client.post("/get_reward", json=BODY)
        assert r.status_code == 200 and r.json()["extra_logs"]["valid"] == [1.0]
        assert gen.cancelled == 0  # the judgment was kept for the retry, not aborted
        assert len(gen.calls) == await one_judgment_calls(url, gen, "/get_reward", BODY)
        assert await metric(url, 'grm_reward_reattached_total{state="in_flight"}') == 1.0
        assert await metric(url, "grm_reward_abandoned_total") == 0.0


async def test_after_the_grace_with_no_caller_the_engine_requests_are_aborted() -> None:
    gen = ScriptedGenerator(delay_s=30)
    async with live(gen, **{"rewards.abandon_grace_s": 0.5}) as url:
        await gave_up(url, "/reward", ROUTES[1][1])
        calls = len(gen.calls)
        assert calls >= 1 and gen.cancelled == 0  # within the grace the judgment goes on
        await wait_until(lambda: gen.cancelled == calls, 10, "the abandoned judgment's engine calls aborted")
        assert await metric(url, "grm_reward_abandoned_total") == 1.0
        gen.delay_s = 0
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:  # a later call starts anew
            assert (await client.post("/reward", json=ROUTES[1][1])).status_code == 200
        assert len(gen.calls) == 2 * calls
        assert await metric(url, 'grm_reward_reattached_total{state="in_flight"}') == 0.0


async def test_a_retry_soon_after_the_judgment_finished_gets_it_and_one_after_the_ttl_starts_anew() -> None:
    gen = ScriptedGenerator()
    async with (
        live(gen, **{"rewards.reattach_ttl_s": 1.0}) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        first = await client.post("/get_reward", json=BODY)
        calls = len(gen.calls)
        again = await client.post("/get_reward", json=BODY)
        assert first.json() == again.json() and len(gen.calls) == calls
        assert await metric(url, 'grm_reward_reattached_total{state="finished"}') == 1.0
        await asyncio.sleep(1.2)
        assert (await client.post("/get_reward", json=BODY)).status_code == 200
        assert len(gen.calls) == 2 * calls


async def test_a_failed_judgment_is_not_kept() -> None:
    gen = ScriptedGenerator(down=True)
    async with live(gen) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.post("/get_reward", json=BODY)).status_code == 503
        gen.down = False
        r = await client.post("/get_reward", json=BODY)
        assert r.status_code == 200 and r.json()["extra_logs"]["valid"] == [1.0]


@pytest.mark.parametrize(
    "other",
    [
        {**BODY, "query": ["P: abcd"]},  # another rollout
        {**BODY, "k": 1},  # other knobs
        {**BODY, "seed": 7},
    ],
)
async def test_a_different_body_is_a_different_judgment(other: dict[str, Any]) -> None:
    gen = ScriptedGenerator(delay_s=0.3)
    async with live(gen) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        rs = await asyncio.gather(client.post("/get_reward", json=BODY), client.post("/get_reward", json=other))
        assert [r.status_code for r in rs] == [200, 200]
        assert await metric(url, 'grm_reward_reattached_total{state="in_flight"}') == 0.0
        assert len(gen.calls) == sum([await one_judgment_calls(url, gen, "/get_reward", b) for b in (BODY, other)])


async def test_the_same_body_in_other_json_spelling_re_attaches() -> None:
    gen = ScriptedGenerator(delay_s=0.3)
    spelled = b'{ "k": 2,  "prompts": ["P: "], "query": ["P: abc"] }'
    async with live(gen) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        headers = {"content-type": "application/json"}
        rs = await asyncio.gather(
            client.post("/get_reward", json=BODY), client.post("/get_reward", content=spelled, headers=headers)
        )
        assert [r.status_code for r in rs] == [200, 200]
        assert len(gen.calls) == await one_judgment_calls(url, gen, "/get_reward", BODY)


async def test_another_api_key_never_shares_a_judgment() -> None:
    gen = ScriptedGenerator(delay_s=0.3)
    async with (
        live(gen, **{"server.api_keys": ["key-a", "key-b"]}) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):

        def post(key: str) -> Any:
            return client.post("/get_reward", json=BODY, headers={"authorization": f"Bearer {key}"})

        rs = await asyncio.gather(post("key-a"), post("key-b"))
        assert [r.status_code for r in rs] == [200, 200]
        assert await metric(url, 'grm_reward_reattached_total{state="in_flight"}') == 0.0
        before = len(gen.calls)
        assert (await post("key-a")).status_code == 200  # the same key shares (finished, within the TTL)
        assert len(gen.calls) == before
        assert (await post("key-c")).status_code == 401  # an unknown key learns nothing


async def test_a_trainer_client_that_times_out_and_retries_gets_the_judgment() -> None:
    """OpenRLHF's and slime's clients, scaled down: give up after 1 s, sleep, send the same call again."""
    gen = ScriptedGenerator(delay_s=2.5)
    async with live(gen, **{"rewards.join": True}) as url:
        answer: httpx.Response | None = None
        tries = 0
        async with httpx.AsyncClient(base_url=url, timeout=1.0) as client:
            while answer is None and tries < 6:
                tries += 1
                try:
                    answer = await client.post("/get_reward", json=BODY)
                except httpx.TimeoutException:
                    await asyncio.sleep(0.1)
        assert answer is not None and answer.status_code == 200 and tries >= 2
        assert answer.json()["extra_logs"]["valid"] == [1.0]
        assert gen.cancelled == 0
        gen.delay_s = 0
        assert len(gen.calls) == await one_judgment_calls(url, gen, "/get_reward", BODY)  # one judgment, all tries
        assert await metric(url, 'grm_reward_reattached_total{state="in_flight"}') >= 1.0


async def test_kept_results_and_runs_are_bounded_and_expire() -> None:
    now = [0.0]
    reattacher = Reattacher(ttl_s=10, grace_s=0, max_entries=3, clock=lambda: now[0])
    started: list[str] = []

    async def work(key: str) -> str:
        started.append(key)
        return key

    for key in ["a", "b", "c", "d"]:
        assert await reattacher.attach(key, lambda k=key: work(k)).result() == key  # type: ignore[misc]
    assert reattacher.kept == 3  # the oldest was dropped
    assert await reattacher.attach("a", lambda: work("a")).result() == "a" and started.count("a") == 2
    assert await reattacher.attach("d", lambda: work("d")).result() == "d" and started.count("d") == 1
    now[0] = 11.0
    assert reattacher.kept == 0  # all past the TTL
    gate = asyncio.Event()

    async def slow(key: str) -> str:
        await gate.wait()
        return key

    running = [asyncio.create_task(reattacher.attach(k, lambda k=k: slow(k)).result()) for k in "xyz"]  # type: ignore[misc]
    await asyncio.sleep(0)
    assert reattacher.running == 3
    assert await reattacher.attach("w", lambda: work("w")).result() == "w"  # over the bound: judged on its own
    assert reattacher.running == 3
    gate.set()
    assert await asyncio.gather(*running) == ["x", "y", "z"]
    assert reattacher.running == 0


def test_call_keys_do_not_run_into_each_other() -> None:
    assert call_key("/a", "b") != call_key("/ab", "")
    assert call_key("/a", "", "{}") == call_key("/a", "", "{}")
