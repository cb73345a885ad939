"""Build Meta RM training data: sample k judgments per labelled item with the GRM and label each one."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from meta_rm.labels import is_correct
from meta_rm.records import JudgmentRecord
from server.core.errors import GRMError
from server.core.items import SKIP_TOO_LONG, prompt_turns, read_jsonl, skip_reason
from server.core.judging import JudgeService
from server.core.prompts import Message, render_conversation
from server.core.types import JudgeRequest, Sample
from voting import derive_seed

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreferenceItem:
    """One labelled item of the normalized dev format; `label` is the index of the best response."""

    id: str
    source: str
    messages: tuple[Message, ...]
    responses: tuple[str, ...]
    label: int

    @property
    def chars(self) -> int:
        return sum(len(m.content) for m in self.messages) + sum(map(len, self.responses))


@dataclass
class LoadReport:
    """What `load_preference_items` kept and why it skipped the rest."""

    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def parse_item(data: dict[str, object]) -> PreferenceItem | str:
    """The item, or the reason to skip it (`server.core.items.skip_reason`, the Meta RM data rules)."""
    reason = skip_reason(data)
    if reason is not None:
        return reason
    messages = tuple(Message(role, content) for role, content in prompt_turns(data["prompt"]))
    responses, label = cast(list[object], data["responses"]), cast(int, data["label"])
    return PreferenceItem(str(data["id"]), str(data.get("source", "")), messages, tuple(map(str, responses)), label)


def load_preference_items(
    paths: Iterable[Path], max_chars: int | None = None
) -> tuple[list[PreferenceItem], LoadReport]:
    """Read normalized JSONL files (a folder means its *.jsonl), skipping what cannot be labelled."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    report, items = LoadReport(), []
    for file in files:
        for raw in read_jsonl(file):
            parsed = parse_item(raw)
            if isinstance(parsed, str):
                report.skipped[parsed] += 1
            elif max_chars is not None and parsed.chars > max_chars:
                report.skipped[SKIP_TOO_LONG] += 1
            else:
                items.append(parsed)
    report.kept = len(items)
    return items, report


def select_items(
    items: Sequence[PreferenceItem], seed: int, offset: int = 0, limit: int | None = None
) -> list[PreferenceItem]:
    """A seeded shuffle of the items, then [offset : offset + limit]: disjoint slices of one shuffle
    (same seed) give disjoint training and held-apart sets."""
    shuffled = sorted(items, key=lambda it: it.id)
    random.Random(seed).shuffle(shuffled)
    end = None if limit is None else offset + limit
    return shuffled[offset:end]


def item_seed(seed: int, item_id: str) -> int:
    """The judging seed of one item: fixed by the run's seed and the item's id."""
    return derive_seed(seed, item_id)


def to_records(item: PreferenceItem, samples: Sequence[Sample], seed: int, model: str) -> list[JudgmentRecord]:
    """Label every sampled judgment of one item (unparseable = incorrect)."""
    conversation = render_conversation(item.messages)
    out = []
    for i, s in enumerate(samples):
        out.append(
            JudgmentRecord(
                item_id=item.id,
                source=item.source,
                conversation=conversation,
                responses=item.responses,
                label=item.label,
                order=s.order,
                text=s.text,
                scores=s.scores,
                correct=is_correct(s.scores, item.label),
                sample=i,
                seed=seed,
                model=model,
                error=s.error,
            )
        )
    return out


async def judge_items(
    service: JudgeService,
    items: Sequence[PreferenceItem],
    *,
    k: int,
    seed: int,
    max_tokens: int | None = None,
    temperature: float | None = None,
    concurrency: int = 4,
    on_done: Callable[[list[JudgmentRecord] | None], None] | None = None,
) -> tuple[list[JudgmentRecord], Counter[str]]:
    """Judge every item k times (plain voting, every sample returned) and label each judgment.
    Items the service refuses (too long, no valid judgment) are counted by error type and skipped."""
    gate = asyncio.Semaphore(concurrency)
    failures: Counter[str] = Counter()

    async def one(item: PreferenceItem) -> list[JudgmentRecord] | None:
        s = item_seed(seed, item.id)
        request = JudgeRequest(
            item.messages, item.responses, k=k, k_meta=0, temperature=temperature, max_tokens=max_tokens, seed=s
        )
        async with gate:
            try:
                result = await service.judge(request)
            except GRMError as exc:
                logger.warning("item %s skipped: %s: %s", item.id, exc.type, exc.message)
                failures[exc.type] += 1
                records = None
            else:
                records = to_records(item, result.samples, s, result.model)
        if on_done is not None:
            on_done(records)
        return records

    results = await asyncio.gather(*(one(item) for item in items))
    return [r for recs in results if recs is not None for r in recs], failures
