"""Extract the score list from a judgment: the last `\\boxed{...}`, one integer 1..10 per response."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MIN_SCORE = 1
MAX_SCORE = 10
BOX_OPEN = "\\boxed{"  # the score box every template asks for; the last one in a judgment is its scores
SCORES_OPEN = "Scores: " + BOX_OPEN  # how a judgment's score line starts (templates, regex, completion)
_SEPARATORS = re.compile(r"[,，]")
_INTEGER = re.compile(r"\d+")


class ParseError(enum.StrEnum):
    """Why a judgment cannot vote."""

    NO_BOX = "no_box"
    UNCLOSED_BOX = "unclosed_box"
    EMPTY_BOX = "empty_box"
    WRONG_COUNT = "wrong_count"
    NOT_INTEGER = "not_integer"
    OUT_OF_RANGE = "out_of_range"


@dataclass(frozen=True, slots=True)
class ScoreParse:
    """Either `scores` (one per response, in the judgment's order) or an `error` with `detail`."""

    scores: tuple[int, ...] | None
    error: ParseError | None = None
    detail: str = ""


def _last_box(text: str) -> str | None | ParseError:
    start = text.rfind(BOX_OPEN)
    if start < 0:
        return None
    depth, i = 1, start + len(BOX_OPEN)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return ParseError.UNCLOSED_BOX


def parse_scores(text: str, n_responses: int) -> ScoreParse:
    """Parse the last box of `text` into exactly `n_responses` integer scores in 1..10."""
    box = _last_box(text)
    if box is None:
        return ScoreParse(None, ParseError.NO_BOX, "no \\boxed{...} in the judgment")
    if isinstance(box, ParseError):
        return ScoreParse(None, box, "the last \\boxed{ is never closed")
    if not box.strip():
        return ScoreParse(None, ParseError.EMPTY_BOX, "the score box is empty")
    parts = [p.strip() for p in _SEPARATORS.split(box)]
    if len(parts) != n_responses:
        return ScoreParse(None, ParseError.WRONG_COUNT, f"{len(parts)} scores for {n_responses} responses")
    scores: list[int] = []
    for part in parts:
        if not _INTEGER.fullmatch(part):
            return ScoreParse(None, ParseError.NOT_INTEGER, f"score {part!r} is not an integer")
        value = int(part)
        if not MIN_SCORE <= value <= MAX_SCORE:
            return ScoreParse(None, ParseError.OUT_OF_RANGE, f"score {value} is outside 1..10")
        scores.append(value)
    return ScoreParse(tuple(scores))


_CRITERIA, _ANALYSIS, _SECTION_ENDS = "Specific Criteria:", "Analysis:", ("Scores:", "\\boxed{")


def split_judgment(text: str) -> tuple[str, str]:
    """Return (principles, critique) of a judgment; empty strings where a section is missing.
    Plain searches, linear in the text (a judgment may copy long caller text)."""
    start = text.find(_CRITERIA)
    if start < 0:
        return "", ""
    start += len(_CRITERIA)
    middle = text.find(_ANALYSIS, start)
    if middle < 0:
        return "", ""
    rest = text[middle + len(_ANALYSIS) :]
    ends = [i for i in (rest.find(e) for e in _SECTION_ENDS) if i >= 0]
    return text[start:middle].strip(), rest[: min(ends)].strip() if ends else rest.strip()
