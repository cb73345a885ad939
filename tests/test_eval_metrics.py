"""Pure evaluation code: tie-aware credit, bootstrap CIs, position bias, k sweeps, item selection, reports."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.evaluation.data import select_items, skip_reason
from server.evaluation.evaluate import parse_k_meta, parse_ks
from server.evaluation.metrics import (
    JudgedPosition,
    Outcome,
    bootstrap_ci,
    credit,
    is_tie,
    position_bias,
    strict_credit,
    summarize,
)
from server.evaluation.report import ReportSpec, build_results
from server.evaluation.sweep import Judgment, k_meta_for, metarm_rewards, subset_for_k, sweep, voting_rewards
from voting import plan_orders
from voting.orders import OrderStrategy


@pytest.mark.parametrize(
    ("rewards", "label", "expected", "strict"),
    [
        ((9, 3), 0, 1.0, 1.0),
        ((3, 9), 0, 0.0, 0.0),
        ((5, 5), 0, 0.5, 0.0),  # a tie: the paper's random tie-break is right half the time
        ((5, 5), 1, 0.5, 0.0),
        ((7, 7, 7), 2, 1 / 3, 0.0),
        ((7, 7, 2), 2, 0.0, 0.0),
        ((2, 9, 9, 4), 1, 0.5, 0.0),
        ((40, 39, 12), 0, 1.0, 1.0),
        ((8,), 0, 1.0, 1.0),
    ],
)
def test_credit_counts_ties_as_one_over_m(rewards: tuple[int, ...], label: int, expected: float, strict: float) -> None:
    assert credit(rewards, label) == pytest.approx(expected)
    assert strict_credit(rewards, label) == strict
    assert is_tie(rewards) == (len(rewards) > 1 and rewards.count(max(rewards)) > 1)


def test_no_valid_judgment_is_a_wrong_answer() -> None:
    assert Outcome.of(None, 0) == Outcome(0.0, 0.0, False)
    assert Outcome.of((6, 6), 1) == Outcome(0.5, 0.0, True)


def test_summary_accuracy_and_tie_count() -> None:
    outcomes = [Outcome.of(r, 0) for r in [(9, 1), (1, 9), (5, 5), (8, 2)]]
    s = summarize(outcomes, resamples=200, seed=1)
    assert (s.n, s.accuracy, s.strict_accuracy, s.ties) == (4, 0.625, 0.5, 1)
    assert summarize([]).to_json() == {
        "n": 0,
        "accuracy": None,
        "ci_low": None,
        "ci_high": None,
        "strict_accuracy": None,
        "ties": 0,
    }


def test_bootstrap_is_seeded_and_degenerate_cases_are_exact() -> None:
    values = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 1 / 3] * 5
    assert bootstrap_ci(values, resamples=50, seed=3) == bootstrap_ci(values, resamples=50, seed=3)
    assert bootstrap_ci(values, resamples=50, seed=3) != bootstrap_ci(values, resamples=50, seed=4)
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    assert bootstrap_ci([]) is None
    with pytest.raises(ValueError):
        bootstrap_ci(values, confidence=1.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1 / 3]), min_size=1, max_size=80), st.integers(0, 10_000))
def test_bootstrap_interval_contains_the_point_estimate(values: list[float], seed: int) -> None:
    ci = bootstrap_ci(values, resamples=200, seed=seed)
    assert ci is not None
    point = sum(values) / len(values)
    assert 0.0 <= ci[0] <= point <= ci[1] <= 1.0


def test_bootstrap_interval_narrows_with_more_items() -> None:
    def width(n: int) -> float:
        values = [1.0 if i % 10 < 7 else 0.0 for i in range(n)]  # accuracy 0.7 at every n
        lo, hi = bootstrap_ci(values, resamples=1000, seed=0) or (0.0, 0.0)
        return hi - lo

    widths = [width(n) for n in (20, 80, 320)]
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.35)  # ~ 1/sqrt(n)


def test_position_bias_first_vs_last() -> None:
    # A judge that always prefers whatever it is shown first: right when the best is first, wrong when last.
    judged = []
    for label in (0, 1):
        for order in ((0, 1), (1, 0)):
            scores = [0, 0]
            scores[order[0]], scores[order[1]] = 9, 2
            judged.append(JudgedPosition(tuple(scores), order, label))
    judged.append(JudgedPosition(None, (0, 1), 0))  # invalid: left out
    judged.append(JudgedPosition((5, 5), (1, 0), 1))  # tie with the best shown first: 1/2
    pb = position_bias(judged, resamples=100)
    assert pb["first"]["n"] == 3 and pb["first"]["accuracy"] == pytest.approx(2.5 / 3)
    assert pb["last"]["n"] == 2 and pb["last"]["accuracy"] == 0.0
    assert pb["gap"] == pytest.approx(2.5 / 3, abs=1e-6)
    three = position_bias([JudgedPosition((1, 9, 2), (2, 1, 0), 1)], resamples=10)
    assert three["middle"]["n"] == 1 and three["first"]["n"] == 0 and three["gap"] is None


def expand(groups: Any) -> list[tuple[int, ...]]:
    """The orders of k samples as the server returns them: each group's samples in a row."""
    return [g.order for g in groups for _ in range(g.count)]


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 5), st.integers(1, 16), st.integers(1, 16), st.integers(0, 2**31 - 1))
def test_rotate_subsets_reproduce_the_servers_orders_at_every_k(n: int, k: int, extra: int, seed: int) -> None:
    k_max = max(n, k, k + extra - 1)  # exact whenever k_max >= n
    orders = expand(plan_orders(n, k_max, seed))
    chosen = subset_for_k(orders, k, seed)
    assert len(chosen) == len(set(chosen)) == k
    assert Counter(orders[i] for i in chosen) == Counter(expand(plan_orders(n, k, seed)))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(1, 12), st.integers(0, 12), st.integers(0, 2**31 - 1))
def test_shuffle_subsets_are_always_exact(n: int, k: int, extra: int, seed: int) -> None:
    orders = expand(plan_orders(n, k + extra, seed, OrderStrategy.SHUFFLE))
    chosen = subset_for_k(orders, k, seed, OrderStrategy.SHUFFLE)
    assert Counter(orders[i] for i in chosen) == Counter(expand(plan_orders(n, k, seed, OrderStrategy.SHUFFLE)))


def test_best_of_n_with_fewer_samples_than_responses_uses_the_nearest_orders() -> None:
    orders = expand(plan_orders(11, 8, 5))
    for k in (1, 2, 4, 8):
        chosen = subset_for_k(orders, k, 5)
        assert len(set(chosen)) == k
    assert subset_for_k(orders, 1, 5) == (0,)  # rotation 0 is always sample 0


def test_pair_subsets_are_nested() -> None:
    orders = expand(plan_orders(2, 8, 11))
    subsets = [set(subset_for_k(orders, k, 11)) for k in (1, 2, 4, 8)]
    assert all(a <= b for a, b in zip(subsets, subsets[1:], strict=False))


def test_voting_and_metarm_rewards() -> None:
    js = [
        Judgment((9, 2), (0, 1), meta_reward=0.1),
        Judgment(None, (1, 0)),
        Judgment((1, 8), (1, 0), meta_reward=0.9),
        Judgment((3, 4), (0, 1), meta_reward=0.5),
    ]
    assert voting_rewards(js, 2) == (13, 14)
    assert metarm_rewards(js, 2, 1) == (1, 8)
    assert metarm_rewards(js, 2, 2) == (4, 12)
    assert voting_rewards([Judgment(None, (0, 1))], 2) is None
    assert [k_meta_for("half", k) for k in (1, 2, 8, 32)] == [1, 1, 4, 16]
    assert k_meta_for(4, 2) == 2
    with pytest.raises(ValueError):
        k_meta_for(0, 4)
    swept = sweep(js, 2, (1, 2, 4), seed=0, k_meta_specs=("half",))
    assert set(swept) == {(m, k) for m in ("voting", "metarm") for k in (1, 2, 4)}
    assert swept[("voting", 4)] == (13, 14)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,2,4,8", (1, 2, 4, 8)), ("8, 1,2,2", (1, 2, 8)), ("32", (32,))],
)
def test_parse_ks(text: str, expected: tuple[int, ...]) -> None:
    assert parse_ks(text) == expected


@pytest.mark.parametrize("text", ["", "0,2", "a", "1;2"])
def test_parse_ks_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ks(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("half", ("half",)), ("half,1,4,1", ("half", 1, 4)), ("0", ()), ("none", ())]
)
def test_parse_k_meta(text: str, expected: tuple[Any, ...]) -> None:
    assert parse_k_meta(text) == expected


def raw_item(i: int, label: int | None = 0, **meta: Any) -> dict[str, Any]:
    return {"id": f"x{i}", "source": "S/a" if i % 2 else "S/b", "prompt": f"q{i}", "responses": [f"best {i}", f"other {i}"],
            "label": label, "category": None, "meta": meta}  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (raw_item(0, None), "tie"),
        (raw_item(0, 0, label_ambiguous=True), "label_ambiguous"),
        (raw_item(0, 0, identical_responses=True), "identical_responses"),
        ({**raw_item(0), "responses": ["same", "same"]}, "identical_responses"),
        ({**raw_item(0), "responses": ["one"]}, "single_response"),
        (raw_item(0), None),
    ],
)
def test_skip_reasons(raw: dict[str, Any], reason: str | None) -> None:
    assert skip_reason(raw, None) == reason


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_selection_randomizes_best_first_sets_with_a_seed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chosen_first.jsonl", [raw_item(i) for i in range(200)] + [raw_item(900, None)])
    sel = select_items([path], limit=None, seed=7)
    assert len(sel.items) == 200 and sel.skipped == Counter({"tie": 1})
    assert all(it.responses[it.label] == f"best {it.id[1:]}" and it.perm[it.label] == 0 for it in sel.items)
    firsts = sum(it.label == 0 for it in sel.items)
    assert 70 < firsts < 130  # the best response is no longer always shown first
    again = select_items([path], limit=None, seed=7)
    assert [(i.perm, i.seed) for i in again.items] == [(i.perm, i.seed) for i in sel.items]
    other = select_items([path], limit=None, seed=8)
    assert [i.perm for i in other.items] != [i.perm for i in sel.items]


def test_limit_is_a_seeded_nested_sample_per_file(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [raw_item(i) for i in range(50)])
    b = write_jsonl(tmp_path / "b.jsonl", [raw_item(i) for i in range(5)])
    small = select_items([a, b], limit=10, seed=1)
    big = select_items([a, b], limit=20, seed=1)
    assert Counter(i.file for i in small.items) == Counter({"a.jsonl": 10, "b.jsonl": 5})
    assert {i.key for i in small.items} <= {i.key for i in big.items}
    assert small.available == {"a.jsonl": 50, "b.jsonl": 5}


def record(
    key: str, label: int, greedy: list[int] | None, samples: list[tuple[list[int] | None, list[int]]], **extra: Any
) -> dict[str, Any]:
    rec: dict[str, Any] = {"key": key, "file": "f.jsonl", "id": key, "source": "S/" + key[0], "category": key[0], "n": 2,
                           "label": label, "perm": [0, 1], "seed": 0, "usage": {"engine_calls": 3}, "elapsed_s": 1.0}  # fmt: skip
    rec["greedy"] = {"samples": [{"scores": greedy, "order": [0, 1], "meta_reward": None}]}
    rec["sampled"] = {"samples": [{"scores": s, "order": o, "meta_reward": None} for s, o in samples]}
    rec.update(extra)
    return rec


def test_build_results_counts_ties_failures_and_breakdowns() -> None:
    orders = expand(plan_orders(2, 2, 0))
    records = [
        record("a1", 0, [9, 1], [([8, 2], list(orders[0])), ([3, 7], list(orders[1]))]),  # voting@2: 11 vs 9
        record("a2", 1, [5, 5], [([2, 9], list(orders[0])), ([4, 4], list(orders[1]))]),
        record("b1", 0, None, [(None, list(orders[0])), (None, list(orders[1]))]),
        record("b2", 0, [1, 2], [], sampled={"error": {"type": "no_valid_judgment", "status": 502, "message": "x"}}),
        record(
            "b3", 0, [9, 1], [], sampled={"error": {"type": "invalid_request_error", "status": 400, "message": "long"}}
        ),
    ]
    results = build_results(records, ReportSpec(ks=(1, 2), resamples=100))
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["greedy", "voting@1", "voting@2"]
    assert results["items"]["excluded"] == {"invalid_request_error": 1} and results["items"]["evaluated"] == 4
    assert rows["greedy"]["n"] == 4 and rows["greedy"]["accuracy"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert rows["greedy"]["ties"] == 1 and rows["greedy"]["strict_accuracy"] == 0.25
    assert rows["voting@2"]["accuracy"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert results["breakdown"]["by_source"]["voting@2"]["S/a"]["accuracy"] == 1.0
    assert results["breakdown"]["by_source"]["voting@2"]["S/b"]["n"] == 2
    assert results["judgments"]["sampled_judgments"] == 6 and results["judgments"]["sampled_valid"] == 4
    assert results["items"]["chance_accuracy"] == 0.5
    assert results["notes"] == []
    with_meta = build_results(records, ReportSpec(ks=(1, 2), k_meta_specs=("half",), resamples=100))
    assert "no Meta RM" in with_meta["notes"][0] and all(r["method"] != "metarm" for r in with_meta["rows"])
