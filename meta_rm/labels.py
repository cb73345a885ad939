"""The label rule of the paper: is a judgment's score list *correct* for a labelled item?"""

from __future__ import annotations

from collections.abc import Sequence

from voting import map_to_caller, parse_scores


def is_correct(scores: Sequence[int] | None, label: int) -> bool:
    """`scores` in the caller's order (None = unparseable). With n >= 2 responses: the labelled best
    response (index `label`) gets the strictly highest score. With n = 1: the score equals `label`."""
    if scores is None or not scores:
        return False
    if len(scores) == 1:
        return scores[0] == label
    if not 0 <= label < len(scores):
        raise ValueError(f"label {label} is not a response index for {len(scores)} responses")
    best = scores[label]
    return all(s < best for i, s in enumerate(scores) if i != label)


def label_judgment(text: str, order: Sequence[int], label: int) -> bool:
    """Parse a judgment written for responses shown in `order` and apply `is_correct`."""
    parsed = parse_scores(text, len(order))
    if parsed.scores is None:
        return False
    return is_correct(map_to_caller(parsed.scores, order), label)
