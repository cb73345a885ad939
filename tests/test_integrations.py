"""The Python client and the TRL/verl adapters: retries and splitting (mock transport), contracts (real app)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.integrations import verl
from server.integrations.client import (
    GROUP_KEY_HEADER,
    AsyncGRMClient,
    GRMClient,
    GRMClientError,
    RetryPolicy,
    group_key,
    to_messages,
    unit,
)
from server.integrations.trl import GRMReward
from tests.fakes import ScriptedGenerator
from voting import unit_score

FAST = RetryPolicy(tries=3, backoff_s=0.001, max_backoff_s=0.01)


def scripted_batch(request: httpx.Request) -> httpx.Response:
    """/score/batch stand-in: score = response length (1..10), an error item for an empty response list."""
    body = json.loads(request.content)
    results = []
    for item in body["items"]:
        lens = [min(10, max(1, len(r))) for r in item["responses"]]
        results.append({"scores": lens, "rewards": lens, "valid": 1, "usage": {"engine_calls": 1}})
    return httpx.Response(200, json={"results": results})


def test_retries_honour_retry_after_then_succeed() -> None:
    seen: list[float] = []
    replies = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(503)])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return next(replies, None) or scripted_batch(request)

    with GRMClient("http://x", transport=httpx.MockTransport(handler), retry=FAST) as client:
        (result,) = client.score_groups([("q", ["abc"])])
    assert len(seen) == 3 and result.scores == [3.0]
    assert RetryPolicy().delay(0, httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert RetryPolicy(max_backoff_s=2).delay(0, httpx.Response(429, headers={"Retry-After": "700"})) == 2.0
    assert 0.25 <= RetryPolicy(backoff_s=0.5).delay(0, None) <= 0.5


def test_gives_up_after_the_last_try_and_does_not_retry_4xx() -> None:
    calls: list[int] = []

    def handler(status: int) -> Any:
        def h(request: httpx.Request) -> httpx.Response:
            calls.append(status)
            return httpx.Response(status, json={"error": {"message": "no", "type": "t", "param": None, "code": None}})

        return h

    for status, tries in ((503, 3), (400, 1)):
        calls.clear()
        with GRMClient("http://x", transport=httpx.MockTransport(handler(status)), retry=FAST) as client:
            with pytest.raises(GRMClientError) as info:
                client.reward("q", "a")
        assert info.value.status == status and len(calls) == tries


def test_batches_and_big_groups_are_split_and_reassembled() -> None:
    sizes: list[list[int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append([len(i["responses"]) for i in json.loads(request.content)["items"]])
        return scripted_batch(request)

    groups = [(f"p{g}", ["x" * (1 + (g + i) % 9) for i in range(5)]) for g in range(3)]
    with GRMClient("http://x", transport=httpx.MockTransport(handler), batch_items=2, max_responses=2) as client:
        results = client.score_groups(groups)
    assert sizes == [[2, 2], [1, 2], [2, 1], [2, 2], [1]]  # 3 groups x (2+2+1) items, 2 items per call
    for (_, responses), result in zip(groups, results, strict=True):
        assert result.scores == [float(len(r)) for r in responses] and result.usage["engine_calls"] == 3


async def test_async_client_sends_the_group_key_and_knobs() -> None:
    headers: list[str] = []
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers[GROUP_KEY_HEADER])
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=4.0)

    chat = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    async with AsyncGRMClient("http://x", transport=httpx.MockTransport(handler), knobs={"k": 2}) as client:
        assert await client.reward(chat, "a", "gt") == 4.0
    assert headers == [group_key(chat)] == [group_key("hi")]  # the same prompt, plain or as a conversation
    assert bodies == [{"k": 2, "prompt": [{"role": "user", "content": "hi"}], "response": "a", "label": "gt"}]
    assert to_messages([{"role": "developer", "content": "s"}]) == [{"role": "system", "content": "s"}]


def test_trl_reward_groups_by_prompt_and_keeps_order() -> None:
    sent: list[list[dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["items"])
        return scripted_batch(request)

    reward = GRMReward("http://x", transport=httpx.MockTransport(handler), k=2, scale="raw")
    assert reward.__name__ == "grm"
    prompts = ["p", "q", "p", "q"]
    completions = ["a", "bbbb", "ccc", "dd"]
    assert reward(prompts=prompts, completions=completions, answer=["x"] * 4) == [1.0, 4.0, 3.0, 2.0]
    assert [item["responses"] for item in sent[0]] == [["a", "ccc"], ["bbbb", "dd"]]
    conv_prompts = [[{"role": "user", "content": "p"}]] * 2
    conv_completions = [[{"role": "assistant", "content": "abcdefghij"}], [{"role": "assistant", "content": "a"}]]
    unit_reward = GRMReward("http://x", transport=httpx.MockTransport(handler))
    assert unit_reward(conv_prompts, conv_completions) == [1.0, 0.0]


async def test_verl_compute_score_through_an_injected_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=7.0)

    transport = httpx.MockTransport(handler)
    monkeypatch.setenv("GRM_URL", "http://grm.test:9000")
    chat = [{"role": "user", "content": [{"type": "text", "text": "Q?"}]}]
    info = {"question": "ignored", "problem": "Q?", "messages": chat}
    first = await verl.compute_score("gsm8k", "4", "4", info, prompt_key="problem", k=2, seed=3, transport=transport)
    second = await verl.compute_score(
        "gsm8k", "5", None, {"messages": chat}, prompt_key="messages", transport=transport
    )
    assert first == second == {"score": unit(7.0), "grm_score": 7.0, "valid": 1.0}
    assert [str(r.url) for r in sent] == ["http://grm.test:9000/reward"] * 2  # GRM_URL when no url is given
    bodies = [json.loads(r.content) for r in sent]
    assert bodies[0] == {"k": 2, "seed": 3, "prompt": "Q?", "response": "4", "label": "4"}
    assert bodies[1] == {"prompt": [{"role": "user", "content": "Q?"}], "response": "5", "label": None}
    assert sent[0].headers[GROUP_KEY_HEADER] == sent[1].headers[GROUP_KEY_HEADER] == group_key("Q?")
    with pytest.raises(ValueError, match="extra_info"):
        await verl.compute_score("d", "s", "g", {}, transport=transport)
    await verl.close_clients()


# the real app (ASGI) with a scripted engine


async def test_verl_compute_score_per_sample_calls_are_judged_jointly(app_factory: Any) -> None:
    gen = ScriptedGenerator()
    _, app = await app_factory(generator=gen)
    transport = httpx.ASGITransport(app=app)  # the app instead of the network
    kwargs: dict[str, Any] = {"url": "http://test", "k": 1, "reward_router_address": None, "transport": transport}
    solutions = ["a", "bb", "ccc", "dddd"]
    results = await asyncio.gather(
        *(
            verl.compute_score("gsm8k", s, "4", {"question": "Q?", "index": i}, **kwargs)
            for i, s in enumerate(solutions)
        )
    )
    assert [r["grm_score"] for r in results] == [1.0, 2.0, 3.0, 4.0]
    assert [r["score"] for r in results] == [unit(s) for s in (1.0, 2.0, 3.0, 4.0)]
    assert len(gen.calls) == 1  # four concurrent per-sample calls, one joint judgment
    with pytest.raises(ValueError, match="extra_info"):
        await verl.compute_score("d", "s", "g", {}, url="http://test")
    await verl.close_clients()


@given(st.floats(min_value=1.0, max_value=10.0, allow_nan=False))
def test_the_clients_unit_mapping_is_the_servers(mean: float) -> None:
    """The dependency-free client keeps its own copy of the 1..10 -> 0..1 rule: the same numbers, exactly."""
    assert unit(mean) == unit_score(mean)
    assert unit_score(1.0) == 0.0 and unit_score(10.0) == 1.0


def test_the_clients_header_names_are_the_servers() -> None:
    from server.http import deadlines
    from server.integrations import client

    assert (client.DEADLINE_HEADER, client.VALID_HEADER) == (deadlines.DEADLINE_HEADER, deadlines.VALID_HEADER)
