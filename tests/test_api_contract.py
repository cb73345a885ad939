"""The API's contract through httpx.ASGITransport with a scripted engine: typed responses in OpenAPI, one
knobs path for every route, bad text and streaming refused, admission by items, the Meta RM error boundary."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from meta_rm.hf import HFMetaRM
from meta_rm.protocol import MetaRMInput
from meta_rm.records import JudgmentRecord, write_records
from server.cli import app as cli_app
from server.core.engines import build_planner
from server.core.errors import ClientDisconnected, GRMError, InvalidRequestError
from server.core.prompts import Message
from server.core.settings import Settings
from server.core.types import JudgeRequest
from tests.conftest import app_client, assert_error
from tests.fakes import ScriptedGenerator, ScriptedMetaRM

ROUTES = ["/score", "/score/batch", "/v1/score", "/get_reward", "/v1/chat/completions"]


@contextlib.asynccontextmanager
async def client_for(overrides: dict[str, Any] | None = None, **engines: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(overrides, **engines) as (client, _):
        yield client


async def post_raw(client: httpx.AsyncClient, route: str, body: Any) -> httpx.Response:
    """POST `body` as ASCII JSON: lone surrogates travel as `\\udXXX` escapes (httpx cannot encode them)."""
    return await client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})


async def test_openapi_declares_a_response_schema_for_every_route() -> None:
    async with client_for() as client:
        schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    seen = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            ok = operation["responses"]["200"]["content"]
            (media, body), *_ = ok.items()
            assert body["schema"], f"{method} {path}: no response schema"
            ref = body["schema"].get("$ref", "")
            if path == "/reward":  # slime's contract: the body is the reward itself, a bare JSON number
                assert body["schema"]["type"] == "number", body
            elif media == "application/json":
                assert ref.startswith("#/components/schemas/"), f"{method} {path}: untyped JSON response"
                assert components[ref.rsplit("/", 1)[1]]["properties"], f"{method} {path}"
            assert "422" not in operation["responses"]  # validation errors are 400s with the one error body
            if path in ROUTES:
                assert operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/ErrorResponse"
                )
            seen.add(path)
    assert set(ROUTES) | {"/v1/models", "/health", "/ready", "/metrics"} <= seen
    assert set(components["ScoreResponse"]["properties"]) >= {"rewards", "scores", "best", "usage", "samples"}
    assert "reward" in components["ChatRewardResponse"]["properties"]


def bodies_with(text: str) -> list[tuple[str, dict[str, Any], str]]:
    """(route, body, param) with `text` in each text field of each route."""
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    return [
        ("/score", {"query": text, "responses": ["a"]}, "query"),
        ("/score", {"query": "q", "responses": ["a", text]}, "responses.1"),
        ("/score", {"messages": [{"role": "user", "content": text}], "responses": ["a"]}, "messages.0.content"),
        ("/v1/score", {"text_1": text, "text_2": ["a"]}, "text_1"),
        ("/v1/score", {"text_1": "q", "text_2": ["a", text]}, "text_2"),
        ("/get_reward", {"query": [f"P:{text}"], "prompts": ["P:"]}, "query.0"),
        ("/v1/chat/completions", {"messages": [chat[0], {"role": "assistant", "content": text}]}, "messages.1.content"),
        (
            "/v1/chat/completions",
            {"messages": [chat[0], {"role": "assistant", "content": [{"type": "text", "text": text}]}]},
            "messages.1.content",
        ),
    ]


@pytest.mark.parametrize(("route", "body", "param"), bodies_with("x\ud800y"))
async def test_a_lone_surrogate_is_a_400_naming_the_field(route: str, body: dict[str, Any], param: str) -> None:
    gen = ScriptedGenerator()
    async with client_for(generator=gen) as client:
        err = assert_error(await post_raw(client, route, body), 400, kind="invalid_request_error")
        assert err["param"] == param, err
        assert "surrogate" in err["message"]
    assert gen.calls == []  # nothing reached the engine


async def test_a_lone_surrogate_in_a_batch_item_fails_that_item_only() -> None:
    async with client_for() as client:
        items = [{"query": "q", "responses": ["a"]}, {"query": "q", "responses": ["\udfff"]}]
        results = (await post_raw(client, "/score/batch", {"items": items, "k": 1})).json()["results"]
    assert results[0]["rewards"] == [1]
    assert results[1]["error"]["param"] == "responses.0" and results[1]["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("route", ["/score", "/v1/score", "/get_reward"])
async def test_valid_unicode_outside_the_bmp_is_fine(route: str) -> None:
    body = {route: b for route, b, _ in bodies_with("caf\u00e9 \U0001f600")}[route]
    async with client_for() as client:
        assert (await client.post(route, json=body)).status_code == 200


async def test_stream_true_on_chat_completions_is_a_clear_400() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    gen = ScriptedGenerator()
    async with client_for(generator=gen) as client:
        err = assert_error(
            await client.post("/v1/chat/completions", json={"messages": messages, "stream": True}), 400, "stream"
        )
        assert "stream" in err["message"]
        assert gen.calls == []
        ok = await client.post("/v1/chat/completions", json={"messages": messages, "stream": False, "k": 1})
        assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/score", {"query": "q", "responses": ["a"]}),
        ("/score/batch", {"items": [{"query": "q", "responses": ["a"]}]}),
        ("/v1/score", {"text_1": "q", "text_2": ["a"]}),
        ("/get_reward", {"query": ["P:a"], "prompts": ["P:"]}),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        ),
    ],
)
async def test_every_route_takes_the_same_knobs_with_the_same_bounds(route: str, body: dict[str, Any]) -> None:
    gen = ScriptedGenerator()
    async with client_for(generator=gen) as client:
        knobs = {"k": 3, "temperature": 0.25, "max_tokens": 300, "seed": 11}
        r = await client.post(route, json={**body, **knobs})
        assert r.status_code == 200, r.text
        ((_, sampling, _),) = gen.calls  # one response, one order: the k samples in one engine call
        assert (sampling.n, sampling.temperature, sampling.max_tokens) == (3, 0.25, 300)
        for bad, param in [({"k": 0}, "k"), ({"temperature": 3}, "temperature"), ({"seed": 2**31}, "seed"),
                           ({"max_tokens": 1}, "max_tokens"), ({"k_meta": 1}, "k_meta")]:  # fmt: skip
            assert_error(await client.post(route, json={**body, **bad}), 400, param)  # a batch's knobs fail it


async def test_a_batch_counts_each_item_against_admission() -> None:
    gen = ScriptedGenerator(delay_s=30)
    item = {"query": "q", "responses": ["a"]}
    limits = {"limits.max_concurrent_requests": 4, "limits.max_queued_items": 2}
    async with client_for(limits, generator=gen) as client:
        err = assert_error(await client.post("/score/batch", json={"items": [item] * 7, "k": 1}), 400, "items")
        assert err["code"] == "too_many_items" and "(4 judged + 2 queued)" in err["message"]
        slow = asyncio.create_task(client.post("/score/batch", json={"items": [item] * 5, "k": 1}))
        for _ in range(500):  # until four items are in the engine and one waits (bounded)
            if len(gen.calls) == 4:
                break
            await asyncio.sleep(0.01)
        assert len(gen.calls) == 4 and "grm_items_queued 1.0" in (await client.get("/metrics")).text
        r = await client.post("/score/batch", json={"items": [item] * 2, "k": 1})  # 4 + 1 + 2 > 4 + 2
        assert_error(r, 429, kind="rate_limit_exceeded")
        assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "queue_full"
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        gen.delay_s = 0
        assert (await client.post("/score", json={**item, "k": 1})).status_code == 200
    groups = {"text_1": ["q1", "q2", "q3", "q4", "q5"], "text_2": ["a", "b", "c", "d", "e"], "k": 1}
    limits = {"limits.max_concurrent_requests": 4, "limits.max_queued_items": 0}
    async with client_for(limits) as client:  # five text_1 groups = five items, no queue
        assert_error(await client.post("/v1/score", json=groups), 400, "text_1")


class ExplodingMetaRM(ScriptedMetaRM):
    async def score(self, items: Any) -> list[float]:
        raise RuntimeError("CUDA error: illegal memory access")

    async def check_ready(self) -> None:
        raise KeyError("lost its head")


async def test_a_meta_rm_failure_that_is_not_a_meta_rm_error_is_a_502() -> None:
    async with client_for(meta_rm=ExplodingMetaRM()) as client:
        r = await client.post("/score", json={"query": "q", "responses": ["a", "bb"], "k": 4, "k_meta": 2})
        err = assert_error(r, 502, kind="backend_error")
        assert "RuntimeError" in err["message"] and "illegal memory access" in err["message"]
        assert_error(await client.get("/ready"), 502, kind="backend_error")
        assert (await client.post("/score", json={"query": "q", "responses": ["a"], "k_meta": 0})).status_code == 200


class BrokenLoad(HFMetaRM):
    """The transformers Meta RM whose weights fail to load with something that is not a MetaRMError."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__("/nowhere", name="broken")
        self.exc = exc

    def _load(self) -> None:
        raise self.exc


@pytest.mark.parametrize("exc", [RuntimeError("CUDA out of memory"), ImportError("no module named torch")])
async def test_hf_meta_rm_start_failure_does_not_escape_the_lifespan(exc: Exception) -> None:
    from meta_rm.errors import MetaRMUnavailableError

    rm = BrokenLoad(exc)
    with pytest.raises(MetaRMUnavailableError) as info:
        await rm.start()
    assert str(exc) in str(info.value) and type(exc).__name__ in str(info.value)
    async with client_for(meta_rm=BrokenLoad(exc)) as client:  # the app starts; /ready says why it cannot serve
        err = assert_error(await client.get("/ready"), 503, kind="backend_unavailable")
        assert str(exc) in err["message"]
        assert_error(await client.post("/score", json={"query": "q", "responses": ["a"]}), 503)
        health = await client.get("/health")  # never started: liveness fails so the process gets replaced
        assert health.status_code == 503 and str(exc) in health.json()["reason"]
    with pytest.raises(MetaRMUnavailableError):
        await rm.score([MetaRMInput("c", ("a",), "j")])


def test_client_disconnected_is_in_the_error_tree() -> None:
    import server.core.errors as errors

    exc = ClientDisconnected("gone")
    assert isinstance(exc, GRMError) and exc.status == 499
    assert exc.to_body()["error"]["type"] == "client_closed_request"
    assert "ClientDisconnected" in (errors.__doc__ or "")


@pytest.mark.parametrize(
    ("request_kw", "param"),
    [
        ({"responses": ("ok", "bad \udc80")}, "responses.1"),
        ({"messages": (Message("system", "\ud83d"), Message("user", "q"))}, "messages.0.content"),
        ({"seed": 2**31}, "seed"),
        ({"seed": -1}, "seed"),
    ],
)
def test_the_planner_is_the_one_place_for_bounds_and_text(request_kw: dict[str, Any], param: str) -> None:
    """Callers that skip the HTTP models (CLI, evaluation, Meta RM data) get the same 400s from the core."""
    base: dict[str, Any] = {"messages": (Message("user", "q"),), "responses": ("a",)}
    with pytest.raises(InvalidRequestError) as info:
        build_planner(Settings()).plan(JudgeRequest(**{**base, **request_kw}))
    assert info.value.param == param


UNREACHABLE = ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["score", "--query", "q", "-r", "a", "--seed", "-1", *UNREACHABLE], 2, "error (invalid_request_error): seed"),
        (["score", "--query", "q", "-r", "a", "--backend", "openai"], 2, "invalid settings"),
        (["serve", "--backend", "openai"], 2, "invalid settings"),
        (["meta-rm", "evaluate", "--data", "{data}", "--backend", "none"], 2, "choose a Meta RM backend"),
        (["meta-rm", "evaluate", "--data", "{data}", "--backend", "remote"], 2, "error (configuration_error)"),
        (["eval", "{data}", "--k", "0"], 2, "invalid option"),
    ],
)
def test_every_command_leaves_through_the_one_error_helper(
    tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    data = tmp_path / "records.jsonl"
    record = JudgmentRecord("x", "t", "User: q", ("a", "b"), 0, (0, 1), "Scores: \\boxed{2, 1}", (2, 1), True)
    write_records(data, [record])
    result = CliRunner().invoke(cli_app, [a.replace("{data}", str(data)) for a in args])
    assert result.exit_code == code, result.output
    assert needle in " ".join(result.output.split())


def test_cli_json_errors_are_the_api_error_body() -> None:
    result = CliRunner().invoke(cli_app, ["score", "--query", "", "-r", "a", *UNREACHABLE, "--json"])
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "query"


def test_the_readme_lists_every_metric_the_server_exports() -> None:
    import re

    from server.http.metrics import Metrics

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    exported = {family.name for family in Metrics().registry.collect()}
    missing = [name for name in exported if not re.search(rf"`{name}(_total)?[`{{]", readme)]
    assert exported and not missing, missing
