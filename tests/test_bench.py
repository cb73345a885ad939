"""The bench scripts' own logic, cheaply: the direct path sends what the server sends; the pipeline runs."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import httpx
import openai

from bench.common import table
from bench.cost_vs_k import plan
from bench.overhead import Paths, request_of
from bench.pipeline import InstantGenerator, core
from server.core.generators.base import SamplingConfig
from server.core.judging import JudgeService
from server.core.prompts import Message, PromptBuilder, TemplateName
from server.core.settings import Settings
from server.core.types import JudgeRequest
from tests.fakes import ScriptedGenerator


def fake_engine(seen: list[dict[str, Any]]) -> openai.AsyncOpenAI:
    """An OpenAI client whose server (httpx.MockTransport) records each chat completion request."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        choices = [
            {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": "x"}}
            for i in range(body["n"])
        ]
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                                         "choices": choices, "usage": {"prompt_tokens": 10, "completion_tokens": 3 * body["n"], "total_tokens": 0}})  # fmt: skip

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return openai.AsyncOpenAI(base_url="http://engine/v1", api_key="x", http_client=client, max_retries=0)  # type: ignore[arg-type]  # openai types its own httpx alias


async def test_direct_path_sends_exactly_the_engine_calls_of_the_server() -> None:
    for k in (1, 8, 32):
        body = request_of(3, k, 112)
        scripted = ScriptedGenerator()
        svc = JudgeService(scripted, PromptBuilder(TemplateName.GENERIC), Settings())
        await svc.judge(JudgeRequest((Message("user", body["query"]),), tuple(body["responses"]), k=k, seed=body["seed"],
                                     max_tokens=body["max_tokens"], temperature=body["temperature"]))  # fmt: skip
        seen: list[dict[str, Any]] = []
        engine = fake_engine(seen)
        tokens = await Paths(None, engine, PromptBuilder(TemplateName.GENERIC), "m").direct(body)  # type: ignore[arg-type]
        await engine.close()
        ours = Counter((c[0], c[1].n, c[1].seed, c[1].regex, c[1].temperature, c[1].max_tokens) for c in scripted.calls)
        direct = Counter(
            (
                b["messages"][0]["content"],
                b["n"],
                b["seed"],
                b["structured_outputs"]["regex"],
                b["temperature"],
                b["max_tokens"],
            )
            for b in seen
        )
        assert direct == ours and len(seen) == min(k, 2)
        assert tokens == 3 * k


def test_cost_strategies_plan_the_expected_engine_calls() -> None:
    for k in (1, 2, 4, 8, 16, 32):
        rotate, naive, shuffle = plan("rotate", 4, k, 1), plan("naive", 4, k, 1), plan("shuffle", 4, k, 1)
        assert len(rotate) == min(k, 4) and sum(g.count for g in rotate) == k
        assert len(naive) == k and all(g.count == 1 for g in naive)
        assert len(rotate) <= len(shuffle) <= k and sum(g.count for g in shuffle) == k


async def test_pipeline_core_with_the_instant_engine() -> None:
    gen = InstantGenerator()
    row = await core(8, 3, requests=40, concurrency=8)
    assert row["judgments_per_s"] > 0 and row["requests"] == 40
    out = await gen.generate(
        PromptBuilder(TemplateName.GENERIC).build([Message("user", "q")], ["a", "b", "c"]),
        SamplingConfig(4, 0.5, 128),
        "r",
    )
    assert len(out.texts) == 4 and all(t.count(",") >= 2 and "\\boxed{" in t for t in out.texts)


def test_table_format() -> None:
    text = table(["a", "bb"], [[1, 2.5], ["xyz", 0.1234]])
    assert text.splitlines() == ["  a     bb", "  1  2.500", "xyz  0.123"]


def test_sanitize_bench_measures_every_shape() -> None:
    from bench.sanitize import SHAPES, measure

    rows = measure([2_000, 16_000])
    assert [r["shape"] for r in rows] == list(SHAPES)
    for r in rows:
        assert r["largest_chars"] >= 15_000 and all(s > 0 for s in r["seconds_per_mb"].values())
        assert r["flat"] > 0


async def test_join_spread_bench_joins_by_group_size_on_the_scripted_engine() -> None:
    import argparse

    from bench.join_spread import run

    args = argparse.Namespace(
        prompts=4, rollouts=4, k=1, max_tokens=192, spread_s=0.4, max_wait_s=30.0, seed=0, scripted=True
    )
    rows = {r["mode"]: r for r in await run(args)}
    for mode in ("setting", "header"):
        assert rows[mode]["full_group_share"] == 1.0 and rows[mode]["engine_calls_per_rollout"] == 0.25
        assert rows[mode]["added_p99_s"] < 5  # judged when the 4th arrived, not at the 30 s max wait
    assert rows["window"]["engine_calls_per_rollout"] > rows["setting"]["engine_calls_per_rollout"]
