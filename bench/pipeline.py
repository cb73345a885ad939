"""Pipeline throughput with an instant engine: judgments/s through parse + select + vote, pure and over HTTP.

`python -m bench.pipeline [--out bench/results/pipeline.json]`. The engine answers at once with realistic
judgment texts, so everything measured is ours: the core (JudgeService: orders, prompts, parse, Meta RM
selection, vote) and the real app behind uvicorn in a subprocess, driven by httpx. CPU seconds of the
process doing the work give judgments per core-second (docs/design.md, "Performance targets": thousands
per second per core).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS_DIR, SAMPLE_PAIRS, Server, cpu_seconds, free_port, machine, python, table, write_json
from server.core.generators.base import ContinuationUnsupportedError, Generation, Partial, SamplingConfig
from server.core.judging import JudgeService
from server.core.prompts import Message, PromptBuilder, TemplateName
from server.core.settings import Settings
from server.core.types import JudgeRequest

CRITERIA = "Specific Criteria: Correctness (60%): the answer must be right. Helpfulness (25%): it addresses the question. Clarity (15%): short and direct."
ANALYSIS = "Analysis: " + " ".join(
    f"Response {i} is judged on correctness, helpfulness and clarity in turn." for i in range(1, 5)
)


class InstantGenerator:
    """A zero-latency engine returning well-formed judgments (~350 characters of text per judgment)."""

    model_name = "instant"
    chars_per_token: float | None = None
    restartable = False
    retried = 0

    async def start(self) -> None:
        return None

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        n = prompt.count("[The Begin of Response") - 2  # the generic template's worked example shows two
        texts = tuple(
            f"{CRITERIA}\n{ANALYSIS}\nScores: \\boxed{{{', '.join(str(1 + (i + j) % 10) for j in range(n))}}}"
            for i in range(sampling.n)
        )
        return Generation(texts, prompt_tokens=len(prompt) // 4, completion_tokens=sampling.n * 90)

    async def continue_judgments(
        self, prompt: str, partials: Sequence[Partial], sampling: SamplingConfig, request_id: str
    ) -> Generation:
        raise ContinuationUnsupportedError("every judgment here has its box")

    async def check_ready(self) -> None:
        return None

    async def close(self) -> None:
        return None


def responses(n: int) -> list[str]:
    pair = SAMPLE_PAIRS[0]
    return [pair[1 + i % 2] + f" (variant {i})" for i in range(n)]


async def core(k: int, n: int, requests: int, concurrency: int) -> dict[str, Any]:
    svc = JudgeService(InstantGenerator(), PromptBuilder(TemplateName.GENERIC), Settings())
    query = (Message("user", SAMPLE_PAIRS[0][0]),)
    texts = tuple(responses(n))
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await svc.judge(JudgeRequest(query, texts, k=k, seed=i))

    await asyncio.gather(*(one(i) for i in range(min(requests, 20))))  # warm-up
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"path": "core", "k": k, "n": n, "requests": requests, "concurrency": concurrency, "wall_s": wall, "cpu_s": cpu,
            "judgments_per_s": requests * k / wall, "judgments_per_cpu_s": requests * k / cpu}  # fmt: skip


async def http(server: Server, k: int, n: int, requests: int, concurrency: int) -> dict[str, Any]:
    body = {"query": SAMPLE_PAIRS[0][0], "responses": responses(n), "k": k}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                r = await client.post("/score", json={**body, "seed": i})
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(min(requests, 50))))  # warm-up: connections, caches
        server_cpu0, client_cpu0, t0 = cpu_seconds(server.proc.pid), time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - t0
        server_cpu = cpu_seconds(server.proc.pid) - server_cpu0
        client_cpu = time.process_time() - client_cpu0
    return {"path": "http", "k": k, "n": n, "requests": requests, "concurrency": concurrency, "wall_s": wall,
            "cpu_s": server_cpu, "client_cpu_s": client_cpu, "judgments_per_s": requests * k / wall,
            "judgments_per_cpu_s": requests * k / server_cpu, "requests_per_s": requests / wall}  # fmt: skip


def serve(port: int) -> None:
    """The real app with the instant engine, behind uvicorn (run in a subprocess by `main`)."""
    import uvicorn

    from server.http.app import create_app

    uvicorn.run(
        create_app(Settings(), generator=InstantGenerator()),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "pipeline.json")
    parser.add_argument("--requests", type=int, default=400, help="requests per configuration (k=32 uses a quarter)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    info = machine()
    configs = [(8, 2), (8, 4), (32, 2), (32, 4)]
    rows = []
    for k, n in configs:
        rows.append(asyncio.run(core(k, n, args.requests if k < 32 else args.requests // 4, args.concurrency)))
    port = free_port()
    server = Server(
        "pipeline-app", [python(), "-m", "bench.pipeline", "--serve", str(port)], port, env={"PYTHONPATH": os.getcwd()}
    )
    try:
        server.wait()
        for k, n in configs:
            rows.append(
                asyncio.run(http(server, k, n, args.requests if k < 32 else args.requests // 4, args.concurrency))
            )
    finally:
        server.stop()
    headers = ["path", "k", "n", "requests", "conc", "wall s", "judgments/s", "judgments/CPU-s", "req/s"]
    print(table(headers, [[r["path"], r["k"], r["n"], r["requests"], r["concurrency"], r["wall_s"], round(r["judgments_per_s"]),
                           round(r["judgments_per_cpu_s"]), round(r["requests"] / r["wall_s"], 1)] for r in rows]))  # fmt: skip
    print(
        "judgments/CPU-s: judgments per CPU-second of the process doing the work (core: this process; http: the server)"
    )
    path = write_json(
        args.out,
        {
            "bench": "pipeline",
            "machine": info,
            "rows": rows,
            "target": "thousands of judgments/s per core (docs/design.md)",
        },
    )
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
