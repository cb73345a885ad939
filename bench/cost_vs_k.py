"""Judging cost as k grows: distinct-order grouping (rotate) against one prompt per sample (docs/design.md).

`python -m bench.cost_vs_k [--out bench/results/cost_vs_k.json]`. For k = 1..32 and n responses, sends one
request's engine calls to a real vLLM OpenAI-compatible server through our own `openai` generator:
- `rotate` (the server's default): min(k, n) prompts, each once with n = its share of k;
- `shuffle` (the paper's independent shuffles, identical orders grouped): up to min(k, n!) prompts;
- `naive`: k calls with n = 1, each with its own shuffled order (one prompt per sample).
Reports engine calls, prompt tokens sent, and from the engine's own counters (vLLM /metrics, deltas around
each measurement; every sample of an n > 1 call counted) the prompt tokens it computed vs served from its
prefix cache, completion tokens and wall time. Each measurement uses a fresh query (its conversation and
responses start uncached), the template's instructions are warm throughout, and the strategies take turns
within each k. Nothing else may use the vLLM server meanwhile (the counters are server-wide).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS_DIR, machine, median, start_vllm, table, write_json
from server.core.embedded import EMBEDDED_NAME, prepare_embedded_model
from server.core.generators.base import Generation, SamplingConfig
from server.core.generators.openai_remote import OpenAIGenerator
from server.core.prompts import Message, PromptBuilder, TemplateName, resolve_template
from server.core.settings import Settings
from voting import plan_orders
from voting.orders import OrderStrategy, ShownOrder

QUERY = "Explain in two sentences why the sky looks blue during the day but red at sunset."
RESPONSES = (
    "Sunlight scatters off air molecules, and shorter blue wavelengths scatter much more (Rayleigh scattering), "
    "so blue light reaches our eyes from every direction. At sunset light crosses far more air, the blue is "
    "scattered away, and the remaining reds and oranges dominate.",
    "The sky is blue because it reflects the ocean. At sunset the sun is closer to the earth, so it looks red.",
    "Blue light is scattered by the atmosphere more than red light. When the sun is low its light travels a "
    "longer path, so mostly red light is left.",
    "Because of the ozone layer, which is blue. Sunsets are red because the sun cools down in the evening.",
)


def plan(strategy: str, n: int, k: int, seed: int) -> list[ShownOrder]:
    if strategy == "naive":
        rng = random.Random(seed)
        orders = []
        for _ in range(k):
            perm = list(range(n))
            rng.shuffle(perm)
            orders.append(ShownOrder(tuple(perm), 1))
        return orders
    return list(plan_orders(n, k, seed, OrderStrategy(strategy)))


_COUNTERS = {
    'vllm:prompt_tokens_by_source_total{source="local_compute"}': "computed_tokens",
    'vllm:prompt_tokens_by_source_total{source="local_cache_hit"}': "cache_hit_tokens",
    "vllm:prompt_tokens_total": "engine_prompt_tokens",
    "vllm:generation_tokens_total": "engine_generation_tokens",
}


async def engine_counters(client: httpx.AsyncClient) -> dict[str, float]:
    """The vLLM server's token counters (Prometheus text; labels other than `source` dropped)."""
    text = (await client.get("/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        source = re.search(r'source="([^"]+)"', name)
        key = name.split("{")[0] + (f'{{source="{source.group(1)}"}}' if source else "")
        if key in _COUNTERS:
            out[_COUNTERS[key]] = out.get(_COUNTERS[key], 0.0) + float(value)
    return out


_RUN = random.Random().randrange(10**9)  # salts the queries: a rerun against the same server starts uncached too


async def one(
    gen: OpenAIGenerator,
    metrics: httpx.AsyncClient,
    builder: PromptBuilder,
    strategy: str,
    n: int,
    k: int,
    nonce: int,
    max_tokens: int,
) -> dict[str, Any]:
    groups = plan(strategy, n, k, seed=nonce)
    query = (Message("user", f"[case {_RUN}-{nonce}] {QUERY}"),)
    regex = builder.score_regex(n, max_tokens)
    prompts = [builder.build(query, [RESPONSES[i] for i in g.order]) for g in groups]
    before = await engine_counters(metrics)
    t0 = time.perf_counter()
    gens: list[Generation] = await asyncio.gather(
        *(
            gen.generate(p, SamplingConfig(g.count, 0.5, max_tokens, nonce + j, regex), f"cost-{nonce}-{j}")
            for j, (g, p) in enumerate(zip(groups, prompts, strict=True))
        )
    )
    wall = time.perf_counter() - t0
    after = await engine_counters(metrics)
    engine = {key: round(after.get(key, 0.0) - before.get(key, 0.0)) for key in _COUNTERS.values()}
    return {"strategy": strategy, "k": k, "n": n, "engine_calls": len(groups), "distinct_prompts": len(set(prompts)),
            "prompt_tokens": sum(g.prompt_tokens for g in gens), "completion_tokens": sum(g.completion_tokens for g in gens),
            **engine, "wall_s": wall}  # fmt: skip


async def run(args: argparse.Namespace, base_url: str) -> list[dict[str, Any]]:
    settings = Settings().with_overrides(
        {"generator.backend": "openai", "generator.base_url": base_url, "generator.model": args.model}
    )
    gen = OpenAIGenerator(settings.generator)
    await gen.start()
    builder = PromptBuilder(resolve_template(TemplateName.AUTO, args.model))
    metrics = httpx.AsyncClient(base_url=base_url.removesuffix("/v1"), timeout=30)
    await one(gen, metrics, builder, "rotate", args.n, 2, 1, args.max_tokens)  # warm-up: the template's prefix
    nonce, rows = 100, []
    for k in args.ks:
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.strategies}
        for rep in range(args.reps):
            turn = args.strategies[rep % len(args.strategies) :] + args.strategies[: rep % len(args.strategies)]
            for strategy in turn:
                nonce += 1
                runs[strategy].append(await one(gen, metrics, builder, strategy, args.n, k, nonce, args.max_tokens))
        for strategy, measured in runs.items():
            row: dict[str, Any] = {"strategy": strategy, "k": k, "n": args.n}
            for key in (
                "engine_calls",
                "distinct_prompts",
                "prompt_tokens",
                "completion_tokens",
                *_COUNTERS.values(),
                "wall_s",
            ):
                value = median([m[key] for m in measured])
                row[key] = value if key == "wall_s" else round(value)
            row["wall_s_all"] = [round(m["wall_s"], 3) for m in measured]
            rows.append(row)
        print(f"k={k} done", file=sys.stderr)
    await gen.close()
    await metrics.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "cost_vs_k.json")
    parser.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--n", type=int, default=4, choices=range(1, 5), help="responses per request")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=64,
        help="decoding is the same work for every strategy; small keeps prefill visible",
    )
    parser.add_argument("--strategies", type=lambda s: s.split(","), default=["rotate", "shuffle", "naive"])
    parser.add_argument(
        "--vllm-url", help="use this running vLLM server (e.g. a GPU one) instead of starting the embedded CPU model"
    )
    parser.add_argument("--model", default=EMBEDDED_NAME, help="the model name that server serves (picks the template)")
    args = parser.parse_args()
    info = machine()
    vllm = None if args.vllm_url else start_vllm(prepare_embedded_model(Settings().cache_dir), EMBEDDED_NAME)
    try:
        if vllm is not None:
            vllm.wait(timeout_s=900)
        t0 = time.perf_counter()
        rows = asyncio.run(run(args, (args.vllm_url or (vllm.url if vllm else "")) + "/v1"))
        wall = time.perf_counter() - t0
    finally:
        if vllm is not None:
            vllm.stop()
    headers = [
        "strategy",
        "k",
        "engine calls",
        "prompt tok sent",
        "engine prompt tok",
        "computed",
        "cache hits",
        "completion tok",
        "wall s",
    ]
    print(table(headers, [[r["strategy"], r["k"], r["engine_calls"], r["prompt_tokens"], r["engine_prompt_tokens"], r["computed_tokens"],
                           r["cache_hit_tokens"], r["completion_tokens"], r["wall_s"]] for r in sorted(rows, key=lambda r: (r["strategy"], r["k"]))]))  # fmt: skip
    print(
        "prompt tok sent: per call as the API reports it (an n > 1 call counts its prompt once); engine columns: vLLM's counters, every sample"
    )
    print(f"medians of {args.reps} runs each; n = {args.n} responses, max_tokens = {args.max_tokens}")
    path = write_json(args.out, {"bench": "cost_vs_k", "machine": info, "n": args.n, "max_tokens": args.max_tokens, "reps": args.reps,
                                 "wall_s": wall, "rows": rows,
                                 "target": "cost grows with distinct prompts, not with k: at most min(k, n) prompts per request (docs/design.md)"})  # fmt: skip
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
