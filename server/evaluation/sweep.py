"""Voting@k and MetaRM@k for every k <= k_max from one set of k_max sampled judgments per item (pure).

Sampling each k separately costs sum(k) judgments per item; sampling k_max once and scoring subsets
costs k_max, the standard way to draw scaling curves (the paper's Figure 1 style). A subset must look
like what the server would have sampled at that k: the server splits k samples over response orders
with `voting.plan_orders(n, k, seed)`, so for each k' we take, per planned order, that many samples
shown in exactly that order. With `rotate` this is exact whenever k_max >= n (every rotation is
present, with enough samples) and with `shuffle` always (its orders for k' are the first k' of k_max);
otherwise (k_max < n, best-of-N) the nearest available order stands in. For pairs the subsets are
nested (a larger k' keeps every sample of a smaller one), so one item's curve moves smoothly with k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from voting import plan_orders, select_top, vote
from voting.orders import OrderStrategy

HALF = "half"


@dataclass(frozen=True, slots=True)
class Judgment:
    """One sampled judgment: scores in the caller's order (None = unparseable), its order, its meta reward."""

    scores: tuple[int, ...] | None
    order: tuple[int, ...]
    meta_reward: float | None = None


def order_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """How far apart two response orders are: total displacement of the responses' positions."""
    pos_b = {caller: pos for pos, caller in enumerate(b)}
    return sum(abs(pos - pos_b[caller]) for pos, caller in enumerate(a))


def subset_for_k(
    orders: Sequence[Sequence[int]], k: int, seed: int, strategy: OrderStrategy = OrderStrategy.ROTATE
) -> tuple[int, ...]:
    """Indices of k of the given samples whose orders match `plan_orders(n, k, seed, strategy)`.

    Exact matches first (earliest sample first), else the nearest order left. Sorted ascending.
    """
    if not 1 <= k <= len(orders):
        raise ValueError(f"k must be in 1..{len(orders)}, got {k}")
    if k == len(orders):
        return tuple(range(k))
    n = len(orders[0])
    pool = list(range(len(orders)))
    chosen: list[int] = []
    for group in plan_orders(n, k, seed, strategy):
        for _ in range(group.count):
            exact = next((i for i in pool if tuple(orders[i]) == group.order), None)
            pick = exact if exact is not None else min(pool, key=lambda i: order_distance(orders[i], group.order))
            pool.remove(pick)
            chosen.append(pick)
    return tuple(sorted(chosen))


def k_meta_for(spec: str | int, k: int) -> int:
    """The judgments a Meta RM keeps at k: `half` = max(1, k // 2) (the paper's default), or a number (<= k)."""
    if spec == HALF:
        return max(1, k // 2)
    if isinstance(spec, int) and spec >= 1:
        return min(spec, k)
    raise ValueError(f"k_meta must be {HALF!r} or an integer >= 1, got {spec!r}")


def voting_rewards(judgments: Sequence[Judgment], n: int) -> tuple[int, ...] | None:
    """Voting@k: per-response sums over the valid judgments; None when none is valid."""
    valid = [j.scores for j in judgments if j.scores is not None]
    return vote(valid, n).rewards if valid else None


def metarm_rewards(judgments: Sequence[Judgment], n: int, k_meta: int) -> tuple[int, ...] | None:
    """MetaRM@k: the Meta RM rates every valid judgment, the top k_meta vote (as the server does)."""
    valid = [j for j in judgments if j.scores is not None]
    if not valid:
        return None
    if any(j.meta_reward is None for j in valid):
        raise ValueError("MetaRM@k needs a meta reward on every valid judgment")
    keep = select_top([j.meta_reward or 0.0 for j in valid], k_meta)
    return vote([valid[i].scores or () for i in keep], n).rewards


def has_meta_rewards(judgments: Sequence[Judgment]) -> bool:
    valid = [j for j in judgments if j.scores is not None]
    return bool(valid) and all(j.meta_reward is not None for j in valid)


def sweep(
    judgments: Sequence[Judgment],
    n: int,
    ks: Sequence[int],
    seed: int,
    *,
    strategy: OrderStrategy = OrderStrategy.ROTATE,
    k_meta_specs: Sequence[str | int] = (),
) -> dict[tuple[str, int], tuple[int, ...] | None]:
    """Voted rewards per (method, k): `voting`, and `metarm` / `metarm_kmeta<v>` for each k_meta spec."""
    out: dict[tuple[str, int], tuple[int, ...] | None] = {}
    orders = [j.order for j in judgments]
    for k in ks:
        subset = [judgments[i] for i in subset_for_k(orders, k, seed, strategy)]
        out[("voting", k)] = voting_rewards(subset, n)
        for spec in k_meta_specs:
            out[(metarm_method(spec), k)] = metarm_rewards(subset, n, k_meta_for(spec, k))
    return out


def metarm_method(spec: str | int) -> str:
    """`metarm` for k_meta = k/2, `metarm_kmeta<v>` for a fixed k_meta = v."""
    return "metarm" if spec == HALF else f"metarm_kmeta{spec}"
