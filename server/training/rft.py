"""Rejection fine-tuning data: k judgments per labelled item through the server's own judging path, each labelled
by the SPCT rule; an item with no correct judgment is sampled again with the answer hinted in the prompt."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.core.errors import InvalidRequestError, NoValidJudgmentError, RequestTimeoutError
from server.core.judging import JudgeService
from server.core.prompts import Message, PromptBuilder, TemplateName
from server.core.types import JudgeRequest, JudgeResult
from server.evaluation.data import EvalItem
from server.training.reward import hint_text, judgment_correct
from server.training.rft_output import build_stats, select_rows, write_outputs
from voting import derive_seed

logger = logging.getLogger(__name__)

RECORDS = "items.jsonl"
"""One line per judged item (every sample, labelled): what a rerun resumes from and the outputs are built from."""


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    k: int = 4
    temperature: float | None = None
    max_tokens: int | None = None
    concurrency: int = 4
    hint: bool = True


class HintedPromptBuilder(PromptBuilder):
    """The serving template with `The best response is: Response j` after it, j where the labelled best
    response is shown in that prompt's order (an item's texts are distinct: the shared rules skip repeats)."""

    def __init__(self, template: TemplateName, best: str) -> None:
        super().__init__(template)
        self.best = best

    def build(self, messages: Sequence[Message], responses_in_order: Sequence[str]) -> str:
        return (
            f"{super().build(messages, responses_in_order)}\n{hint_text(list(responses_in_order).index(self.best))}\n"
        )


def _samples(item: EvalItem, result: JudgeResult, prompts: PromptBuilder, *, hinted: bool) -> list[dict[str, Any]]:
    """Every sample, labelled, with the *unhinted* serving prompt of its order (the training prompt)."""
    conversation = item.conversation()
    out = []
    for s in result.samples:
        out.append(
            {
                "order": list(s.order),
                "prompt": prompts.build(conversation, [item.responses[i] for i in s.order]),
                "text": s.text,
                "correct": judgment_correct(s.text, s.order, item.label),
                "parsed": s.scores is not None,
                "hinted": hinted,
                "finish_reason": s.finish_reason,
                "completed": s.completed,
            }
        )
    return out


async def judge_item(service: JudgeService, item: EvalItem, options: SamplingOptions) -> dict[str, Any] | None:
    """One item's record: k labelled judgments, and k hinted ones when none was correct (n >= 2); None when the
    item ran past the request deadline (`limits.request_timeout_s`): it is not recorded, so a rerun judges it."""
    started = time.monotonic()
    record: dict[str, Any] = {"key": item.key, "n": len(item.responses), "label": item.label, "error": None}
    usage = [0, 0]

    async def sample(svc: JudgeService, seed: int, tag: str) -> JudgeResult:
        request = JudgeRequest(
            item.conversation(), item.responses, k=options.k, k_meta=0, temperature=options.temperature,
            max_tokens=options.max_tokens, seed=seed, request_id=f"rft-{tag}-{seed}",
        )  # fmt: skip
        result = await svc.judge(request)
        usage[0] += result.usage.prompt_tokens
        usage[1] += result.usage.completion_tokens
        return result

    try:
        result = await sample(service, item.seed, "plain")
        samples = _samples(item, result, service.prompts, hinted=False)
        record["pass_rate"] = sum(s["correct"] for s in samples) / len(samples)
        if options.hint and record["pass_rate"] == 0 and len(item.responses) >= 2:
            hinted = JudgeService(
                service.generator,
                HintedPromptBuilder(service.prompts.template, item.responses[item.label]),
                service.settings,
            )
            result = await sample(hinted, derive_seed(item.seed, "hint"), "hint")
            samples += _samples(item, result, service.prompts, hinted=True)
        record["samples"] = samples
    except RequestTimeoutError as exc:
        logger.warning("item %s not finished: %s (a rerun judges it again)", item.key, exc.message)
        return None
    except (InvalidRequestError, NoValidJudgmentError) as exc:  # this item cannot be judged; engine failures propagate
        logger.warning("item %s skipped: %s: %s", item.key, exc.type, exc.message)
        record.update(error=exc.type, message=exc.message, samples=[])
    record.update(prompt_tokens=usage[0], completion_tokens=usage[1], time_s=round(time.monotonic() - started, 3))
    return record


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """The records a previous run of this folder finished (a line cut by a crash is ignored)."""
    path = out / RECORDS
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[record["key"]] = record
    return done


async def sample_items(
    service: JudgeService | None,
    items: Sequence[EvalItem],
    out: Path,
    options: SamplingOptions,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Judge the items `out` has no record of yet, appending each record as it finishes; the records of the
    chosen items (an item past its deadline has none). An item the judge refuses (too long, no parseable judgment) is recorded with its error and not retried by a rerun."""
    done = read_records(out)
    todo = [item for item in items if item.key not in done]
    if todo and service is None:
        raise ValueError(f"{len(todo)} items are not judged yet and no judging service was given")
    gate = asyncio.Semaphore(max(1, options.concurrency))
    unfinished: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    with (out / RECORDS).open("a", encoding="utf-8") as fh:

        async def one(item: EvalItem) -> None:
            assert service is not None
            async with gate:
                record = await judge_item(service, item, options)
            if record is None:
                unfinished.append(item.key)
                return
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            done[item.key] = record
            if on_done is not None:
                on_done(record)

        await asyncio.gather(*(one(item) for item in todo))
    return {item.key: done[item.key] for item in items if item.key in done}


async def run_rft(
    service: JudgeService | None,
    items: Sequence[EvalItem],
    out: Path,
    options: SamplingOptions,
    *,
    hint_share: float,
    balance: bool = False,
    skipped: Counter[str] | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Sample what `out` lacks (`service` may be None when nothing is), then (re)write rft.jsonl and stats.json
    from every record; the stats."""
    started = time.monotonic()
    records = list((await sample_items(service, items, out, options, on_done)).values())
    wall = time.monotonic() - started
    selection = select_rows(records, hint_share, balance=balance)
    stats = build_stats(records, selection, skipped or Counter(), hint_share)
    stats["balance_positions"] = balance
    stats["wall_s_this_run"] = round(wall, 1)  # a resumed run counts only what it judged
    stats["items"]["unfinished"] = len(items) - len(records)
    write_outputs(out, selection, stats)
    return stats
