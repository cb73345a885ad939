"""A live `grm-server serve` process (real uvicorn, real vLLM CPU engine, embedded model), called the way
users call it: httpx for the native and OpenRLHF routes, the official `openai` SDK for the OpenAI ones."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import shortest_labelled_items
from tests.trainer_code import load

pytestmark = pytest.mark.live


def to_body(item: dict[str, object]) -> dict[str, object]:
    prompt = item["prompt"]
    key = "query" if isinstance(prompt, str) else "messages"
    return {key: prompt, "responses": item["responses"]}


def test_score_real_items(live_url: str) -> None:
    item = shortest_labelled_items("llmbar.jsonl", 1)[0]
    r = httpx.post(f"{live_url}/score", json={**to_body(item), "k": 4, "seed": 1, "return_samples": True}, timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    n = len(item["responses"])  # type: ignore[arg-type]
    assert body["model"] == "smollm2-135m-instruct" and len(body["rewards"]) == n
    assert body["valid"] == 4 and body["kept"] == 4 and body["usage"]["engine_calls"] == min(4, n)
    assert all(4 <= r <= 40 for r in body["rewards"])
    assert all(s["scores"] is not None and sorted(s["order"]) == list(range(n)) for s in body["samples"])


def test_score_batch_real_items(live_url: str) -> None:
    items = [to_body(i) for i in shortest_labelled_items("hhh_alignment.jsonl", 2)] + [{"query": "q"}]
    r = httpx.post(f"{live_url}/score/batch", json={"items": items, "k": 2, "seed": 3}, timeout=300)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [("error" in x) for x in results] == [False, False, True]
    assert all(x["valid"] == 2 for x in results[:2])


def test_vllm_score_route(live_url: str) -> None:
    r = httpx.post(
        f"{live_url}/v1/score",
        json={
            "model": "smollm2-135m-instruct",
            "text_1": "What is 3 times 3?",
            "text_2": ["9", "It is 9.", "6"],
            "k": 3,
            "seed": 2,
        },
        timeout=300,
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2] and all(0.0 <= d["score"] <= 1.0 for d in data)


def test_get_reward_route(live_url: str) -> None:
    prompt = "<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\n"
    queries = [prompt + "Hello!", prompt + "Goodbye."]
    r = httpx.post(
        f"{live_url}/get_reward", json={"query": queries, "prompts": [prompt, prompt], "k": 2, "seed": 4}, timeout=300
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["rewards"]) == 2 and all(1.0 <= x <= 10.0 for x in body["rewards"])
    assert body["extra_logs"]["valid_judgments"] == [2.0, 2.0]


def test_openai_sdk_chat_completions_and_models(live_url: str) -> None:
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key="unused", max_retries=0, timeout=300)
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2-135m-instruct"]
    completion = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Apple."}],
        extra_body={"k": 2, "seed": 5},
    )
    content = completion.choices[0].message.content or ""
    assert content.startswith("reward:") and 1.0 <= float(content.removeprefix("reward:")) <= 10.0
    reward = completion.model_extra["reward"]  # type: ignore[index]
    assert reward["k"] == 2 and reward["valid"] == 2
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        )
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:  # no streaming: a clear 400, not a silent JSON answer
        client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
            stream=True,
        )
    assert info.value.body["param"] == "stream"  # type: ignore[index]


def test_live_server_health_ready_metrics(live_url: str) -> None:
    assert httpx.get(f"{live_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{live_url}/ready").json()["status"] == "ready"
    metrics = httpx.get(f"{live_url}/metrics").text
    assert 'grm_requests_total{route="/score",status="200"}' in metrics
    bad = httpx.post(f"{live_url}/score", content=b"\xff", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    lone = httpx.post(  # a lone surrogate is valid JSON but no engine can encode it: 400 naming the field
        f"{live_url}/score",
        content=b'{"query": "q", "responses": ["a\\ud800"]}',
        headers={"content-type": "application/json"},
    )
    assert lone.status_code == 400 and lone.json()["error"]["param"] == "responses.0", lone.text


def test_openrlhf_own_client_on_the_real_engine(live_url: str) -> None:
    """OpenRLHF 0.11.2's own HTTP reward client, one rollout per call as it sends them, with the server's default k
    (OpenRLHF sends no knobs): each caller gets a judged reward on the real CPU engine, inside its 180 s timeout."""
    agent = load("openrlhf.utils.agent")
    executor = agent.SingleTurnAgentExecutor(f"{live_url}/get_reward")
    prompt = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    queries = [prompt + "Red.<|im_end|>", prompt + "Blue is a colour.<|im_end|>"]

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(executor._fetch_rewards_via_http([q], [prompt], [None]) for q in queries)))

    infos = [result[0] for result in asyncio.run(main())]
    assert all(len(info["rewards"]) == 1 and 1.0 <= info["rewards"][0] <= 10.0 for info in infos), infos
    assert all(info["extra_logs"]["valid"] == [1.0] for info in infos), infos
