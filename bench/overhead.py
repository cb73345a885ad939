"""Server overhead: /score latency and throughput against direct calls to the same vLLM server (docs/design.md).

`python -m bench.overhead [--out bench/results/overhead.json]`. Starts a real vLLM OpenAI-compatible server
(`python -m vllm.entrypoints.openai.api_server`, the embedded SmolLM2-135M, eager) and a grm-server with
`--backend openai` pointing at it, so both paths hit the same engine. The direct path sends exactly the
requests our server sends: the same prompts (PromptBuilder + voting.plan_orders, same seed), the same n
per order, the same sampling seeds and score regex, one chat completion per distinct order, all
concurrent. Runs of the two paths are interleaved (ABBA) and both see the same prefixes, so drift and
prefix-cache warmth fall on both alike. Latency: requests one at a time; throughput: bursts of
`--concurrency` requests at once.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from bench.common import (
    RESULTS_DIR,
    SAMPLE_PAIRS,
    VLLM_FLAGS,
    Server,
    cpu_seconds,
    free_port,
    machine,
    median,
    python,
    start_vllm,
    table,
    write_json,
)
from server.core.embedded import EMBEDDED_NAME, prepare_embedded_model
from server.core.prompts import Message, PromptBuilder, TemplateName, resolve_template
from server.core.settings import Settings
from voting import (
    derive_seed,  # the server's per-order sampling seeds, reproduced exactly
    plan_orders,
)


def request_of(i: int, k: int, max_tokens: int) -> dict[str, Any]:
    query, a, b = SAMPLE_PAIRS[i % len(SAMPLE_PAIRS)]
    return {"query": query, "responses": [a, b], "k": k, "seed": 1000 + i, "max_tokens": max_tokens, "temperature": 0.5}


class Paths:
    """The two ways to get one request's k judgments: our /score, or the raw engine calls it makes."""

    def __init__(self, grm: httpx.AsyncClient, engine: openai.AsyncOpenAI, builder: PromptBuilder, model: str) -> None:
        self.grm, self.engine, self.builder, self.model = grm, engine, builder, model

    async def ours(self, body: dict[str, Any]) -> int:
        r = await self.grm.post("/score", json=body)
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    async def direct(self, body: dict[str, Any]) -> int:
        n, k, seed = len(body["responses"]), body["k"], body["seed"]
        groups = plan_orders(n, k, seed)
        regex = self.builder.score_regex(n, body["max_tokens"])
        query = (Message("user", body["query"]),)

        async def call(j: int) -> int:
            group = groups[j]
            prompt = self.builder.build(query, [body["responses"][i] for i in group.order])
            completion = await self.engine.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                n=group.count,
                temperature=body["temperature"],
                max_tokens=body["max_tokens"],
                seed=derive_seed(seed, 0, j),
                extra_body={"structured_outputs": {"regex": regex}},
            )
            return completion.usage.completion_tokens if completion.usage else 0

        return sum(await asyncio.gather(*(call(j) for j in range(len(groups)))))


async def burst(fn: Any, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Send all bodies at once; latency of each and the wall time of the whole burst."""

    async def timed(body: dict[str, Any]) -> tuple[float, int]:
        t0 = time.perf_counter()
        tokens = await fn(body)
        return time.perf_counter() - t0, tokens

    t0 = time.perf_counter()
    results = await asyncio.gather(*(timed(b) for b in bodies))
    return {
        "wall_s": time.perf_counter() - t0,
        "latencies": [r[0] for r in results],
        "tokens": sum(r[1] for r in results),
    }


async def measure(paths: Paths, k: int, concurrency: int, rounds: int, max_tokens: int, offset: int) -> dict[str, Any]:
    """ABBA-interleaved rounds; each round sends the same `concurrency` requests down one path then the other."""
    samples: dict[str, list[dict[str, Any]]] = {"ours": [], "direct": []}
    for r in range(rounds):
        bodies = [request_of(offset + r * concurrency + i, k, max_tokens) for i in range(concurrency)]
        order = ("ours", "direct") if r % 2 == 0 else ("direct", "ours")
        for name in order:
            samples[name].append(await burst(getattr(paths, name), bodies))
    out: dict[str, Any] = {"k": k, "concurrency": concurrency, "rounds": rounds, "requests_per_round": concurrency}
    for name, runs in samples.items():
        latencies = [x for run in runs for x in run["latencies"]]
        wall = sum(run["wall_s"] for run in runs)
        out[name] = {
            "latency_median_s": median(latencies),
            "latency_mean_s": sum(latencies) / len(latencies),
            "requests_per_s": len(latencies) / wall,
            "completion_tokens": sum(int(run["tokens"]) for run in runs),
            "walls_s": [round(run["wall_s"], 3) for run in runs],
        }
    out["latency_ratio"] = out["ours"]["latency_median_s"] / out["direct"]["latency_median_s"]
    out["throughput_ratio"] = out["ours"]["requests_per_s"] / out["direct"]["requests_per_s"]
    out["paired_wall_ratio"] = paired_ratio(out["ours"]["walls_s"], out["direct"]["walls_s"])
    return out


def paired_ratio(ours: list[float], direct: list[float]) -> float:
    """Geometric mean over rounds of ours/direct wall time, each round's two runs back to back: robust to
    load that drifts between rounds (at concurrency 1 a round's wall time is the request's latency)."""
    return math.exp(sum(math.log(a / b) for a, b in zip(ours, direct, strict=True)) / len(ours))


async def run(args: argparse.Namespace, vllm_url: str, grm_url: str) -> list[dict[str, Any]]:
    builder = PromptBuilder(resolve_template(TemplateName.AUTO, args.model))  # what grm-server picks for it
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=grm_url, timeout=900, limits=limits) as grm:
        engine = openai.AsyncOpenAI(base_url=vllm_url + "/v1", api_key="EMPTY", timeout=900, max_retries=0)
        paths = Paths(grm, engine, builder, args.model)
        await measure(paths, 2, 2, 2, args.max_tokens, 10_000)  # warm-up: both paths, the template's prefix
        rows, offset = [], 0
        for concurrency, rounds, ks in (
            (1, args.latency_rounds, args.ks),
            (args.concurrency, args.burst_rounds, args.burst_ks),
        ):
            for k in ks:
                row = await measure(paths, k, concurrency, rounds, args.max_tokens, offset)
                offset += 100
                rows.append(row)
                print(
                    f"k={k} c={concurrency}: latency x{row['latency_ratio']:.3f}, throughput x{row['throughput_ratio']:.3f}",
                    file=sys.stderr,
                )
        await engine.close()
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    headers = ["k", "conc", "rounds", "ours p50 s", "direct p50 s", "latency x", "ours req/s", "direct req/s", "throughput x",
               "paired x", "tokens ours/direct"]  # fmt: skip
    return table(headers, [[r["k"], r["concurrency"], r["rounds"], r["ours"]["latency_median_s"], r["direct"]["latency_median_s"], r["latency_ratio"],
                            r["ours"]["requests_per_s"], r["direct"]["requests_per_s"], r["throughput_ratio"], r["paired_wall_ratio"],
                            f"{r['ours']['completion_tokens']}/{r['direct']['completion_tokens']}"] for r in rows])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "overhead.json")
    parser.add_argument(
        "--ks", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32], help="k values of the latency runs"
    )
    parser.add_argument(
        "--burst-ks",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 8, 32],
        help="k values of the throughput runs",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--latency-rounds", type=int, default=4, help="one-at-a-time requests per path and k (paths alternate first)"
    )
    parser.add_argument("--burst-rounds", type=int, default=2, help="bursts per path and k (paths alternate first)")
    parser.add_argument(
        "--max-tokens", type=int, default=112, help="112 is the smallest budget /score allows for a pair"
    )
    parser.add_argument(
        "--vllm-url", help="use this running vLLM server (e.g. a GPU one) instead of starting the embedded CPU model"
    )
    parser.add_argument(
        "--model",
        default=EMBEDDED_NAME,
        help="the model name that server serves (picks the template, as grm-server does)",
    )
    args = parser.parse_args()
    info = machine()
    vllm = None if args.vllm_url else start_vllm(prepare_embedded_model(Settings().cache_dir), EMBEDDED_NAME)
    vllm_url = args.vllm_url or (vllm.url if vllm else "")
    grm = None
    try:
        if vllm is not None:
            vllm.wait(timeout_s=900)
        gport = free_port()
        grm = Server("grm", [python(), "-m", "server.cli", "serve", "--backend", "openai", "--base-url", f"{vllm_url}/v1",
                             "--model", args.model, "--port", str(gport), "--log-level", "warning"], gport,
                     env={"GRM_LIMITS__REQUEST_TIMEOUT_S": "3600", "GRM_GENERATOR__TIMEOUT_S": "3600"})  # fmt: skip
        grm.wait("/ready", timeout_s=300)
        grm_cpu0, t0 = cpu_seconds(grm.proc.pid), time.perf_counter()
        rows = asyncio.run(run(args, vllm_url, grm.url))
        grm_cpu, wall = cpu_seconds(grm.proc.pid) - grm_cpu0, time.perf_counter() - t0
    finally:
        if grm is not None:
            grm.stop()
        if vllm is not None:
            vllm.stop()
    print(format_rows(rows))
    print(f"grm-server process CPU: {grm_cpu:.1f} s over {wall:.0f} s of benchmark")
    path = write_json(args.out, {"bench": "overhead", "machine": info, "engine_flags": list(VLLM_FLAGS) if vllm else "external: " + vllm_url, "max_tokens": args.max_tokens,
                                 "grm_server_cpu_s": grm_cpu, "wall_s": wall, "rows": rows,
                                 "target": "latency and 32-concurrent throughput within 1.05x of direct engine calls at k=8 and 32 (docs/design.md)"})  # fmt: skip
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
