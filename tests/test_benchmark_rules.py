"""Official scoring rules on hand-computed cases (RewardBench, RewardBench 2 Ties, RM-Bench, JudgeBench, PPE, PandaLM)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.evaluation.benchmarks import rules
from server.evaluation.benchmarks.official import source_order
from server.evaluation.benchmarks.paper import PAPER, format_paper_table, our_row


@pytest.mark.parametrize(
    ("rewards", "best", "expected"),
    [((9, 3), 0, True), ((3, 9), 0, False), ((5, 5), 0, False), ((2, 8, 1), 1, True), ((7, 7, 1, 2), 0, False)],
)
def test_beats_all_is_strict(rewards: tuple[int, ...], best: int, expected: bool) -> None:
    assert rules.beats_all(rewards, best) is expected


def test_rewardbench_sections_weight_subsets_by_their_counts() -> None:
    # Chat: (1.0*100 + 0.5*28) / 128; Safety: 0.0; Reasoning: math-prm counts 984 against one hep subset's 164
    acc = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "donotanswer": 0.0, "math-prm": 1.0, "hep-go": 0.0}
    out = rules.rewardbench_sections(acc)
    assert out["Chat"] == pytest.approx(114 / 128)
    assert out["Chat Hard"] is None and out["Safety"] == 0.0
    assert out["Reasoning"] == pytest.approx(984 / (984 + 164))
    assert out["Score"] == pytest.approx((114 / 128 + 0.0 + 984 / 1148) / 3)


def test_ties_prompt_stats() -> None:
    assert rules.ties_prompt_stats([8, 7, 9, 3, 4], 3) == (True, 2, 3)
    assert rules.ties_prompt_stats([8, 2, 5], 1) == (True, None, 3)
    assert rules.ties_prompt_stats([6, 2, 7], 2) == (False, 4, -5)


def test_ties_score_by_hand() -> None:
    # ref:1 accurate (gap 5), tied:1 accurate, spread 1, gap 2 -> preferred 1, hard min(5,2)=2 > 1 -> 1,
    # margin tanh(2/1 - 1); ref:2 wrong, tied:2 wrong (gap 2-7 = -5, spread 4; ref gap -3) -> 0, 0, tanh(-5/4 - 1)
    prompts = {
        "ref:1": ([9, 4, 3], 1), "tied:1": ([9, 8, 6], 2),
        "ref:2": ([2, 5], 1), "tied:2": ([6, 2, 7], 2),
    }  # fmt: skip
    margin = (math.tanh(1.0) + math.tanh(-2.25)) / 2
    expected = 0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * margin * 0.5
    assert rules.ties_score(prompts) == pytest.approx(expected)
    assert rules.ties_score({}) is None


def test_rmbench_matrix_splits_hard_normal_easy() -> None:
    # right only when the chosen response is at least as styled as the rejected one (i >= j)
    pairs = [(i, j, i >= j) for i in range(3) for j in range(3)]
    out = rules.rmbench_matrix(pairs)
    assert (out["hard"], out["normal"], out["easy"]) == (0.0, 1.0, 1.0)
    assert out["avg"] == pytest.approx(6 / 9)


@pytest.mark.parametrize(
    ("label", "decisions", "expected"),
    [
        ("A>B", ["A>B", "A>B"], 1), ("A>B", ["A>B", "A=B"], 1), ("A>B", ["A>B", "B>A"], 0),
        ("A>B", ["A=B", "A=B"], 0), ("B>A", ["A>B", "A=B"], -1), ("B>A", ["B>A"], 1),
    ],
)  # fmt: skip
def test_judgebench_both_orders_rule(label: str, decisions: list[str], expected: int) -> None:
    assert rules.judgebench_pair(label, decisions) == expected


def test_ppe_correctness_pairs_and_best_of_k() -> None:
    correct = [True, False, True, False]
    out = rules.ppe_correctness([9, 3, 5, 5], correct, None)  # pairs (0,1) 1, (0,3) 1, (2,1) 1, (2,3) tie 0.5
    assert out == {"accuracy": pytest.approx(3.5 / 4), "best_of_k": 1.0}
    out = rules.ppe_correctness([4, 8, 8, 1], correct, [[1, 0], [2, 3]])  # (1,0): wrong, (2,3): right
    assert out == {"accuracy": 0.5, "best_of_k": 0.5}  # the top two tie: one correct, one not


def test_pandalm_three_way_and_macro_scores() -> None:
    assert [rules.three_way(r) for r in [(9, 3), (3, 9), (5, 5)]] == [1, 2, 0]
    out = rules.pandalm_scores([1, 2, 0, 1], [1, 2, 1, 1])
    # class 0: p 0, r 0; class 1: p 1, r 2/3; class 2: p 1, r 1
    assert out["accuracy"] == 0.75
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx((2 / 3 + 1) / 3)
    assert out["f1"] == pytest.approx((0 + 0.8 + 1) / 3)


@given(st.permutations(list(range(5))))
def test_source_order_inverts_the_sent_permutation(perm: list[int]) -> None:
    source = (10.0, 20.0, 30.0, 40.0, 50.0)
    sent = [source[p] for p in perm]
    assert source_order(sent, perm) == source


def test_paper_table_puts_ours_beside_the_paper() -> None:
    official = {
        "rewardbench": {"voting": {"Score": 80.0}},
        "ppe_preference": {"voting": {"accuracy": 60.0}},
        "ppe_correctness": {"voting": {"accuracy": 50.0}},
        "rmb_pairwise": {"voting": {"accuracy": 70.0}},
        "rmb_bon": {"voting": {"accuracy": 50.0}},
    }
    assert our_row(official, "voting") == (80.0, 60.0, 50.0, 60.0, 62.5)
    assert our_row(official, "greedy") == (None, None, None, None, None)
    table = format_paper_table(official, 8)
    assert "80.0 / 88.5" in table and "62.5 / 71.0" in table and "- / 86.0" in table and "Voting@8" in table
    assert PAPER["metarm"][-1] == 72.8
