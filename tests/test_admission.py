"""Admission by items: calls beyond the judging slots wait in a bounded, round-robin queue; a call that does
not fit is refused whole before it starts; a failed or abandoned call cancels its other items. The queue's
logic directly, then the real app over HTTP with a scripted engine (counting its calls), then the real
vLLM engine."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.admission import Admission
from server.core.errors import BackendError, InvalidRequestError, OverloadedError
from server.core.generators.base import Generation, Partial, SamplingConfig
from server.core.generators.vllm_local import VLLMGenerator
from tests.conftest import app_client
from tests.fakes import ScriptedGenerator, wait_until
from tests.test_faults import live


@dataclass
class CountingGenerator(ScriptedGenerator):
    """A scripted engine that also records how many of its calls ran at once."""

    running: int = 0
    peak: int = 0

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await super().generate(prompt, sampling, request_id)
        finally:
            self.running -= 1


def gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not exported"
    return float(match.group(1))


async def item_gauges(client: httpx.AsyncClient) -> tuple[float, float]:
    text = (await client.get("/metrics")).text
    return gauge(text, "grm_items_in_flight"), gauge(text, "grm_items_queued")


def reward_body(n: int, **knobs: Any) -> dict[str, Any]:
    """`n` prompt groups (distinct prompts, one rollout each); rollout j's response has (j % 9) + 1 chars."""
    prompts = [f"P{j}:" for j in range(n)]
    return {"query": [p + "x" * (j % 9 + 1) for j, p in enumerate(prompts)], "prompts": prompts, "k": 1, **knobs}


def batch_body(n: int) -> dict[str, Any]:
    return {"items": [{"query": f"q{j}", "responses": ["x" * (j % 9 + 1)]} for j in range(n)], "k": 1}


# The queue's logic


async def test_waiting_items_are_served_round_robin_over_calls_in_order_of_arrival() -> None:
    adm = Admission(slots=1, max_queued=10, queue_timeout_s=30)
    started: list[str] = []
    release = asyncio.Event()

    async def item(name: str, lane: Any) -> None:
        async with adm.slot(lane):
            started.append(name)
            await release.wait()
            release.clear()

    with adm.call(3) as a, adm.call(2) as b, adm.call(1) as c:
        tasks = [asyncio.create_task(item(f"A{i}", a)) for i in range(3)]
        await wait_until(lambda: adm.queued == 2, 5, "A2, A3 queued")
        tasks += [asyncio.create_task(item(f"B{i}", b)) for i in range(2)]
        await wait_until(lambda: adm.queued == 4, 5, "B queued")
        tasks.append(asyncio.create_task(item("C0", c)))
        await wait_until(lambda: adm.queued == 5, 5, "C queued")
        for n in range(1, 7):
            await wait_until(lambda: len(started) >= n, 5, f"item {n} started")  # noqa: B023 - called at once
            release.set()
        await asyncio.gather(*tasks)
    # A0 held the free slot; then each freed slot went to the oldest call with a waiting item, which went to the
    # back of the line: C, arriving last with one item, started fourth, not sixth.
    assert started == ["A0", "A1", "B0", "C0", "A2", "B1"]
    assert (adm.in_flight, adm.queued, adm.admitted) == (0, 0, 0)


async def test_a_call_that_cannot_fit_is_refused_whole_and_holds_nothing() -> None:
    adm = Admission(slots=2, max_queued=3, queue_timeout_s=30)
    with pytest.raises(InvalidRequestError) as never:
        with adm.call(6, param="items"):
            pass
    assert never.value.code == "too_many_items" and never.value.param == "items"
    with adm.call(4):
        with pytest.raises(OverloadedError) as full:  # 4 accepted + 2 > 2 + 3, though none of the 4 started yet
            with adm.call(2):
                pass
        assert full.value.code == "queue_full" and full.value.retry_after == 1
        with adm.call(1):  # 4 + 1 fits
            assert adm.admitted == 5
    assert adm.admitted == 0  # places of items that never ran are given back when the call ends


@settings(max_examples=60, deadline=None)
@given(
    slots=st.integers(1, 4),
    max_queued=st.integers(0, 6),
    calls=st.lists(st.tuples(st.integers(1, 6), st.integers(0, 3)), min_size=1, max_size=8),
)
def test_queue_invariants_hold_for_any_arrivals(slots: int, max_queued: int, calls: list[tuple[int, int]]) -> None:
    """Calls of `size` items arrive `gap` loop turns apart; every item holds its slot for two turns. Accepted
    calls get every item judged exactly once; at no time more than `slots` judged or `max_queued` waiting;
    a call is refused only when it does not fit; everything is given back at the end."""

    async def scenario() -> None:
        adm = Admission(slots, max_queued, queue_timeout_s=60)
        done: list[int] = []
        worst = [0, 0]

        async def item(call: int, lane: Any) -> None:
            async with adm.slot(lane):
                for _ in range(2):
                    worst[0], worst[1] = max(worst[0], adm.in_flight), max(worst[1], adm.queued)
                    await asyncio.sleep(0)
                done.append(call)

        async def one(call: int, size: int) -> bool:
            fits = adm.admitted + size <= slots + max_queued
            try:
                with adm.call(size) as lane:
                    await asyncio.gather(*(item(call, lane) for _ in range(size)))
            except (OverloadedError, InvalidRequestError):
                assert not fits
                return False
            assert fits
            return True

        tasks = []
        for call, (size, gap) in enumerate(calls):
            tasks.append(asyncio.create_task(one(call, size)))
            for _ in range(gap):
                await asyncio.sleep(0)
        accepted = await asyncio.gather(*tasks)
        assert sorted(done) == sorted(c for c, (size, _) in enumerate(calls) if accepted[c] for _ in range(size))
        assert worst[0] <= slots and worst[1] <= max_queued
        assert (adm.in_flight, adm.queued, adm.admitted) == (0, 0, 0)

    asyncio.run(scenario())


# The real app over HTTP with a scripted engine


@pytest.mark.parametrize("join", [True, False])
async def test_get_reward_with_more_prompt_groups_than_slots_gets_every_answer(join: bool) -> None:
    gen = CountingGenerator(delay_s=0.02)
    limits = {"limits.max_concurrent_requests": 4, "rewards.join": join, "rewards.join_window_s": 0.01}
    async with app_client(limits, generator=gen) as (client, _):
        r = await client.post("/get_reward", json=reward_body(25))
        assert r.status_code == 200, r.text
        assert r.json()["rewards"] == [float(j % 9 + 1) for j in range(25)]  # each group its own answer
        assert len(gen.calls) == 25 and gen.peak == 4  # queued beyond the four slots, never more at once
        assert await item_gauges(client) == (0, 0)


async def test_joined_per_sample_calls_take_one_slot_per_joint_judgment_through_the_queue() -> None:
    gen = CountingGenerator(delay_s=0.05)
    limits = {"limits.max_concurrent_requests": 2, "rewards.join_window_s": 1, "rewards.join_max_wait_s": 5}
    limits["rewards.reattach"] = False  # calls j and j + 9 are identical: each is judged here, none re-attaches
    async with app_client(limits, generator=gen) as (client, _):
        calls = [  # 30 per-sample calls (one rollout each) for 3 prompts, sent at once
            client.post(
                "/get_reward", json={"query": [f"P{j % 3}:" + "x" * (j % 9 + 1)], "prompts": [f"P{j % 3}:"], "k": 2}
            )
            for j in range(30)
        ]
        responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses] == [200] * 30
        assert [r.json()["rewards"] for r in responses] == [[float(j % 9 + 1)] for j in range(30)]
        text = (await client.get("/metrics")).text
        # one joint judgment of ten callers per prompt; the third waited for a slot instead of getting a 429.
        # Each prompt's ten rollouts hold three distinct texts (j % 9 + 1 over j = p, p + 3, ...): judged once each
        assert gauge(text, "grm_reward_join_size_count") == 3 and gauge(text, "grm_reward_join_size_sum") == 9
        assert gauge(text, "grm_reward_join_callers_sum") == 30
        assert len(gen.calls) == 3 * 2 and gen.peak == 2 * 2  # k=2: two engine calls per joint judgment
        assert await item_gauges(client) == (0, 0)


async def test_score_batch_with_more_items_than_slots_gets_every_answer() -> None:
    gen = CountingGenerator(delay_s=0.02)
    async with app_client({"limits.max_concurrent_requests": 4}, generator=gen) as (client, _):
        r = await client.post("/score/batch", json=batch_body(25))
        assert r.status_code == 200, r.text
        assert [item["rewards"] for item in r.json()["results"]] == [[float(j % 9 + 1)] for j in range(25)]
        assert len(gen.calls) == 25 and gen.peak == 4
        assert await item_gauges(client) == (0, 0)


async def test_gauges_count_items_while_a_batch_runs() -> None:
    gen = ScriptedGenerator(delay_s=30)
    async with app_client({"limits.max_concurrent_requests": 4}, generator=gen) as (client, _):
        batch = asyncio.create_task(client.post("/score/batch", json=batch_body(10)))
        await wait_until(lambda: len(gen.calls) == 4, 10, "four items in the engine")
        assert await item_gauges(client) == (4, 6)  # one HTTP request, ten items: four judged, six waiting
        batch.cancel()
        await asyncio.gather(batch, return_exceptions=True)
        assert await item_gauges(client) == (0, 0)
        assert len(gen.calls) == 4 and gen.cancelled == 4  # the waiting six never reached the engine


async def test_a_call_over_the_queue_bound_gets_429_and_nothing_of_it_runs() -> None:
    gen = ScriptedGenerator(delay_s=30)
    limits = {"limits.max_concurrent_requests": 2, "limits.max_queued_items": 3}
    async with app_client(limits, generator=gen) as (client, _):
        r = await client.post("/get_reward", json=reward_body(6))  # could never be held: 400, not 429
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_items"
        big = asyncio.create_task(client.post("/score/batch", json=batch_body(4)))
        await wait_until(lambda: len(gen.calls) == 2, 10, "two items in the engine")
        for route, body in [("/get_reward", reward_body(2)), ("/score/batch", batch_body(2))]:
            r = await client.post(route, json=body)  # 4 accepted + 2 > 2 + 3
            assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
            assert r.json()["error"] == {
                "message": r.json()["error"]["message"],
                "type": "rate_limit_exceeded",
                "param": None,
                "code": "queue_full",
            }
        assert len(gen.calls) == 2 and await item_gauges(client) == (2, 2)  # the refused calls added nothing
        assert 'grm_items_refused_total{reason="queue_full"} 2.0' in (await client.get("/metrics")).text
        gen.delay_s = 0
        big.cancel()
        await asyncio.gather(big, return_exceptions=True)
        assert await item_gauges(client) == (0, 0)
        r = await client.post("/get_reward", json=reward_body(5))  # the whole capacity is free again
        assert r.status_code == 200 and len(gen.calls) == 2 + 5


async def test_an_item_past_the_queue_deadline_fails_the_call_and_cancels_its_other_items() -> None:
    gen = ScriptedGenerator(delay_s=30)
    limits = {"limits.max_concurrent_requests": 1, "limits.queue_timeout_s": 1.0, "rewards.join": False}
    async with app_client(limits, generator=gen) as (client, _):
        r = await client.post("/get_reward", json=reward_body(3))
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_timeout"
        assert len(gen.calls) == 1 and gen.cancelled == 1  # the one being judged was aborted, not orphaned
        assert await item_gauges(client) == (0, 0)


@dataclass
class FailingGenerator(CountingGenerator):
    """Fails the judgments of prompt P0 after `fail_after_s`; the others take `delay_s`."""

    fail_after_s: float = 0.5

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        if "P0:" in prompt:
            await asyncio.sleep(self.fail_after_s)
            raise BackendError("scripted engine failure")
        return await super().generate(prompt, sampling, request_id)


async def test_a_fatal_item_error_cancels_the_calls_other_items() -> None:
    gen = FailingGenerator(delay_s=30)
    limits = {"limits.max_concurrent_requests": 2, "rewards.join": False}
    async with app_client(limits, generator=gen) as (client, _):
        r = await client.post("/get_reward", json=reward_body(5))
        assert r.status_code == 502 and r.json()["error"]["type"] == "backend_error"
        assert gen.running == 0 and gen.cancelled == len(gen.calls) >= 1  # running siblings aborted
        assert len(gen.calls) <= 2  # at most one queued sibling got P0's slot as the call failed
        assert await item_gauges(client) == (0, 0)
        await asyncio.sleep(0.2)
        assert gen.running == 0 and await item_gauges(client) == (0, 0)  # and nothing started later


async def test_a_client_disconnect_cancels_the_calls_queued_items() -> None:
    gen = ScriptedGenerator(delay_s=30)
    async with live(gen, **{"limits.max_concurrent_requests": 2}) as url:
        async with httpx.AsyncClient(base_url=url, timeout=0.5) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/score/batch", json=batch_body(10))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for _ in range(500):  # bounded: until the server has noticed the disconnect
                if await item_gauges(client) == (0, 0):
                    break
                await asyncio.sleep(0.02)
            assert await item_gauges(client) == (0, 0)
            assert len(gen.calls) == 2 and gen.cancelled == 2  # the eight queued items never started
            gen.delay_s = 0
            assert (await client.post("/score/batch", json=batch_body(4))).status_code == 200


async def test_a_small_call_arriving_during_a_big_batch_finishes_first() -> None:
    gen = ScriptedGenerator(delay_s=0.05)
    limits = {"limits.max_concurrent_requests": 2, "rewards.join": False}
    async with app_client(limits, generator=gen) as (client, _):
        big = asyncio.create_task(client.post("/get_reward", json=reward_body(40)))  # 20 rounds of two
        await wait_until(lambda: len(gen.calls) >= 4, 10, "the big batch under way")
        small = await client.post("/score", json={"query": "q", "responses": ["abc"], "k": 1})
        assert small.status_code == 200 and small.json()["rewards"] == [3.0]
        assert not big.done()  # interleaved with the batch, not queued behind all of it
        assert len(gen.calls) < 40
        r = await big
        assert r.status_code == 200 and len(r.json()["rewards"]) == 40


# The real vLLM engine


class BorrowedEngine:
    """The session's real vLLM engine lent to one app (the app's lifespan neither starts nor closes it), counting
    how many of its calls run at once."""

    def __init__(self, engine: VLLMGenerator) -> None:
        self.engine = engine
        self.running = self.peak = 0

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def chars_per_token(self) -> float | None:
        return self.engine.chars_per_token

    @property
    def restartable(self) -> bool:
        return False  # lent: the app must not supervise (rebuild) the session's engine

    @property
    def retried(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await self.engine.generate(prompt, sampling, request_id)
        finally:
            self.running -= 1

    async def continue_judgments(
        self, prompt: str, partials: Sequence[Partial], sampling: SamplingConfig, request_id: str
    ) -> Generation:
        return await self.engine.continue_judgments(prompt, partials, sampling, request_id)

    async def check_ready(self) -> None:
        await self.engine.check_ready()

    async def close(self) -> None:
        return None


@pytest.mark.engine
async def test_real_engine_judges_a_reward_batch_above_the_slots(vllm_generator: VLLMGenerator) -> None:
    engine = BorrowedEngine(vllm_generator)
    limits = {"limits.max_concurrent_requests": 2, "judging.max_tokens": 112, "rewards.strict": True}
    async with app_client(limits, generator=engine) as (client, _):
        r = await client.post("/get_reward", json=reward_body(3, seed=3))
        assert r.status_code == 200, r.text
        body = r.json()
        # Strict: every group was judged by the model (no fallback); its scores are the model's, only bounded here.
        assert len(body["rewards"]) == 3 and all(1 <= x <= 10 for x in body["rewards"])
        assert engine.peak == 2  # three groups through two slots
        assert await item_gauges(client) == (0, 0)
