"""Response orders, mapping back, Voting@k, tie-breaks and Meta RM selection: tables and properties."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voting import derive_seed, map_to_caller, pick_best, plan_orders, select_top, vote
from voting.orders import OrderStrategy

strategies = st.sampled_from(list(OrderStrategy))


@given(st.integers(1, 12), st.integers(1, 64), st.integers(0, 2**31 - 1), strategies)
def test_orders_are_permutations_that_sum_to_k(n: int, k: int, seed: int, strategy: OrderStrategy) -> None:
    groups = plan_orders(n, k, seed, strategy)
    assert sum(g.count for g in groups) == k
    assert all(g.count >= 1 for g in groups)
    assert all(sorted(g.order) == list(range(n)) for g in groups)
    assert len({g.order for g in groups}) == len(groups)
    if strategy is OrderStrategy.ROTATE:
        # docs/design.md, "Performance targets": cost grows with distinct orders, not with k
        assert len(groups) == min(k, n)


@given(st.integers(1, 10), st.integers(1, 6), st.integers(0, 10_000))
def test_rotations_balance_positions(n: int, rounds: int, seed: int) -> None:
    """With k a multiple of n, every response is shown at every position equally often."""
    groups = plan_orders(n, n * rounds, seed, OrderStrategy.ROTATE)
    seen: Counter[tuple[int, int]] = Counter()
    for g in groups:
        for pos, idx in enumerate(g.order):
            seen[(pos, idx)] += g.count
    assert set(seen.values()) == {rounds}
    assert len(seen) == n * n


@pytest.mark.parametrize(
    ("n", "k", "shifts", "counts"),
    [
        (4, 4, [0, 1, 2, 3], [1, 1, 1, 1]),
        (4, 2, [0, 2], [1, 1]),
        (3, 7, [0, 1, 2], [3, 2, 2]),
        (5, 3, [0, 1, 3], [1, 1, 1]),
        (1, 5, [0], [5]),
    ],
)
def test_rotations_table(n: int, k: int, shifts: list[int], counts: list[int]) -> None:
    """Hand-computed: group j shows the seeded base order rotated left by floor(j*n/m), m = min(k, n)."""
    base = list(range(n))
    random.Random(11).shuffle(base)
    groups = plan_orders(n, k, 11, OrderStrategy.ROTATE)
    assert [g.count for g in groups] == counts
    assert [g.order for g in groups] == [tuple(base[s:] + base[:s]) for s in shifts]


@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 1000))
def test_shuffles_are_k_seeded_draws(n: int, k: int, seed: int) -> None:
    """`shuffle` groups exactly the k successive shuffles of one generator seeded with `seed`."""
    rng, drawn = random.Random(seed), Counter[tuple[int, ...]]()
    for _ in range(k):
        perm = list(range(n))
        rng.shuffle(perm)
        drawn[tuple(perm)] += 1
    assert {g.order: g.count for g in plan_orders(n, k, seed, OrderStrategy.SHUFFLE)} == drawn


@pytest.mark.parametrize("parts", [(0, "a"), (7, 0, 1), ("order", 3, "x.jsonl"), (2**31 - 1,)])
def test_derive_seed_is_the_joined_string_seed(parts: tuple[int | str, ...]) -> None:
    """The one seed derivation: `random` seeded with the parts joined by ":" (stable across processes)."""
    assert derive_seed(*parts) == random.Random(":".join(map(str, parts))).randrange(2**31)


@given(st.lists(st.one_of(st.integers(0, 2**31), st.text(alphabet="abc", max_size=3)), min_size=1, max_size=4))
def test_derive_seed_range_and_sensitivity(parts: list[int | str]) -> None:
    seed = derive_seed(*parts)
    assert 0 <= seed < 2**31
    assert derive_seed(*parts, 0) != derive_seed(*parts, 1)


def test_orders_reject_empty() -> None:
    with pytest.raises(ValueError):
        plan_orders(0, 4, 1)
    with pytest.raises(ValueError):
        plan_orders(2, 0, 1)


@given(st.permutations(list(range(6))), st.lists(st.integers(1, 10), min_size=6, max_size=6))
def test_map_to_caller_inverts_the_order(order: list[int], by_caller: list[int]) -> None:
    shown = [by_caller[i] for i in order]  # what a judge sees position by position
    assert map_to_caller(shown, order) == tuple(by_caller)


@pytest.mark.parametrize(
    ("judgments", "rewards", "means"),
    [
        ([[8, 3]], (8, 3), (8.0, 3.0)),
        ([[8, 3], [6, 5], [10, 1]], (24, 9), (8.0, 3.0)),
        ([[1], [10]], (11,), (5.5,)),
    ],
)
def test_vote_table(judgments: list[list[int]], rewards: tuple[int, ...], means: tuple[float, ...]) -> None:
    result = vote(judgments, len(rewards))
    assert result.rewards == rewards
    assert result.means == means
    assert result.voters == len(judgments)


def test_vote_refuses_nothing_and_wrong_width() -> None:
    with pytest.raises(ValueError):
        vote([], 2)
    with pytest.raises(ValueError):
        vote([[1, 2, 3]], 2)


judgment_lists = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.lists(st.integers(1, 10), min_size=n, max_size=n), min_size=1, max_size=12)
)


@given(judgment_lists, st.randoms())
def test_vote_is_invariant_to_sample_order(judgments: list[list[int]], rnd: object) -> None:
    shuffled = list(judgments)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    n = len(judgments[0])
    assert vote(judgments, n) == vote(shuffled, n)


@given(judgment_lists, st.randoms())
def test_permuting_responses_permutes_rewards(judgments: list[list[int]], rnd: object) -> None:
    n = len(judgments[0])
    perm = list(range(n))
    rnd.shuffle(perm)  # type: ignore[attr-defined]
    permuted = [[j[p] for p in perm] for j in judgments]
    base = vote(judgments, n).rewards
    assert vote(permuted, n).rewards == tuple(base[p] for p in perm)


@given(judgment_lists)
def test_rewards_range_is_k_to_10k(judgments: list[list[int]]) -> None:
    k = len(judgments)
    assert all(k <= r <= 10 * k for r in vote(judgments, len(judgments[0])).rewards)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=10), st.integers(0, 10_000))
def test_pick_best_returns_a_maximum_deterministically(rewards: list[int], seed: int) -> None:
    best = pick_best(rewards, seed)
    assert rewards[best] == max(rewards)
    assert pick_best(rewards, seed) == best


def test_pick_best_breaks_ties_by_seed() -> None:
    picks = {pick_best([5, 5, 5, 1], seed) for seed in range(50)}
    assert picks == {0, 1, 2}
    assert pick_best([1, 9, 3], 7) == 1


@pytest.mark.parametrize(
    ("meta", "k_meta", "kept"),
    [
        ([0.1, 0.9, 0.5, 0.7], 2, (1, 3)),
        ([0.1, 0.9, 0.5, 0.7], 0, ()),
        ([0.1, 0.9], 5, (0, 1)),
        ([0.5, 0.5, 0.5], 2, (0, 1)),  # stable: earlier judgment wins a tie
        ([-3.0, -1.0, -2.0], 1, (1,)),
    ],
)
def test_select_top_table(meta: list[float], k_meta: int, kept: tuple[int, ...]) -> None:
    assert select_top(meta, k_meta) == kept


@given(st.lists(st.floats(-100, 100), max_size=20), st.integers(0, 25))
def test_select_top_keeps_the_highest(meta: list[float], k_meta: int) -> None:
    kept = select_top(meta, k_meta)
    assert len(kept) == min(k_meta, len(meta))
    assert list(kept) == sorted(set(kept))
    dropped = [meta[i] for i in range(len(meta)) if i not in kept]
    assert all(meta[i] >= d for i in kept for d in dropped)


def test_select_top_rejects_negative() -> None:
    with pytest.raises(ValueError):
        select_top([1.0], -1)
