"""Voting@k and MetaRM selection: sum the kept judgments' scores, break ties with a seeded draw."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VoteResult:
    """`rewards[i]` = sum of response i's scores over the voting judgments; `means[i]` = their mean."""

    rewards: tuple[int, ...]
    means: tuple[float, ...]
    voters: int


def vote(score_lists: Sequence[Sequence[int]], n_responses: int) -> VoteResult:
    """Sum per-response scores (caller's order) over judgments; needs at least one judgment."""
    if not score_lists:
        raise ValueError("voting needs at least one valid judgment")
    rewards = [0] * n_responses
    for scores in score_lists:
        if len(scores) != n_responses:
            raise ValueError(f"a judgment has {len(scores)} scores for {n_responses} responses")
        for i, s in enumerate(scores):
            rewards[i] += s
    voters = len(score_lists)
    return VoteResult(tuple(rewards), tuple(r / voters for r in rewards), voters)


def unit_score(mean: float) -> float:
    """A score on the judges' 1..10 scale mapped to 0..1, exactly (no rounding): 1 -> 0, 10 -> 1."""
    return (mean - 1.0) / 9.0


def pick_best(rewards: Sequence[float], seed: int) -> int:
    """Index of the highest reward; ties broken by a draw seeded with `seed`."""
    if not rewards:
        raise ValueError("no rewards to pick from")
    top = max(rewards)
    tied = [i for i, r in enumerate(rewards) if r == top]
    return tied[0] if len(tied) == 1 else random.Random(seed).choice(tied)


def select_top(meta_rewards: Sequence[float], k_meta: int) -> tuple[int, ...]:
    """Indices of the k_meta highest meta rewards (ties: earlier index first), in index order."""
    if k_meta < 0:
        raise ValueError("k_meta must be >= 0")
    ranked = sorted(range(len(meta_rewards)), key=lambda i: (-meta_rewards[i], i))
    return tuple(sorted(ranked[:k_meta]))
