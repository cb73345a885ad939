"""Cost of per-sample reward traffic with and without joint judging (docs/integrations.md).

`python -m bench.joint_judging [--prompts 2 --rollouts 4 --k 2 --out bench/results/joint_judging.json]`.
Sends P prompts x G rollouts as one call per rollout, all at once (how OpenRLHF, verl, slime and AReaL call a
reward), through the server's core on the embedded engine (in-process vLLM CPU): `alone` judges each call by
itself (n = 1), `joint` goes through the Joiner the /get_reward and /reward routes use. Reports distinct
judgments, engine calls and prompt tokens per rollout (from the judgments' own usage) and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, SAMPLE_PAIRS, machine, table, write_json
from server.core.embedded import EMBEDDED_NAME, prepare_embedded_model
from server.core.engines import build_prompt_builder
from server.core.generators.vllm_local import VLLMGenerator, configure_cpu_environment
from server.core.grouping import Joiner
from server.core.judging import JudgeService
from server.core.prompts import Message
from server.core.settings import Settings
from server.core.types import JudgeRequest, JudgeResult


def traffic(prompts: int, rollouts: int, k: int, max_tokens: int) -> list[JudgeRequest]:
    """One request per rollout; rollouts of a prompt are its sample answers, cycled."""
    out = []
    for p in range(prompts):
        query, *answers = SAMPLE_PAIRS[p % len(SAMPLE_PAIRS)]
        for g in range(rollouts):
            out.append(
                JudgeRequest(
                    messages=(Message("user", query),),
                    responses=(f"{answers[g % len(answers)]}{' ' * (g // len(answers))}",),
                    k=k,
                    max_tokens=max_tokens,
                    seed=p,
                    request_id=f"p{p}-r{g}",
                )
            )
    return out


async def measure(mode: str, service: JudgeService, requests: list[JudgeRequest], cap: int) -> dict[str, Any]:
    joiner = Joiner(service, cap=cap, window_s=0.05, max_wait_s=0.5)
    judge = joiner.judge if mode == "joint" else service.judge
    start = time.perf_counter()
    results: list[JudgeResult] = list(await asyncio.gather(*(judge(r) for r in requests)))
    wall = time.perf_counter() - start
    distinct = {r.request_id: r for r in results}.values()  # a joint judgment is shared by its callers
    n = len(requests)
    return {
        "mode": mode,
        "rollouts": n,
        "judgments": len(distinct),
        "engine_calls_per_rollout": sum(r.usage.engine_calls for r in distinct) / n,
        "prompt_tokens_per_rollout": sum(r.usage.prompt_tokens for r in distinct) / n,
        "completion_tokens_per_rollout": sum(r.usage.completion_tokens for r in distinct) / n,
        "valid_fraction": sum(r.valid for r in distinct) / max(1, sum(r.k for r in distinct)),
        "wall_s": round(wall, 2),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = Settings().with_overrides({"generator.served_model_name": EMBEDDED_NAME})
    configure_cpu_environment(str(settings.cache_dir), 1)
    model = prepare_embedded_model(settings.cache_dir)
    gen = VLLMGenerator(settings.generator, str(model), str(settings.cache_dir))
    await gen.start()
    try:
        service = JudgeService(gen, build_prompt_builder(settings), settings)
        requests = traffic(args.prompts, args.rollouts, args.k, args.max_tokens)
        await service.judge(requests[0])  # warm the template's prefix and the score regex
        return [await measure(mode, service, requests, args.cap) for mode in ("alone", "joint")]
    finally:
        await gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "joint_judging.json")
    args = parser.parse_args()
    info = machine()
    rows = asyncio.run(run(args))
    headers = ["mode", "rollouts", "judgments", "engine_calls/rollout", "prompt_tokens/rollout", "wall_s"]
    keys = ["mode", "rollouts", "judgments", "engine_calls_per_rollout", "prompt_tokens_per_rollout", "wall_s"]
    print(table(headers, [[r[k] for k in keys] for r in rows]))
    print(
        f"{args.prompts} prompts x {args.rollouts} rollouts, one call each, k = {args.k}, max_tokens = {args.max_tokens}"
    )
    path = write_json(
        args.out,
        {"bench": "joint_judging", "machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
