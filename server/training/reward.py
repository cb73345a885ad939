"""The SPCT rule reward: +1 for a correct judgment, -1 otherwise, by the serving parser and the Meta RM's label rule.

A judgment is correct when it is well formed as the server's judgments are (principles, a critique, then one
`Scores: \\boxed{...}` line holding the last box) and the label rule (`meta_rm.labels.is_correct`) holds for
its parsed scores: with n >= 2 responses the labelled best is strictly highest, with n = 1 the score equals the
label. Everything else is -1: empty text, no or a broken box, a box only in the principles, several score lines,
the wrong count, a score out of 1..10, a tie at the top, and a judgment that repeats the sampling hint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from meta_rm.labels import is_correct
from voting import map_to_caller, parse_scores, split_judgment
from voting.parse import BOX_OPEN, SCORES_OPEN

HINT_PREFIX = "The best response is: Response "
"""Hinted sampling (RFT) adds `hint_text(j)` to the judging prompt; it never stays in a training prompt."""

CORRECT, WRONG = 1.0, -1.0


def hint_text(shown_position: int) -> str:
    """The hint for the labelled best response shown at 0-based `shown_position` (responses are numbered from 1)."""
    return f"{HINT_PREFIX}{shown_position + 1}"


def has_hint(text: str) -> bool:
    """Whether `text` carries the sampling hint (a training prompt must not; a judgment that repeats it is wrong)."""
    return HINT_PREFIX in text


def well_formed(text: str) -> bool:
    """Principles and a critique, then exactly one `Scores: \\boxed{` line, which holds the judgment's last box."""
    principles, critique = split_judgment(text)
    if not principles or not critique:
        return False
    if text.count(SCORES_OPEN) != 1:
        return False
    return text.rfind(BOX_OPEN) == text.rfind(SCORES_OPEN) + len(SCORES_OPEN) - len(BOX_OPEN)


def judgment_correct(text: str, order: Sequence[int], label: int) -> bool:
    """The label rule on a judgment written for responses shown in `order` (`label` in the caller's order)."""
    if not well_formed(text) or has_hint(text):
        return False
    parsed = parse_scores(text, len(order))
    if parsed.scores is None:
        return False
    return is_correct(map_to_caller(parsed.scores, order), label)


def rule_reward(text: str, n_responses: int, label: int) -> float:
    """+1 / -1 for a judgment of `n_responses` responses in the order shown, `label` indexing that order
    (n = 1: the expected score)."""
    if n_responses < 1:
        raise ValueError("a judgment rates at least one response")
    if n_responses >= 2 and not 0 <= label < n_responses:
        raise ValueError(f"label {label} is not a response index for {n_responses} responses")
    return CORRECT if judgment_correct(text, tuple(range(n_responses)), label) else WRONG


def compute_score(data_source: str, solution_str: str, ground_truth: object, extra_info: object = None) -> float:
    """The rule reward as verl's custom `compute_score` (`custom_reward_function.path` = this file's module path,
    `.name=compute_score`): `ground_truth` is `{"n": responses, "label": shown label}` or its JSON text."""
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if not isinstance(truth, dict) or not {"n", "label"} <= set(truth):
        raise ValueError('ground_truth must be {"n": responses, "label": label in the shown order}')
    return rule_reward(solution_str, int(truth["n"]), int(truth["label"]))
