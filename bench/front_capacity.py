"""Front capacity: what one reward-server process handles when the engines are elsewhere, per CPU core.

`python -m bench.front_capacity [--out bench/results/front_capacity.json]`. The real app behind uvicorn in a
subprocess, with the instant engine of bench/pipeline.py (it answers at once with well-formed judgments), so all
the CPU measured is the front's own: HTTP, parsing, joining, prompts, parse, vote. The load is the raw trainers'
shape: one `/get_reward` call per rollout (OpenRLHF's body), G rollouts of each of P prompts sent at once, so the
server joins each prompt's rollouts into one judgment of k samples. Server CPU seconds (from /proc) give rollout
calls and judgments per core-second: the numbers to size the front tier of docs/deploy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS_DIR, SAMPLE_PAIRS, Server, cpu_seconds, free_port, machine, python, table, write_json
from bench.pipeline import responses


def wave_bodies(wave: int, prompts: int, rollouts: int) -> list[dict[str, Any]]:
    """One call per rollout: P distinct prompts (new ones every wave, as a trainer's steps) x G rollouts each."""
    bodies = []
    for p in range(prompts):
        prompt = f"{SAMPLE_PAIRS[p % len(SAMPLE_PAIRS)][0]} (prompt {wave}.{p})\n"
        bodies += [{"query": [prompt + r], "prompts": [prompt]} for r in responses(rollouts)]
    return bodies


async def drive(server: Server, k: int, prompts: int, rollouts: int, waves: int) -> dict[str, Any]:
    calls = prompts * rollouts
    limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        joined: list[float] = []

        async def one(body: dict[str, Any]) -> None:
            r = await client.post("/get_reward", json={**body, "k": k})
            r.raise_for_status()
            joined.append(r.json()["extra_logs"]["valid"][0])

        async def wave(w: int) -> None:
            await asyncio.gather(*(one(b) for b in wave_bodies(w, prompts, rollouts)))

        await wave(-1)  # warm-up: connections, caches
        joined.clear()
        groups0 = joint_judgments(server)
        cpu0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()
        for w in range(waves):
            await wave(w)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(server.proc.pid) - cpu0
    groups = joint_judgments(server) - groups0
    rollout_calls = waves * calls
    return {"k": k, "prompts": prompts, "rollouts": rollouts, "waves": waves, "rollout_calls": rollout_calls,
            "valid_fraction": sum(joined) / len(joined), "joint_judgments": groups,
            "mean_group": rollout_calls / groups, "wall_s": wall, "cpu_s": cpu, "calls_per_s": rollout_calls / wall,
            "calls_per_cpu_s": rollout_calls / cpu, "judgments_per_cpu_s": groups * k / cpu}  # fmt: skip


def joint_judgments(server: Server) -> float:
    """Joint judgments the server has made so far: the count of its grm_reward_join_size histogram."""
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("grm_reward_join_size_count")
    )


def serve(port: int) -> None:
    """The real app with the instant engine, behind uvicorn (run in a subprocess by `main`)."""
    import uvicorn

    from bench.pipeline import InstantGenerator
    from server.core.settings import Settings
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
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "front_capacity.json")
    parser.add_argument("--waves", type=int, default=10, help="rounds of P x G calls per configuration")
    parser.add_argument(
        "--join-window-s", type=float, help="GRM_REWARDS__JOIN_WINDOW_S of the server (its default if unset)"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    info = machine()
    configs = [(8, 8, 8), (8, 4, 16), (32, 8, 8)]  # (k, prompts, rollouts per prompt)
    port = free_port()
    env = {"PYTHONPATH": os.getcwd()}
    if args.join_window_s is not None:
        env["GRM_REWARDS__JOIN_WINDOW_S"] = str(args.join_window_s)
    server = Server("front-app", [python(), "-m", "bench.front_capacity", "--serve", str(port)], port, env=env)
    rows = []
    try:
        server.wait()
        for k, p, g in configs:
            rows.append(asyncio.run(drive(server, k, p, g, args.waves)))
    finally:
        server.stop()
    headers = ["k", "P", "G", "calls", "mean group", "valid", "wall s", "calls/s", "calls/CPU-s", "judgments/CPU-s"]
    print(table(headers, [[r["k"], r["prompts"], r["rollouts"], r["rollout_calls"], r["mean_group"],
                           r["valid_fraction"], r["wall_s"], round(r["calls_per_s"]), round(r["calls_per_cpu_s"]),
                           round(r["judgments_per_cpu_s"])] for r in rows]))  # fmt: skip
    print("one /get_reward call per rollout, joined per prompt; CPU-s: the server process's CPU seconds")
    settings = {"join_window_s": args.join_window_s}
    path = write_json(args.out, {"bench": "front_capacity", "machine": info, "server": settings, "rows": rows})
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
