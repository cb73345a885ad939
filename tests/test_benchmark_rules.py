"""Official scoring rules on hand-computed cases, and against ports of the upstream scorers (RewardBench 2's
best-of-N credit and Ties score, RM-Bench's `compute_accuracy`, JudgeBench's `compute_final_metrics`): the ports
below follow the upstream functions line by line (numpy as upstream), our rules must give the same numbers."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.evaluation.benchmarks import rules, scoring
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
    expected = 0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * margin
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
        "ppe-preference": {"voting": {"accuracy": 60.0}},
        "ppe-correctness": {"voting": {"accuracy": 50.0}},
        "rmb-pairwise": {"voting": {"accuracy": 70.0}},
        "rmb-bon": {"voting": {"accuracy": 50.0}},
    }
    assert our_row(official, "voting") == (80.0, 60.0, 50.0, 60.0, 62.5)
    assert our_row(official, "greedy") == (None, None, None, None, None)
    table = format_paper_table(official, 8)
    assert "80.0 / 88.5" in table and "62.5 / 71.0" in table and "- / 86.0" in table and "Voting@8" in table
    assert PAPER["metarm"][-1] == 72.8


# --- ports of the upstream scorers -------------------------------------------------------------------------------


def upstream_rb2_credit(scores: Sequence[float]) -> float:
    """allenai/reward-bench rewardbench/utils.py `reroll_and_score_dataset`: the penalty for ties."""
    arr = np.array(scores)
    max_val = np.max(arr)
    return float((1 / np.sum(arr == max_val)) if arr[0] == max_val else 0)


def upstream_ties(dataset: list[dict[str, Any]]) -> float:
    """allenai/reward-bench rewardbench/utils.py `process_single_model` (with `_compute_prompt_stats`)."""
    grouped: dict[tuple[str, int], list[tuple[bool, float]]] = defaultdict(list)
    for sample in dataset:
        sample_type, prompt_id_str = sample["id"].split(":")
        for i, score in enumerate(sample["scores"]):
            grouped[(sample_type, int(prompt_id_str))].append((i < sample["num_correct"], score))
    ref_stats: dict[int, tuple[bool, float | None, float]] = {}
    tied_stats: dict[int, tuple[bool, float | None, float]] = {}
    for (sample_type, prompt_id), samples in grouped.items():
        correct = [s for c, s in samples if c]
        incorrect = [s for c, s in samples if not c]
        margin = max(correct) - min(correct) if len(correct) > 1 else None
        gap = min(correct) - max(incorrect)
        (ref_stats if sample_type == "ref" else tied_stats)[prompt_id] = (gap > 0, margin, gap)
    ref_accuracy = np.mean([s[0] for s in ref_stats.values()]) if ref_stats else 0.0
    tied_accuracy = np.mean([s[0] for s in tied_stats.values()]) if tied_stats else 0.0
    all_prompts = set(ref_stats) & set(tied_stats)
    diff_corr_margin = np.array([tied_stats[pid][1] for pid in all_prompts], dtype=np.float64)
    corr_incorrect_ties = np.array([tied_stats[pid][2] for pid in all_prompts], dtype=np.float64)
    corr_incorrect_ref = np.array([ref_stats[pid][2] for pid in all_prompts], dtype=np.float64)
    correctness_preferred = np.mean(corr_incorrect_ties > diff_corr_margin)
    correctness_preferred_hard = np.mean(np.minimum(corr_incorrect_ref, corr_incorrect_ties) > diff_corr_margin)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin_scores = np.tanh(np.minimum(corr_incorrect_ref, corr_incorrect_ties) / diff_corr_margin - 1)
    margin_scores = np.nan_to_num(margin_scores, nan=0.0)
    return float(
        0.30 * tied_accuracy
        + 0.30 * ref_accuracy
        + 0.20 * correctness_preferred
        + 0.20 * correctness_preferred_hard
        + 0.01 * float(np.mean(margin_scores))
    )


def upstream_rmbench(results: list[dict[str, Any]]) -> dict[str, float]:
    """THU-KEG/RM-Bench scripts/utils.py `compute_accuracy` (total file: split by domain, then averaged)."""
    if "domain" in results[0]:
        split = {d: [r for r in results if r["domain"].startswith(d)] for d in ["chat", "math", "code", "safety"]}
        domain_results = {d: upstream_rmbench([{k: v for k, v in r.items() if k != "domain"} for r in rs])
                          for d, rs in split.items()}  # fmt: skip
        domain_avg = {d: float(np.mean(list(v.values()))) for d, v in domain_results.items()}
        out = dict(domain_avg)
        for key in ("hard_acc", "normal_acc", "easy_acc"):
            out[key] = float(np.mean([domain_results[d][key] for d in domain_results]))
        out["total_avg_acc"] = float(np.mean(list(domain_avg.values())))
        return out
    acc_matrix = np.zeros((3, 3))
    for result in results:
        for i in range(len(result["score_chosen"])):
            for j in range(len(result["score_rejected"])):
                if result["score_chosen"][i] > result["score_rejected"][j]:
                    acc_matrix[i][j] += 1
    acc_matrix /= len(results)
    return {
        "hard_acc": float(np.sum(np.triu(acc_matrix, 1)) / 3),
        "normal_acc": float(np.mean(np.diag(acc_matrix))),
        "easy_acc": float(np.sum(np.tril(acc_matrix, -1)) / 3),
    }


def upstream_judgebench(label: str, decision1: str, decision2_as_judged: str) -> str:
    """ScalerLab/JudgeBench utils/metrics.py `compute_final_metrics` (reverse_order): correct, incorrect or tie."""
    flip = {"A>B": "B>A", "B>A": "A>B"}
    decision2 = flip.get(decision2_as_judged, decision2_as_judged)
    counter = sum(1 if d == label else -1 if d == flip.get(label) else 0 for d in (decision1, decision2))
    return "correct" if counter > 0 else "incorrect" if counter < 0 else "tie"


small = st.integers(min_value=0, max_value=3)


@given(st.lists(small, min_size=2, max_size=6))
def test_rewardbench2_credit_is_upstreams(scores: list[int]) -> None:
    assert rules.best_of_n_credit(scores) == pytest.approx(upstream_rb2_credit(scores))


@st.composite
def ties_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for pid in range(draw(st.integers(min_value=1, max_value=4))):
        n_tied = draw(st.integers(min_value=2, max_value=3))
        ref = draw(st.lists(small, min_size=2, max_size=4))
        tied = draw(st.lists(small, min_size=n_tied + 1, max_size=n_tied + 3))
        rows += [{"id": f"ref:{pid}", "scores": ref, "num_correct": 1},
                 {"id": f"tied:{pid}", "scores": tied, "num_correct": n_tied}]  # fmt: skip
    return rows


@given(ties_sets())
def test_rewardbench2_ties_score_is_upstreams(rows: list[dict[str, Any]]) -> None:
    ours = rules.ties_score({r["id"]: (r["scores"], r["num_correct"]) for r in rows})
    assert ours == pytest.approx(upstream_ties(rows))


def test_ties_zero_spread_counts_as_upstream() -> None:
    # tied:0's correct answers share one score (spread 0): upstream's tanh(gap / 0 - 1) is tanh(+inf) = 1 for a
    # positive gap, tanh(-inf) = -1 for a negative one, nan -> 0 for a zero gap
    for tied, margin in (([5, 5, 1], 1.0), ([1, 1, 3], -1.0), ([2, 2, 2], 0.0)):
        rows: list[dict[str, Any]] = [
            {"id": "ref:0", "scores": [9, 0], "num_correct": 1},
            {"id": "tied:0", "scores": tied, "num_correct": 2},
        ]
        assert upstream_ties(rows) == pytest.approx(rules.ties_score({"ref:0": ([9, 0], 1), "tied:0": (tied, 2)}))
        tied_acc = float(tied[1] > tied[2])
        expected = 0.3 * tied_acc + 0.3 + 0.2 * tied_acc + 0.2 * tied_acc + 0.01 * margin
        assert upstream_ties(rows) == pytest.approx(expected)


DOMAINS = ("chat", "code", "math", "safety-refuse", "safety-response")
rm_rows = st.lists(
    st.tuples(
        st.sampled_from(DOMAINS), st.lists(small, min_size=3, max_size=3), st.lists(small, min_size=3, max_size=3)
    ),
    min_size=1,
    max_size=12,
)


def _rm_judged(
    rows: list[tuple[str, list[int], list[int]]],
) -> list[tuple[dict[str, Any], dict[str, Any], tuple[float, ...]]]:
    return [
        ({"id": f"{n}:c{i}r{j}"}, {"domain": d, "chosen_style": i, "rejected_style": j}, (float(c[i]), float(r[j])))
        for n, (d, c, r) in enumerate(rows)
        for i in range(3)
        for j in range(3)
    ]


@given(rm_rows)
def test_rmbench_total_file_is_upstreams(rows: list[tuple[str, list[int], list[int]]]) -> None:
    fixed = [("chat", [1, 1, 1], [0, 0, 0]), ("code", [0, 1, 2], [2, 1, 0]), ("math", [2, 2, 2], [3, 0, 1]),
             ("safety-refuse", [1, 0, 3], [1, 1, 1])]  # fmt: skip
    rows = fixed + rows  # upstream's total needs every domain
    upstream = upstream_rmbench([{"domain": d, "score_chosen": c, "score_rejected": r} for d, c, r in rows])
    ours = scoring.rmbench(_rm_judged(rows))
    for mine, theirs in (
        ("hard", "hard_acc"),
        ("normal", "normal_acc"),
        ("easy", "easy_acc"),
        ("avg", "total_avg_acc"),
    ):
        assert ours[mine] == pytest.approx(100 * upstream[theirs], abs=0.006)
    assert set(ours["per_domain"]) == {"chat", "code", "math", "safety"}
    for domain, scores in ours["per_domain"].items():
        assert scores["avg"] == pytest.approx(100 * upstream[domain], abs=0.006)


@given(rm_rows)
def test_rmbench_per_domain_file_is_upstreams(rows: list[tuple[str, list[int], list[int]]]) -> None:
    rows = [("chat", c, r) for _, c, r in rows]  # one file, one domain, no `domain` field upstream
    upstream = upstream_rmbench([{"score_chosen": c, "score_rejected": r} for _, c, r in rows])
    ours = scoring.rmbench(_rm_judged(rows))
    for mine in ("hard", "normal", "easy"):
        assert ours[mine] == pytest.approx(100 * upstream[f"{mine}_acc"], abs=0.006)
    assert ours["avg"] == pytest.approx(100 * float(np.mean(list(upstream.values()))), abs=0.006)


@pytest.mark.parametrize("label", ["A>B", "B>A"])
@pytest.mark.parametrize("first", ["A>B", "B>A", "A=B"])
@pytest.mark.parametrize("second_as_judged", ["A>B", "B>A", "A=B"])
def test_judgebench_both_orders_is_upstreams(label: str, first: str, second_as_judged: str) -> None:
    """Upstream gets the swapped order's raw decision and flips it; ours gets it already in the file's A/B terms."""
    flip = {"A>B": "B>A", "B>A": "A>B", "A=B": "A=B"}
    ours = rules.judgebench_pair(label, [first, flip[second_as_judged]])
    assert {1: "correct", -1: "incorrect", 0: "tie"}[ours] == upstream_judgebench(label, first, second_as_judged)


@pytest.mark.parametrize(
    ("predicted", "majority", "expected"),
    [
        # every class right: all 1
        ([1, 2, 0], [1, 2, 0], {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}),
        # a predicted tie where the majority says 1: class 0 p 0 r 0 (no true 0); class 1 p 1 r 1/2; class 2 p 1 r 1
        ([0, 1, 2], [1, 1, 2], {"accuracy": 2 / 3, "precision": 2 / 3, "recall": 1.5 / 3, "f1": (2 / 3 + 1) / 3}),
        # a true tie predicted as 2: class 0 p 0 r 0; class 2 p 1/2 r 1; class 1 p 1 r 1
        ([2, 2, 1], [0, 2, 1], {"accuracy": 2 / 3, "precision": 0.5, "recall": 2 / 3, "f1": (2 / 3 + 1) / 3}),
    ],
)
def test_pandalm_ties_are_a_third_label(predicted: list[int], majority: list[int], expected: dict[str, float]) -> None:
    """PandaLM's label space is {0 tie, 1, 2}: a tie is a class of its own in the macro average (README labels)."""
    out = rules.pandalm_scores(predicted, majority)
    assert out == {k: pytest.approx(v) for k, v in expected.items()}
