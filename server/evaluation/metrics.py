"""Pure accuracy metrics: tie-aware credit, accuracy, seeded bootstrap intervals, position bias. No engine here.

Ties: the paper breaks a tie in the voted reward at random, so an item whose labelled response shares
the top reward with m-1 others earns 1/m, the exact expectation of that random draw (no extra noise).
`strict_credit` counts every tie as wrong; both are reported.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def credit(rewards: Sequence[float], label: int) -> float:
    """1 when `label` has the strictly highest reward, 1/m when it is one of m tied at the top, else 0."""
    if not rewards:
        raise ValueError("no rewards")
    top = max(rewards)
    if rewards[label] != top:
        return 0.0
    return 1.0 / sum(1 for r in rewards if r == top)


def strict_credit(rewards: Sequence[float], label: int) -> float:
    """1 only when `label` has the strictly highest reward; any tie at the top counts as wrong."""
    return 1.0 if credit(rewards, label) == 1.0 else 0.0


def is_tie(rewards: Sequence[float]) -> bool:
    """Whether two or more responses share the top reward."""
    top = max(rewards)
    return sum(1 for r in rewards if r == top) > 1


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("the mean of nothing")
    return math.fsum(values) / len(values)


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean, resampling items with replacement (seeded).

    None for no values. The interval is widened, if needed, to contain the point estimate (it can miss it
    only for tiny or degenerate samples, where no interval means much).
    """
    if not values:
        return None
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError("confidence must be in (0, 1) and resamples >= 1")
    rng = random.Random(seed)
    n, data = len(values), list(values)
    means = sorted(math.fsum(rng.choices(data, k=n)) / n for _ in range(resamples))
    alpha = (1 - confidence) / 2
    lo = means[max(0, math.floor(alpha * resamples))]
    hi = means[min(resamples - 1, math.ceil((1 - alpha) * resamples) - 1)]
    point = mean(values)
    return min(lo, point), max(hi, point)


@dataclass(frozen=True, slots=True)
class Summary:
    """Accuracy of one method over some items."""

    n: int
    accuracy: float | None
    ci: tuple[float, float] | None
    strict_accuracy: float | None
    ties: int

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": _round(self.accuracy),
            "ci_low": _round(self.ci[0]) if self.ci else None,
            "ci_high": _round(self.ci[1]) if self.ci else None,
            "strict_accuracy": _round(self.strict_accuracy),
            "ties": self.ties,
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One item under one method: its credit (ties = 1/m), strict credit, and whether the top was tied."""

    credit: float
    strict: float
    tied: bool

    @classmethod
    def of(cls, rewards: Sequence[float] | None, label: int) -> Outcome:
        """From voted rewards; None (no valid judgment to vote) is a wrong answer."""
        if rewards is None:
            return cls(0.0, 0.0, False)
        return cls(credit(rewards, label), strict_credit(rewards, label), is_tie(rewards))


def summarize(outcomes: Sequence[Outcome], *, resamples: int = 1000, seed: int = 0) -> Summary:
    if not outcomes:
        return Summary(0, None, None, None, 0)
    credits = [o.credit for o in outcomes]
    return Summary(
        n=len(outcomes),
        accuracy=mean(credits),
        ci=bootstrap_ci(credits, resamples=resamples, seed=seed),
        strict_accuracy=mean([o.strict for o in outcomes]),
        ties=sum(o.tied for o in outcomes),
    )


def summarize_groups(
    outcomes: Sequence[Outcome], groups: Sequence[str], *, resamples: int = 1000, seed: int = 0
) -> dict[str, Summary]:
    """One summary per group name (e.g. source or category), groups sorted by name."""
    if len(outcomes) != len(groups):
        raise ValueError("one group name per outcome")
    by: dict[str, list[Outcome]] = {}
    for outcome, group in zip(outcomes, groups, strict=True):
        by.setdefault(group, []).append(outcome)
    return {g: summarize(by[g], resamples=resamples, seed=seed) for g in sorted(by)}


@dataclass(frozen=True, slots=True)
class JudgedPosition:
    """One single judgment of a labelled item: its scores (caller's order) and the order it was shown."""

    scores: Sequence[int] | None
    order: Sequence[int]
    label: int


def label_position(order: Sequence[int], label: int) -> int:
    """Where the labelled response was shown (0 = first); `order[pos]` is the caller index shown at pos."""
    return list(order).index(label)


def position_bias(judgments: Iterable[JudgedPosition], *, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Single-judgment accuracy when the best response was shown first vs last (ties = 1/m; invalid
    judgments left out), and the gap first - last. A judge without position bias has a gap near 0."""
    first: list[Outcome] = []
    last: list[Outcome] = []
    middle: list[Outcome] = []
    for j in judgments:
        if j.scores is None:
            continue
        outcome = Outcome.of(j.scores, j.label)
        pos = label_position(j.order, j.label)
        (first if pos == 0 else last if pos == len(j.order) - 1 else middle).append(outcome)
    out: dict[str, Any] = {
        "first": summarize(first, resamples=resamples, seed=seed).to_json(),
        "last": summarize(last, resamples=resamples, seed=seed).to_json(),
    }
    if middle:
        out["middle"] = summarize(middle, resamples=resamples, seed=seed).to_json()
    a, b = out["first"]["accuracy"], out["last"]["accuracy"]
    out["gap"] = None if a is None or b is None else round(a - b, 6)
    return out
