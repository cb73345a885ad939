"""Joint judging of rollouts that finish at different times, through the real app (docs/integrations.md).

`python -m bench.join_spread [--prompts 6 --rollouts 4 --k 1 --max-tokens 192 --spread-s 1.5] [--scripted]`.
P prompts x G rollouts, one /get_reward call per rollout (as OpenRLHF, verl, slime and AReaL call a reward), sent
when each rollout "finishes": its completion time drawn from a lognormal (seeded; median `--spread-s`). The app
runs in-process (httpx.ASGITransport) on the embedded engine (vLLM CPU, tiny model), or `--scripted` on a scripted
engine for larger P. Modes: `window` (rewards.group_size unset), `setting` (rewards.group_size = G), `header`
(X-GRM-Group-Size: G per call). Reports the share of rollouts judged in full groups of G, engine calls and decode
tokens per rollout, and the added latency over a group's own spread (answer time - last arrival of its group).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS_DIR, SAMPLE_PAIRS, machine, percentile, table, write_json
from server.core.settings import Settings
from server.http.app import create_app
from tests.fakes import ScriptedGenerator, shown_responses

MODES = ("window", "setting", "header")


def arrivals(prompts: int, rollouts: int, spread_s: float, seed: int) -> list[list[float]]:
    """Per prompt, its rollouts' completion times (s): a lognormal around `spread_s`, prompts staggered."""
    rng = random.Random(seed)
    return [sorted(0.2 * p + rng.lognormvariate(0.0, 0.6) * spread_s for _ in range(rollouts)) for p in range(prompts)]


def build_generator(scripted: bool, settings: Settings) -> Any:
    if scripted:
        return ScriptedGenerator(delay_s=0.05)
    from meta_rm.vllm_common import configure_cpu_environment
    from server.core.embedded import prepare_embedded_model
    from server.core.generators.vllm_local import VLLMGenerator

    configure_cpu_environment(str(settings.cache_dir), 1)
    model = prepare_embedded_model(settings.cache_dir)
    return VLLMGenerator(settings.generator, str(model), str(settings.cache_dir))


class SharedEngine:
    """One engine for every mode's app: started once, closed by the bench, not by each app's lifespan."""

    def __init__(self, gen: Any) -> None:
        self._gen, self._started = gen, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gen, name)

    async def start(self) -> None:
        if not self._started:
            await self._gen.start()
            self._started = True

    async def close(self) -> None:  # each app's lifespan calls this; the bench closes the engine itself
        return None

    async def shutdown(self) -> None:
        if self._started:
            await self._gen.close()


def counted(gen: Any) -> list[tuple[str, int, float]]:
    """Record each engine call's prompt, decode tokens and start time (generate and continuations)."""
    calls: list[tuple[str, int, float]] = []
    for name in ("generate", "continue_judgments"):
        original = getattr(gen, name)

        async def wrapped(prompt: str, *rest: Any, _original: Any = original) -> Any:
            started = time.monotonic()
            out = await _original(prompt, *rest)
            calls.append((prompt, out.completion_tokens, started))
            return out

        setattr(gen, name, wrapped)
    return calls


def mode_settings(mode: str, args: argparse.Namespace) -> Settings:
    g = args.rollouts
    overrides: dict[str, Any] = {"meta_rm.backend": "none", "rewards.join_max_wait_s": args.max_wait_s}
    if not args.scripted:
        from server.core.embedded import EMBEDDED_NAME

        overrides["generator.served_model_name"] = EMBEDDED_NAME
    if mode == "setting":
        overrides["rewards.group_size"] = g
    return Settings().with_overrides(overrides)


async def measure(
    mode: str,
    args: argparse.Namespace,
    times: list[list[float]],
    gen: SharedEngine,
    calls: list[tuple[str, int, float]],
) -> dict[str, Any]:
    g = args.rollouts
    app = create_app(mode_settings(mode, args), generator=gen)
    headers = {"X-GRM-Group-Size": str(g)} if mode == "header" else {}
    prompts = [
        (f"{SAMPLE_PAIRS[p % len(SAMPLE_PAIRS)][0]} (#{p})", SAMPLE_PAIRS[p % len(SAMPLE_PAIRS)][1:])
        for p in range(args.prompts)
    ]
    answered: dict[tuple[int, int], float] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600) as client,
    ):
        warm = {"query": ["Say hi. Hi."], "prompts": ["Say hi. "], "k": args.k, "max_tokens": args.max_tokens}
        await client.post("/get_reward", json=warm)
        calls.clear()
        start = time.monotonic()

        async def one(p: int, r: int) -> None:
            await asyncio.sleep(times[p][r])
            query, answers = prompts[p]
            text = f"{answers[r % len(answers)]} (v{r})"
            body = {"query": [query + " " + text], "prompts": [query + " "], "k": args.k, "max_tokens": args.max_tokens}
            resp = await client.post("/get_reward", json=body, headers=headers)
            assert resp.status_code == 200, resp.text
            answered[p, r] = time.monotonic() - start

        await asyncio.gather(*(one(p, r) for p in range(args.prompts) for r in range(g)))
    n = args.prompts * g
    full = 0
    for query, _ in prompts:
        sizes = [len(shown_responses(prompt)) for prompt, _, _ in calls if query in prompt]
        full += g if sizes and max(sizes) >= g else 0  # distinct texts: a full judgment holds all G
    added = [answered[p, r] - times[p][-1] for p in range(args.prompts) for r in range(g)]
    # what joining itself adds: the last rollout's judgment starts this long after that rollout was sent
    # (engine time excluded; the target is one join window)
    delays = []
    for p, (query, _) in enumerate(prompts):
        last = start + times[p][-1]
        starts = [t for prompt, _, t in calls if query in prompt and t >= last]
        if starts:
            delays.append(min(starts) - last)
    window = Settings().rewards.join_window_s
    return {
        "mode": mode,
        "rollouts": n,
        "full_group_share": full / n,
        "engine_calls_per_rollout": len(calls) / n,
        "decode_tokens_per_rollout": sum(t for _, t, _ in calls) / n,
        "added_p50_s": round(percentile(added, 0.5), 3),
        "added_p99_s": round(percentile(added, 0.99), 3),
        "group_spread_p50_s": round(percentile([t[-1] - t[0] for t in times], 0.5), 3),
        "join_delay_p50_s": round(percentile(delays, 0.5), 3) if delays else None,
        "join_delay_p99_s": round(percentile(delays, 0.99), 3) if delays else None,
        "join_delay_target_holds": bool(delays) and percentile(delays, 0.99) < window,
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    times = arrivals(args.prompts, args.rollouts, args.spread_s, args.seed)
    gen = SharedEngine(build_generator(args.scripted, mode_settings("window", args)))
    calls = counted(gen._gen)
    try:
        return [await measure(mode, args, times, gen, calls) for mode in MODES]
    finally:
        await gen.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--spread-s", type=float, default=1.5, help="median completion time of a rollout")
    parser.add_argument("--max-wait-s", type=float, default=30.0, help="rewards.join_max_wait_s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scripted", action="store_true", help="a scripted engine (0.05 s a call) for larger P")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    info = machine()
    rows = asyncio.run(run(args))
    for row in rows:  # added latency includes the engine time; the latency target is on the join delay
        row["full_group_target_holds"] = row["full_group_share"] >= 0.95
    keys = [
        "mode",
        "rollouts",
        "full_group_share",
        "engine_calls_per_rollout",
        "decode_tokens_per_rollout",
        "added_p50_s",
        "added_p99_s",
        "group_spread_p50_s",
        "join_delay_p50_s",
        "join_delay_p99_s",
    ]
    print(table(keys, [[r[k] for k in keys] for r in rows]))
    engine = "scripted" if args.scripted else "embedded"
    out = args.out or RESULTS_DIR / f"join_spread{'_scripted' if args.scripted else ''}.json"
    payload = {
        "bench": "join_spread",
        "engine": engine,
        "machine": info,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
    }
    print(f"wrote {write_json(out, payload)}")


if __name__ == "__main__":
    main()
