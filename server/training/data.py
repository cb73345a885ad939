"""Labelled training items from every format `grm-server eval` reads, with the evaluation's seeded response order."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.core.items import skip_reason
from server.evaluation.data import EvalItem, to_item
from server.evaluation.formats import load_benchmark
from voting import derive_seed


@dataclass
class TrainingData:
    """The chosen items (responses permuted per item, `label` indexing the permuted list; n = 1: the expected
    score), what was left out and why, and each file's format and SHA-256."""

    items: list[EvalItem] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    files: list[dict[str, str]] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _single(raw: dict[str, Any], file: str, seed: int) -> EvalItem:
    """A one-response item: its label is the expected score, nothing to permute."""
    prompt = raw["prompt"]
    conversation = prompt if isinstance(prompt, str) else tuple((m["role"], m["content"]) for m in prompt)
    key = f"{file}:{raw['id']}"
    return EvalItem(
        key=key,
        file=file,
        id=str(raw["id"]),
        source=str(raw.get("source") or file),
        category=str(raw.get("category") or raw.get("source") or file),
        prompt=conversation,
        responses=(str(raw["responses"][0]),),
        label=int(raw["label"]),
        perm=(0,),
        seed=derive_seed("request", seed, key),
    )


def load_training_items(
    paths: Sequence[Path], *, seed: int, limit: int | None = None, max_chars: int | None = None, fmt: str | None = None
) -> TrainingData:
    """Labelled items of every file (FormatError for a file that is no benchmark); items the shared rules skip
    are counted (an unlabelled item is a `tie`). With `limit`, a seeded sample of at most `limit` items per
    file, a larger limit keeping every item of a smaller one (so a rerun with a larger limit resumes)."""
    data = TrainingData()
    for path in paths:
        raws, found = load_benchmark(path, fmt)
        data.files.append(
            {"path": str(path), "format": found, "sha256": file_sha256(path) if path.is_file() else "hub"}
        )
        usable = []
        for raw in raws:
            responses = raw.get("responses")
            many = isinstance(responses, list) and len(responses) >= 2
            reason = skip_reason(raw, max_chars, for_accuracy=many)
            if reason is None:
                usable.append(raw)
            else:
                data.skipped[reason] += 1
        if limit is not None and len(usable) > limit:
            ranked = list(range(len(usable)))
            random.Random(derive_seed("sample", seed, path.name)).shuffle(ranked)
            keep = set(ranked[:limit])
            usable = [raw for i, raw in enumerate(usable) if i in keep]
        for raw in usable:
            many = len(raw["responses"]) >= 2
            data.items.append(to_item(raw, path.name, seed) if many else _single(raw, path.name, seed))
    repeated = [key for key, n in Counter(item.key for item in data.items).items() if n > 1]
    if repeated:
        raise ValueError(f"item ids repeat within a file: {repeated[:3]}")
    return data
