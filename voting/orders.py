"""Response orders per sample: few distinct orders (balanced rotations or seeded shuffles), each with a count."""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


class OrderStrategy(enum.StrEnum):
    """`rotate`: min(k, n) evenly spaced rotations of one seeded shuffle (balanced positions, shared
    prefixes); `shuffle`: an independent seeded shuffle per sample, identical ones grouped (the paper)."""

    ROTATE = "rotate"
    SHUFFLE = "shuffle"


@dataclass(frozen=True, slots=True)
class ShownOrder:
    """`order[pos]` is the caller's index of the response shown at position `pos`; `count` samples use it."""

    order: tuple[int, ...]
    count: int


def derive_seed(*parts: int | str) -> int:
    """A seed in [0, 2**31) fixed by `parts` (joined with ":"), stable across runs and processes
    (`random` hashes str seeds with SHA-512). The one derivation: per-order sampling seeds
    `(seed, attempt, shown order)`, per-item judging seeds `(seed, item_id)` and evaluation seeds
    `(purpose, seed, key)`."""
    return random.Random(":".join(map(str, parts))).randrange(2**31)


def plan_orders(
    n_responses: int, k: int, seed: int, strategy: OrderStrategy = OrderStrategy.ROTATE
) -> tuple[ShownOrder, ...]:
    """Split k samples over distinct response orders; the counts always sum to k."""
    if n_responses < 1 or k < 1:
        raise ValueError("n_responses and k must be >= 1")
    rng = random.Random(seed)
    if strategy is OrderStrategy.SHUFFLE:
        counts: Counter[tuple[int, ...]] = Counter()
        for _ in range(k):
            perm = list(range(n_responses))
            rng.shuffle(perm)
            counts[tuple(perm)] += 1
        return tuple(ShownOrder(order, c) for order, c in counts.items())
    base = list(range(n_responses))
    rng.shuffle(base)
    m = min(k, n_responses)
    orders = []
    for j in range(m):
        shift = (j * n_responses) // m
        order = tuple(base[(pos + shift) % n_responses] for pos in range(n_responses))
        orders.append(ShownOrder(order, k // m + (1 if j < k % m else 0)))
    return tuple(orders)


def map_to_caller(scores: Sequence[int], order: Sequence[int]) -> tuple[int, ...]:
    """Scores listed by position -> scores listed by the caller's response index."""
    out = [0] * len(order)
    for pos, caller_index in enumerate(order):
        out[caller_index] = scores[pos]
    return tuple(out)
