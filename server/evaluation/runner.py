"""Run an evaluation: judge each item (greedy + k_max samples), append its record to items.jsonl, resume.

Layout of an output folder: `run.json` (what the judgments depend on; a rerun must match it),
`items.jsonl` (one record per judged item, appended as each finishes), `results.json` and
`accuracy_vs_k.png` (rebuilt from the records at the end of every run). A rerun skips every item
already in items.jsonl, so an interrupted run loses at most the items that were in flight.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from server.core.types import JudgeRequest, JudgeResult
from server.evaluation.data import EvalItem
from server.evaluation.scorers import ScoreFailure, Scorer

RUN_FILE = "run.json"
ITEMS_FILE = "items.jsonl"


class EvalInterrupted(Exception):
    """The run stopped early (the server is down or overloaded); completed items are saved."""


class RunMismatch(Exception):
    """The output folder holds a run with different settings."""


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What each item's judgments depend on (kept in run.json, checked on resume)."""

    model: str
    k_max: int
    temperature: float
    max_tokens: int | None
    seed: int
    greedy: bool
    request_k_meta: int
    order_strategy: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_or_write_spec(out_dir: Path, spec: RunSpec) -> None:
    """Write run.json for a new run; for an existing one, refuse to mix in judgments made differently."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RUN_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in spec.to_json().items() if old.get(k) != v}
        if diff:
            details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
            raise RunMismatch(f"{out_dir} holds a run made with other settings ({details}); use another --out")
        return
    path.write_text(json.dumps(spec.to_json(), indent=2) + "\n", encoding="utf-8")


def load_records(path: Path) -> list[dict[str, Any]]:
    """Records of items.jsonl; a torn last line (the process died mid-write) is cut off."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
    records = []
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def judge_requests(item: EvalItem, spec: RunSpec) -> dict[str, JudgeRequest]:
    """The core requests of one item: `greedy` (k=1, temperature 0) and `sampled` (k_max samples)."""

    def request(k: int, temperature: float, k_meta: int) -> JudgeRequest:
        return JudgeRequest(
            messages=item.conversation(),
            responses=item.responses,
            k=k,
            k_meta=k_meta,
            temperature=temperature,
            max_tokens=spec.max_tokens,
            seed=item.seed,
        )

    requests = {"sampled": request(spec.k_max, spec.temperature, spec.request_k_meta)}
    if spec.greedy:
        requests["greedy"] = request(1, 0.0, 0)
    return requests


def _part(result: JudgeResult) -> dict[str, Any]:
    samples = [
        {
            "scores": list(s.scores) if s.scores is not None else None,
            "order": list(s.order),
            "meta_reward": s.meta_reward,
            "error": s.error,
            "finish_reason": s.finish_reason,
            "completed": s.completed,
        }
        for s in result.samples
    ]
    usage = {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens}
    return {"k": result.k, "k_meta": result.k_meta, "valid": result.valid, "samples": samples, "usage": usage}


async def judge_item(item: EvalItem, scorer: Scorer, spec: RunSpec) -> dict[str, Any]:
    """One item's record; a recorded failure is kept in the record, any other failure raises."""
    started = time.perf_counter()
    requests = judge_requests(item, spec)
    names = sorted(requests)
    outcomes = await asyncio.gather(*(scorer.score(requests[name]) for name in names), return_exceptions=True)
    record: dict[str, Any] = {
        "key": item.key,
        "file": item.file,
        "id": item.id,
        "source": item.source,
        "category": item.category,
        "n": len(item.responses),
        "label": None if item.official_only else item.label,
        "perm": list(item.perm),
        "seed": item.seed,
    }
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "engine_calls": 0}
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, ScoreFailure) and outcome.recorded:
            record[name] = {"error": outcome.to_json()}
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            record[name] = _part(outcome)
            for key in usage:
                usage[key] += int(getattr(outcome.usage, key))
    record["usage"] = usage
    record["elapsed_s"] = round(time.perf_counter() - started, 3)
    return record


async def run_items(
    items: Sequence[EvalItem],
    scorer: Scorer,
    spec: RunSpec,
    out_dir: Path,
    *,
    concurrency: int = 4,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Judge the items not yet in out_dir/items.jsonl, `concurrency` at a time; return all records."""
    check_or_write_spec(out_dir, spec)
    path = out_dir / ITEMS_FILE
    records = load_records(path)
    done = {r["key"] for r in records}
    todo = [item for item in items if item.key not in done]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="eval", unit="item", disable=not progress)
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def one(item: EvalItem) -> dict[str, Any]:
        async with semaphore:
            return await judge_item(item, scorer, spec)

    tasks = [asyncio.create_task(one(item)) for item in todo]
    try:
        with path.open("a", encoding="utf-8") as fh:
            for next_done in asyncio.as_completed(tasks):
                try:
                    record = await next_done
                except (ScoreFailure, httpx.HTTPError, OSError) as exc:
                    raise EvalInterrupted(f"{type(exc).__name__}: {exc}") from exc
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                records.append(record)
                bar.update(1)
                if on_record is not None:
                    on_record(record)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        bar.close()
    return records
