"""The `openai` backend against a real vLLM OpenAI server subprocess, and the `grm-server score` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx2
import openai
import pytest

from server.core.errors import BackendError, BackendUnavailableError, InvalidRequestError, RequestTimeoutError
from server.core.generators.base import ContinuationUnsupportedError, Partial, SamplingConfig
from server.core.generators.openai_remote import OpenAIGenerator
from server.core.judging import JudgeService
from server.core.prompts import Message, PromptBuilder, TemplateName
from server.core.settings import Settings
from server.core.types import JudgeRequest
from tests.servers import free_port

QUERY = (Message("user", "Name a primary colour."),)
RESPONSES = ("Red is a primary colour.", "Green grass.")


def openai_settings(url: str, **extra: object) -> Settings:
    return Settings().with_overrides(
        {"generator.backend": "openai", "generator.base_url": url, "judging.max_tokens": 160, **extra}
    )


@pytest.mark.remote
async def test_openai_backend_judges_through_a_real_vllm_server(remote_url: str) -> None:
    settings = openai_settings(remote_url)
    gen = OpenAIGenerator(settings.generator)
    await gen.start()
    try:
        assert gen.model_name == "smollm2-135m-instruct"  # discovered from /v1/models
        svc = JudgeService(gen, PromptBuilder(TemplateName.GENERIC), settings)
        result = await svc.judge(JudgeRequest(QUERY, RESPONSES, k=4, seed=5))
        again = await svc.judge(JudgeRequest(QUERY, RESPONSES, k=4, seed=5))
    finally:
        await gen.close()
    assert result.valid == 4  # structured_outputs.regex reached the server through extra_body
    assert result.usage.engine_calls == 2 and result.usage.completion_tokens > 0
    assert all(s.scores is not None and len(s.scores) == 2 for s in result.samples)
    assert [s.text for s in result.samples] == [s.text for s in again.samples]  # seeds honoured remotely


async def test_unreachable_openai_backend_is_a_clear_503() -> None:
    settings = openai_settings(f"http://127.0.0.1:{free_port()}/v1")
    gen = OpenAIGenerator(settings.generator)
    await gen.start()  # does not raise: the server may come up later
    with pytest.raises(BackendUnavailableError) as info:
        await gen.check_ready()
    assert "not reachable" in info.value.message and info.value.status == 503
    with pytest.raises(BackendUnavailableError):
        await JudgeService(gen, PromptBuilder(TemplateName.GENERIC), settings).judge(
            JudgeRequest(QUERY, RESPONSES, k=1)
        )
    await gen.close()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env or dict(os.environ),
    )


@pytest.mark.remote
def test_cli_score_json_matches_the_score_body(remote_url: str) -> None:
    proc = run_cli(
        "score", "--query", "What is 2+2?", "-r", "4", "-r", "5", "--k", "4", "--seed", "3", "--max-tokens", "160",
        "--backend", "openai", "--base-url", remote_url, "--json", "--samples",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["object"] == "score" and body["k"] == 4 and body["seed"] == 3
    assert len(body["rewards"]) == 2 and body["best"] in (0, 1)
    assert body["valid"] == 4 and len(body["samples"]) == 4
    assert {"scores", "order", "meta_reward", "kept", "text", "principles", "critique", "error"} <= set(
        body["samples"][0]
    )


@pytest.mark.remote
def test_cli_score_table(remote_url: str) -> None:
    proc = run_cli(
        "score",
        "--query",
        "Hi",
        "-r",
        "Hello!",
        "--k",
        "2",
        "--max-tokens",
        "160",
        "--backend",
        "openai",
        "--base-url",
        remote_url,
    )
    assert proc.returncode == 0, proc.stderr
    assert "reward" in proc.stdout and "best: response 0" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--query", "q"], "Missing option '--response'"),
        (["--query", "", "-r", "a", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"], "query is empty"),
        (
            ["--query", "q", "-r", "a", "--k", "0", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"],
            "k must be in 1..64",
        ),
        (
            ["--query", "q", "-r", "a", "--k", "65", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"],
            "k must be in 1..64",
        ),
        (["--query", "q", "-r", "a", "--backend", "tgi"], "tgi"),
        (["--query", "q", "-r", "a", "--backend", "openai"], "base_url is required"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_problem(args: list[str], needle: str) -> None:
    proc = run_cli("score", *args)
    assert proc.returncode == 2
    assert needle in proc.stdout + proc.stderr


def test_cli_unreachable_backend_prints_the_error_body() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = run_cli("score", "--query", "q", "-r", "a", "--backend", "openai", "--base-url", url, "--json")
    assert proc.returncode == 1
    body = json.loads(proc.stdout)
    assert body["error"]["type"] == "backend_unavailable" and url in body["error"]["message"]


def reply(request: httpx2.Request) -> httpx2.Response:
    n = json.loads(request.content)["n"]
    choices = [
        {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": f"\\boxed{{{i + 1}}}"}}
        for i in range(n)
    ]
    return httpx2.Response(200, json={"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": choices})  # fmt: skip


RESET = httpx2.RemoteProtocolError("Server disconnected without sending a response.")


@pytest.mark.parametrize(
    ("faults", "seed", "error", "posts"),
    [
        ([RESET], 7, None, 2),  # a lost answer to a seeded call: asked again once
        ([RESET, RESET], 7, BackendUnavailableError, 2),  # and no more
        ([RESET], None, BackendUnavailableError, 1),  # unseeded: not idempotent, not sent again
        ([httpx2.ReadTimeout("slow")], 7, RequestTimeoutError, 1),  # the deadline is spent
        ([httpx2.Response(503, json={"error": {"message": "restarting"}})], 7, BackendUnavailableError, 1),
        ([httpx2.Response(500, json={"error": {"message": "boom"}})], 7, BackendError, 1),
        ([httpx2.Response(400, json={"error": {"message": "too long"}})], 7, InvalidRequestError, 1),
    ],
)
async def test_openai_backend_fault_table(
    faults: list[Exception | httpx2.Response], seed: int | None, error: type[Exception] | None, posts: int
) -> None:
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        if len(sent) <= len(faults):
            fault = faults[len(sent) - 1]
            if isinstance(fault, Exception):
                raise fault
            return fault
        return reply(request)

    settings = openai_settings("http://grm:8000/v1", **{"generator.model": "m"})
    client = openai.DefaultAsyncHttpxClient(transport=httpx2.MockTransport(handler))  # the openai SDK's own httpx
    gen = OpenAIGenerator(settings.generator, http_client=client)
    sampling = SamplingConfig(2, 1.0, 64, seed, None)
    try:
        if error is None:
            out = await gen.generate("judge", sampling, "r1")
            assert out.texts == ("\\boxed{1}", "\\boxed{2}") and gen.retried == 1
        else:
            with pytest.raises(error) as info:
                await gen.generate("judge", sampling, "r1")
            assert type(info.value) is error
    finally:
        await gen.close()
    assert len(sent) == posts
    assert {json.loads(r.content)["seed"] for r in sent} == {seed}  # the retry is the same call


def refusal(status: int, message: str, param: str | None = None) -> httpx2.Response:
    return httpx2.Response(
        status, json={"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    )


PYDANTIC_422 = httpx2.Response(
    422, json={"detail": [{"loc": ["body", "continue_final_message"], "msg": "Extra inputs are not permitted"}]}
)


@pytest.mark.parametrize(
    ("refused", "unsupported", "param"),
    [
        (refusal(400, "unknown field", "continue_final_message"), True, None),
        (refusal(400, "not supported here", "add_generation_prompt"), True, None),
        (PYDANTIC_422, True, None),  # a FastAPI server refusing the extra field
        # the message names the field but the param does not: not a refusal of continuations
        (refusal(400, "continue_final_message and add_generation_prompt cannot both be true"), False, None),
        (refusal(400, "this model's maximum context length is 2048 tokens", "messages"), False, "messages"),
        (refusal(400, "max_tokens too large", "max_tokens"), False, "max_tokens"),
    ],
)
async def test_continuation_refusals_are_told_by_status_and_param(
    refused: httpx2.Response, unsupported: bool, param: str | None
) -> None:
    """Whether a server cannot continue comes from the error's status and `param`, not its wording; any other
    refusal keeps the upstream's param and leaves continuations on for the next call."""
    sent: list[dict[str, object]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        sent.append(body)
        return refused if len(sent) == 1 else reply(request)

    settings = openai_settings("http://grm:8000/v1", **{"generator.model": "m"})
    client = openai.DefaultAsyncHttpxClient(transport=httpx2.MockTransport(handler))
    gen = OpenAIGenerator(settings.generator, http_client=client)
    sampling = SamplingConfig(1, 1.0, 16, 3, None)
    try:
        if unsupported:
            with pytest.raises(ContinuationUnsupportedError):
                await gen.continue_judgments("judge", [Partial("x")], sampling, "c1")
            with pytest.raises(ContinuationUnsupportedError):  # not asked again
                await gen.continue_judgments("judge", [Partial("x")], sampling, "c2")
            assert len(sent) == 1
        else:
            with pytest.raises(InvalidRequestError) as info:
                await gen.continue_judgments("judge", [Partial("x")], sampling, "c1")
            assert type(info.value) is InvalidRequestError and info.value.param == param
            out = await gen.continue_judgments("judge", [Partial("x")], sampling, "c2")  # still continues
            assert out.texts == ("\\boxed{1}",) and sent[-1]["continue_final_message"] is True
            assert len(sent) == 2
    finally:
        await gen.close()
