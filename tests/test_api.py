"""The HTTP app through httpx.ASGITransport with a scripted engine: routes, errors, auth, limits, fuzzing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server.core.settings import Settings
from server.http.app import create_app
from tests.conftest import assert_error
from tests.fakes import ScriptedGenerator, ScriptedMetaRM


async def test_score_returns_the_contract(app_factory: Any) -> None:
    client, _ = await app_factory()
    r = await client.post(
        "/score", json={"query": "longest?", "responses": ["a", "bbbb"], "k": 4, "seed": 2, "return_samples": True}
    )
    body = r.json()
    assert r.status_code == 200 and r.headers["x-request-id"] == body["id"]
    assert body["object"] == "score" and body["model"] == "scripted"
    assert body["rewards"] == [4, 16] and body["scores"] == [1.0, 4.0] and body["best"] == 1
    assert (body["k"], body["k_meta"], body["valid"], body["kept"], body["seed"]) == (4, 0, 4, 4, 2)
    assert body["usage"]["engine_calls"] == 2 and body["usage"]["total_tokens"] > 0
    assert len(body["samples"]) == 4 and body["samples"][0]["kept"] is True
    no_samples = (
        await client.post("/score", json={"messages": [{"role": "user", "content": "q"}], "responses": ["a"]})
    ).json()
    assert "samples" not in no_samples


async def test_batch_keeps_good_items_when_one_is_bad(app_factory: Any) -> None:
    client, _ = await app_factory()
    items = [
        {"query": "q", "responses": ["a", "bb"]},
        {"query": "q"},
        {"query": "", "responses": ["a"]},
        {"query": "q", "responses": ["ccc"]},
    ]
    r = await client.post("/score/batch", json={"items": items, "k": 2, "seed": 1})
    results = r.json()["results"]
    assert r.status_code == 200 and len(results) == 4
    assert results[0]["rewards"] == [2, 4] and results[3]["rewards"] == [6]
    assert results[1]["error"]["param"] == "responses" and "items.1" in results[1]["error"]["message"]
    assert results[2]["error"]["param"] == "query"


async def test_vllm_score_api_shape(app_factory: Any) -> None:
    client, _ = await app_factory()
    r = await client.post(
        "/v1/score", json={"model": "scripted", "text_1": "q", "text_2": ["a", "bbbbbbbbbb"], "k": 2, "seed": 1}
    )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert [d["score"] for d in body["data"]] == [0.0, 1.0]  # mean 1 -> 0, mean 10 -> 1
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert_error(await client.post("/v1/score", json={"model": "other", "text_1": "q", "text_2": "a"}), 404, "model")
    assert_error(await client.post("/v1/score", json={"text_1": ["q", "r"], "text_2": ["a", "b", "c"]}), 400)


async def test_get_reward_groups_rollouts_by_prompt(app_factory: Any) -> None:
    gen = ScriptedGenerator()
    client, _ = await app_factory({"rewards.join_cap": 2}, generator=gen)
    prompts = ["P:", "P:", "P:", "Q:"]
    queries = ["P:a", "P:bbbb", "P:cc", "Q:ddddd"]
    r = await client.post(
        "/get_reward", json={"query": queries, "prompts": prompts, "labels": [None] * 4, "k": 2, "seed": 1}
    )
    body = r.json()
    assert r.status_code == 200 and body["rewards"] == [1.0, 4.0, 2.0, 5.0]
    assert body["scores"] == [
        0.0,
        pytest.approx(1 / 3, abs=1e-6),
        pytest.approx(1 / 9, abs=1e-6),
        pytest.approx(4 / 9, abs=1e-6),
    ]
    assert body["extra_logs"]["voted_sum"] == [2.0, 8.0, 4.0, 10.0]
    # groups: P (2 rollouts, cap) + P (1) + Q (1) -> 3 judged groups; with k=2 each group of n responses uses min(k, n) calls
    assert len(gen.calls) == 2 + 1 + 1
    assert_error(await client.post("/get_reward", json={"query": ["X:a"], "prompts": ["P:"]}), 400, "query.0")
    assert_error(await client.post("/get_reward", json={"query": ["X:a"], "prompts": ["P:", "Q:"]}), 400)


async def test_chat_completions_reward_and_models(app_factory: Any) -> None:
    client, _ = await app_factory()
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "scripted", "messages": messages, "k": 2, "seed": 3, "n": 1, "stream": False},
    )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "reward:5.0000"
    assert body["reward"]["rewards"] == [10] and body["reward"]["k"] == 2
    assert (await client.get("/v1/models")).json()["data"][0]["id"] == "scripted"
    assert_error(
        await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
        400,
        "messages",
    )


async def test_meta_rm_through_the_api(app_factory: Any) -> None:
    client, _ = await app_factory(meta_rm=ScriptedMetaRM())
    body = (
        await client.post(
            "/score", json={"query": "q", "responses": ["a", "bb"], "k": 8, "k_meta": 3, "return_samples": True}
        )
    ).json()
    assert body["k_meta"] == 3 and body["kept"] == 3
    kept = sorted(s["meta_reward"] for s in body["samples"] if s["kept"])
    dropped = [s["meta_reward"] for s in body["samples"] if not s["kept"]]
    assert min(kept) >= max(dropped)
    assert (await client.get("/ready")).json()["meta_rm"] == "scripted-meta-rm"


BAD_BODIES: list[tuple[Any, str | None]] = [
    ({"responses": ["a"]}, None),  # neither query nor messages
    ({"query": "q", "messages": [{"role": "user", "content": "q"}], "responses": ["a"]}, None),
    ({"query": 5, "responses": ["a"]}, "query"),
    ({"query": "q", "responses": "a"}, "responses"),
    ({"query": "q", "responses": [1, 2]}, "responses.0"),
    ({"query": "", "responses": ["a"]}, "query"),
    ({"query": "q", "responses": []}, "responses"),
    ({"query": "q", "responses": ["a"], "k": 0}, "k"),
    ({"query": "q", "responses": ["a"], "k": -3}, "k"),
    ({"query": "q", "responses": ["a"], "k": "many"}, "k"),
    ({"query": "q", "responses": ["a"], "k": 4, "k_meta": 5}, "k_meta"),
    ({"query": "q", "responses": ["a"], "k_meta": 1}, "k_meta"),
    ({"query": "q", "responses": ["a"] * 5000}, "responses"),
    ({"query": "q", "responses": ["a" * 40_000]}, "responses.0"),
    ({"query": "q", "responses": ["a"], "max_tokens": 1}, "max_tokens"),
    ({"query": "q", "responses": ["a"], "seed": -1}, "seed"),
    ({"query": "q", "responses": ["a"], "temperature": 9}, "temperature"),
    ({"query": "q", "responses": ["a"], "surprise": True}, "surprise"),
    ({"messages": [{"role": "assistant", "content": "q"}], "responses": ["a"]}, "messages"),
    ({"messages": [{"role": "robot", "content": "q"}], "responses": ["a"]}, "messages.0.role"),
    ([1, 2, 3], None),
    ("just a string", None),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
async def test_bad_input_gets_400_with_the_error_body(app_factory: Any, body: Any, param: str | None) -> None:
    client, _ = await app_factory()
    assert_error(await client.post("/score", json=body), 400, param)
    assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"query": "\xff\xfe", "responses": ["a"]}', b"", b"\x00\x01"],
    ids=["invalid-json", "invalid-utf8", "empty", "binary"],
)
async def test_unparseable_bodies_get_400(app_factory: Any, raw: bytes) -> None:
    client, _ = await app_factory()
    assert_error(await client.post("/score", content=raw, headers={"content-type": "application/json"}), 400)


async def test_huge_body_gets_413_without_reading_it_all(app_factory: Any) -> None:
    client, _ = await app_factory({"limits.max_body_bytes": 10_000})
    big = json.dumps({"query": "q", "responses": ["x" * 20_000]})
    err = assert_error(await client.post("/score", content=big, headers={"content-type": "application/json"}), 413)
    assert err["code"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the streamed count trips the cap
        for _ in range(30):
            yield b" " * 1000

    assert_error(await client.post("/score", content=chunks(), headers={"content-type": "application/json"}), 413)


async def test_batch_limits(app_factory: Any) -> None:
    client, _ = await app_factory({"limits.max_batch_items": 2})
    assert_error(
        await client.post("/score/batch", json={"items": [{"query": "q", "responses": ["a"]}] * 3}), 400, "items"
    )
    assert_error(await client.post("/score/batch", json={"items": []}), 400, "items")
    assert_error(await client.post("/score/batch", json={"items": [], "k": 0, "bogus": 1}), 400)


async def test_api_keys(app_factory: Any) -> None:
    client, _ = await app_factory({"server.api_keys": ["s3cret"]})
    body = {"query": "q", "responses": ["a"], "k": 1}
    assert_error(await client.post("/score", json=body), 401)
    assert_error(await client.post("/score", json=body, headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(
        await client.post("/v1/score", json={"text_1": "q", "text_2": "a"}, headers={"Authorization": "Basic s3cret"}),
        401,
    )
    assert (await client.post("/score", json=body, headers={"Authorization": "Bearer s3cret"})).status_code == 200
    assert_error(await client.get("/metrics"), 401)
    assert (await client.get("/health")).status_code == 200  # health and readiness stay open for probes
    assert (await client.get("/ready")).status_code == 200


async def test_unknown_route_and_method(app_factory: Any) -> None:
    client, _ = await app_factory()
    assert_error(await client.get("/nope"), 404)
    assert_error(await client.get("/score"), 405)


async def test_metrics_count_requests_judgments_and_tokens(app_factory: Any) -> None:
    gen = ScriptedGenerator(judge=lambda p, i: "no box" if i == 0 else "Scores: \\boxed{5}")
    client, _ = await app_factory(generator=gen)
    await client.post("/score", json={"query": "q", "responses": ["a"], "k": 3, "structured_output": "off"})
    await client.post("/score", json={"query": "q", "responses": []})
    text = (await client.get("/metrics")).text
    assert 'grm_judgments_completed_total{result="valid"} 0.0' in text  # off: no completion
    assert 'grm_requests_total{route="/score",status="200"} 1.0' in text
    assert 'grm_requests_total{route="/score",status="400"} 1.0' in text
    assert 'grm_judgments_total{result="valid"} 2.0' in text
    assert 'grm_judgments_total{result="invalid"} 1.0' in text
    assert 'grm_tokens_total{kind="prompt"}' in text and "grm_request_latency_seconds_bucket" in text
    assert "grm_kept_fraction_count 1.0" in text and "grm_requests_in_flight" in text
    # by default the judgment without a box is completed (the scripted continuation writes "1}")
    await client.post("/score", json={"query": "q", "responses": ["a"], "k": 3})
    text = (await client.get("/metrics")).text
    assert 'grm_judgments_completed_total{result="valid"} 1.0' in text
    assert 'grm_judgments_total{result="valid"} 5.0' in text and 'grm_judgments_total{result="invalid"} 1.0' in text


async def test_engine_that_never_started_is_503_and_ready_says_why(app_factory: Any) -> None:
    class Broken(ScriptedGenerator):
        async def start(self) -> None:
            from server.core.errors import BackendUnavailableError

            raise BackendUnavailableError("GPU out of memory while loading")

    client, _ = await app_factory(generator=Broken())
    assert "GPU out of memory" in assert_error(await client.get("/ready"), 503)["message"]
    assert_error(await client.post("/score", json={"query": "q", "responses": ["a"]}), 503)
    health = await client.get("/health")  # it never will serve: liveness fails so the orchestrator replaces it
    assert health.status_code == 503 and "GPU out of memory" in health.json()["reason"]


@pytest.mark.timeout(300)
def test_openapi_schema_fuzz_never_gives_5xx() -> None:
    """schemathesis over every route of the OpenAPI schema (bounded), against the scripted engine."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from starlette.testclient import TestClient

    app = create_app(
        Settings().with_overrides({"judging.k": 2, "judging.max_k": 4, "limits.max_responses": 4}),
        generator=ScriptedGenerator(),
    )
    with TestClient(app):  # runs the lifespan
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        failures: list[str] = []
        calls: list[str] = []
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]  # schemathesis: an Err here fails the test

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy())
            def check(case: Any) -> None:
                response = case.call()
                calls.append(case.path)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.path}: {response.status_code} {response.text[:200]}")
                if response.status_code >= 400:
                    assert set(response.json()["error"]) == {"message", "type", "param", "code"}

            check()
        assert not failures, failures
        assert {"/score", "/score/batch", "/v1/score", "/get_reward", "/v1/chat/completions"} <= set(calls)
        assert len(calls) > 100


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/score", {"query": "q", "responses": ["a"]}, 200),
        ("POST", "/score", {"query": "q", "responses": []}, 400),
        ("GET", "/nowhere", None, 404),
        ("POST", "/score", {"query": "q" * 5_000_000, "responses": ["a"]}, 413),
    ],
)
async def test_every_answer_carries_the_request_id_once(
    app_factory: Any, method: str, path: str, body: Any, status: int
) -> None:
    client, _ = await app_factory()
    r = await client.request(method, path, json=body, headers={"X-Request-Id": "trace-7"})
    assert r.status_code == status
    assert r.headers.get_list("x-request-id") == ["trace-7"]


async def test_an_unexpected_error_is_a_500_with_the_error_body_and_the_request_id() -> None:
    app = create_app(Settings(), generator=ScriptedGenerator())

    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    app.state.serving.score = broken
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # as uvicorn: the app answers 500
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        r = await client.post("/score", json={"query": "q", "responses": ["a"]}, headers={"X-Request-Id": "t-500"})
    err = assert_error(r, 500)
    assert err["type"] == "internal_error" and "RuntimeError" in err["message"] and "a bug" not in err["message"]
    assert r.headers.get_list("x-request-id") == ["t-500"]
