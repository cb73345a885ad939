"""The one reader of labelled items (the normalized dev JSONL) and its documented skip rules."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Why an item is left out (MANIFEST.md of the dev data).
SKIP_TIE = "tie"  # `label` is null: no best response
SKIP_AMBIGUOUS = "label_ambiguous"  # meta.label_ambiguous
SKIP_IDENTICAL = "identical_responses"  # meta.identical_responses (for accuracy also: repeated texts)
SKIP_MALFORMED = "malformed"  # not the normalized shape (responses, int label in range, a user-last prompt)
SKIP_SINGLE = "single_response"  # for accuracy only: one response cannot be ranked
SKIP_TOO_LONG = "too_long"  # conversation + responses over `max_chars` characters


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSONL file."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def prompt_turns(prompt: object) -> list[tuple[str, str]]:
    """`prompt` as (role, content) turns: a string is one user turn; raises ValueError on another shape."""
    if isinstance(prompt, str):
        return [("user", prompt)]
    if isinstance(prompt, list) and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in prompt):
        return [(str(m["role"]), str(m["content"])) for m in prompt]
    raise ValueError("`prompt` must be a string or a list of {role, content}")


def item_chars(raw: Mapping[str, Any]) -> int:
    """Characters of the conversation and the responses (the length limit's measure)."""
    return sum(len(c) for _, c in prompt_turns(raw["prompt"])) + sum(len(str(r)) for r in raw["responses"])


def skip_reason(raw: Mapping[str, Any], max_chars: int | None = None, *, for_accuracy: bool = False) -> str | None:
    """Why a raw item is left out, or None. Always: tie, ambiguous label, flagged identical responses,
    malformed shape, over `max_chars`. With `for_accuracy` (evaluation), also repeated response texts and a
    single response; without it (Meta RM data) a single response is kept: its label is the expected score."""
    meta = raw.get("meta") or {}
    meta = meta if isinstance(meta, Mapping) else {}
    label, responses = raw.get("label"), raw.get("responses")
    if label is None:
        return SKIP_TIE
    if meta.get("label_ambiguous"):
        return SKIP_AMBIGUOUS
    if meta.get("identical_responses"):
        return SKIP_IDENTICAL
    if not isinstance(responses, list) or not responses or not isinstance(label, int) or isinstance(label, bool):
        return SKIP_MALFORMED
    if len(responses) >= 2 and not 0 <= label < len(responses):
        return SKIP_MALFORMED
    try:
        turns = prompt_turns(raw.get("prompt"))
    except ValueError:
        return SKIP_MALFORMED
    if not turns or turns[-1][0] != "user":
        return SKIP_MALFORMED
    if for_accuracy and len(set(map(str, responses))) < len(responses):
        return SKIP_IDENTICAL
    if for_accuracy and len(responses) < 2:
        return SKIP_SINGLE
    if max_chars is not None and item_chars(raw) > max_chars:
        return SKIP_TOO_LONG
    return None
