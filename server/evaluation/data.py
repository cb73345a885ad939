"""Evaluation items (any published format, read by formats/): filtering, seeded selection and response order."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.core import items as shared_items
from server.core.prompts import Message
from server.evaluation.formats import load_benchmark
from server.evaluation.formats.registry import get
from voting import derive_seed


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One item as sent: `responses` already permuted, `label` indexes the permuted list.

    `perm[j]` is the index in the source file of the response sent at position j, so the source's
    label is `perm[label]`. Sets stored best-first would otherwise always show the best response first.
    `official_only`: a tie row of a benchmark whose official scorer counts ties (PandaLM): judged for that
    score and left out of every accuracy row; its record's label is null (`label` here is a placeholder 0).
    """

    key: str
    file: str
    id: str
    source: str
    category: str
    prompt: str | tuple[tuple[str, str], ...]
    responses: tuple[str, ...]
    label: int
    perm: tuple[int, ...]
    seed: int
    official_only: bool = False

    def conversation(self) -> tuple[Message, ...]:
        """The conversation as sent: a string prompt is one user turn (as `/score`'s `query`)."""
        if isinstance(self.prompt, str):
            return (Message("user", self.prompt),)
        return tuple(Message(role, content) for role, content in self.prompt)


@dataclass
class Selection:
    """The items chosen for a run and, per file and reason, how many were left out."""

    items: list[EvalItem] = field(default_factory=list)
    official_only: int = 0  # tie rows judged for their benchmark's official score only (no accuracy row)
    skipped: Counter[str] = field(default_factory=Counter)
    available: dict[str, int] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)


def skip_reason(raw: dict[str, Any], max_chars: int | None, *, scores_ties: bool = False) -> str | None:
    """Why a raw item cannot count towards accuracy, or None if it can (the shared rules, accuracy variant).
    With `scores_ties` (the file's benchmark scores ties) a tie row is kept when it is usable otherwise."""
    reason = shared_items.skip_reason(raw, max_chars, for_accuracy=True)
    if reason == shared_items.SKIP_TIE and scores_ties:
        return shared_items.skip_reason({**raw, "label": 0}, max_chars, for_accuracy=True)
    return reason


def to_item(raw: dict[str, Any], file: str, run_seed: int) -> EvalItem:
    """Permute the responses with a seed derived from the run seed and the item's key."""
    key = f"{file}:{raw['id']}"
    n = len(raw["responses"])
    perm = list(range(n))
    random.Random(derive_seed("order", run_seed, key)).shuffle(perm)
    prompt = raw["prompt"]
    conversation: str | tuple[tuple[str, str], ...] = (
        prompt if isinstance(prompt, str) else tuple((m["role"], m["content"]) for m in prompt)
    )
    return EvalItem(
        key=key,
        file=file,
        id=str(raw["id"]),
        source=str(raw.get("source") or file),
        category=str(raw.get("category") or raw.get("source") or file),
        prompt=conversation,
        responses=tuple(raw["responses"][i] for i in perm),
        label=0 if raw["label"] is None else perm.index(int(raw["label"])),
        perm=tuple(perm),
        seed=derive_seed("request", run_seed, key),
        official_only=raw["label"] is None,
    )


def select_items(
    paths: Sequence[Path], *, limit: int | None, seed: int, max_chars: int | None = None, fmt: str | None = None
) -> Selection:
    """Usable items of each file (any published format, see formats/); with `limit`, a seeded sample per file."""
    selection = Selection()
    for path in paths:
        usable = []
        raws, selection.formats[path.name] = load_benchmark(path, fmt)
        scores_ties = get(selection.formats[path.name]).scores_ties
        for raw in raws:
            reason = skip_reason(raw, max_chars, scores_ties=scores_ties)
            if reason is None:
                usable.append(raw)
            else:
                selection.skipped[reason] += 1
        selection.available[path.name] = len(usable)
        if limit is not None and len(usable) > limit:
            # A seeded shuffle cut at `limit`: a larger limit keeps every item of a smaller one (resume reuses them).
            ranked = list(range(len(usable)))
            random.Random(derive_seed("sample", seed, path.name)).shuffle(ranked)
            keep = set(ranked[:limit])
            usable = [raw for i, raw in enumerate(usable) if i in keep]
        selection.items.extend(to_item(raw, path.name, seed) for raw in usable)
        selection.official_only += sum(raw["label"] is None for raw in usable)
        selection.meta.update((f"{path.name}:{raw['id']}", raw.get("meta") or {}) for raw in usable)
    keys = Counter(item.key for item in selection.items)
    duplicated = [key for key, count in keys.items() if count > 1]
    if duplicated:
        raise ValueError(f"item ids repeat within a file: {duplicated[:3]}")
    return selection
