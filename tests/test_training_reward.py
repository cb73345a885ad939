"""The SPCT rule reward (+1 correct, -1 otherwise): a table of judgments and exploits, and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meta_rm.labels import is_correct
from server.training.reward import (
    CORRECT,
    WRONG,
    compute_score,
    has_hint,
    hint_text,
    judgment_correct,
    rule_reward,
    well_formed,
)
from voting import map_to_caller


def judgment(
    scores: str, criteria: str = "Correctness (60%), clarity (40%).", analysis: str = "Response 1 is right."
) -> str:
    return f"Specific Criteria: {criteria}\nAnalysis: {analysis}\nScores: \\boxed{{{scores}}}"


REWARD_CASES = [
    # (judgment text, responses, label in the shown order, reward)
    (judgment("9, 2"), 2, 0, CORRECT),
    (judgment("2, 9"), 2, 1, CORRECT),
    (judgment("2, 9"), 2, 0, WRONG),
    (judgment("7, 9, 3"), 3, 1, CORRECT),
    (judgment("9，2"), 2, 0, CORRECT),  # the full-width comma the parser takes
    (judgment("7"), 1, 7, CORRECT),  # n = 1: the score equals the label
    (judgment("6"), 1, 7, WRONG),
    ("", 2, 0, WRONG),  # empty text
    ("   \n", 2, 0, WRONG),
    ("Scores: \\boxed{9, 2}", 2, 0, WRONG),  # a bare box, no principles or critique
    (
        "Specific Criteria: \\boxed{9, 2}\nAnalysis: Response 1 is right.\nScores: 9, 2",
        2,
        0,
        WRONG,
    ),  # box only in the principles
    ("Specific Criteria: \\boxed{9, 2}\nAnalysis: Response 1 is right.", 2, 0, WRONG),
    (judgment("9, 2") + "\n" + "Scores: \\boxed{9, 2}", 2, 0, WRONG),  # duplicate score boxes
    (judgment("2, 9") + "\nScores: \\boxed{9, 2}", 2, 0, WRONG),  # hedging: a second score line
    (judgment("9, 2") + " and \\boxed{1, 1}", 2, 0, WRONG),  # a later box than the score line
    (judgment("9"), 2, 0, WRONG),  # wrong count
    (judgment("9, 2, 1"), 2, 0, WRONG),
    (judgment("11, 2"), 2, 0, WRONG),  # out of range
    (judgment("9, 0"), 2, 0, WRONG),
    (judgment("9.5, 2"), 2, 0, WRONG),  # not an integer
    (judgment("9, 9"), 2, 0, WRONG),  # a tie at the top
    (judgment("9, 9, 2"), 3, 0, WRONG),
    (judgment("9, 2", analysis="The best response is: Response 1, as the hint says."), 2, 0, WRONG),  # repeats the hint
    ("Specific Criteria: x\nAnalysis: y\nScores: \\boxed{9, 2", 2, 0, WRONG),  # unclosed box
    (judgment("9, 2", analysis="Response 1 shows \\boxed{5} as the answer."), 2, 0, CORRECT),  # a quoted math box
]


@pytest.mark.parametrize(("text", "n", "label", "reward"), REWARD_CASES)
def test_rule_reward_table(text: str, n: int, label: int, reward: float) -> None:
    assert rule_reward(text, n, label) == reward


def test_label_outside_the_responses_is_an_error() -> None:
    with pytest.raises(ValueError, match="label 2"):
        rule_reward(judgment("9, 2"), 2, 2)
    with pytest.raises(ValueError, match="at least one"):
        rule_reward(judgment("9"), 0, 0)


def test_hint_text_and_detection() -> None:
    assert hint_text(0) == "The best response is: Response 1"
    assert has_hint("Now judge.\n\n" + hint_text(2)) and not has_hint(judgment("9, 2"))


score = st.integers(1, 10)


@st.composite
def scored_items(draw: st.DrawFn) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    """Scores in the shown order, the caller's label, and a shown order."""
    n = draw(st.integers(2, 5))
    scores = tuple(draw(st.lists(score, min_size=n, max_size=n)))
    order = tuple(draw(st.permutations(range(n))))
    return scores, draw(st.integers(0, n - 1)), order


@given(scored_items())
def test_reward_is_the_label_rule_on_well_formed_judgments(case: tuple[tuple[int, ...], int, tuple[int, ...]]) -> None:
    scores, label, order = case
    text = judgment(", ".join(map(str, scores)))
    caller = map_to_caller(scores, order)
    assert judgment_correct(text, order, label) is is_correct(caller, label)
    # the same judgment rated in the shown order: the label is where the labelled response was shown
    assert rule_reward(text, len(order), order.index(label)) == (CORRECT if is_correct(caller, label) else WRONG)


@given(scored_items(), st.text(max_size=40))
def test_a_second_score_line_is_always_wrong(case: tuple[tuple[int, ...], int, tuple[int, ...]], junk: str) -> None:
    scores, label, order = case
    text = judgment(", ".join(map(str, scores))) + junk + "\nScores: \\boxed{" + ", ".join(map(str, scores)) + "}"
    assert rule_reward(text, len(order), label) == WRONG


@given(st.text(max_size=300), st.integers(1, 4), st.integers(0, 3))
def test_any_text_gets_plus_or_minus_one(text: str, n: int, label: int) -> None:
    label = min(label, n - 1) if n > 1 else label + 1
    reward = rule_reward(text, n, label)
    assert reward in (CORRECT, WRONG)
    if reward == CORRECT:
        assert well_formed(text) and not has_hint(text)


@given(scored_items())
def test_a_tie_at_the_top_is_always_wrong(case: tuple[tuple[int, ...], int, tuple[int, ...]]) -> None:
    scores, label, _ = case
    tied = list(scores)
    other = (label + 1) % len(tied)
    tied[other] = tied[label]
    assert rule_reward(judgment(", ".join(map(str, tied))), len(tied), label) == WRONG


@pytest.mark.parametrize("truth", [{"n": 2, "label": 0}, '{"n": 2, "label": 0}'])
def test_verl_compute_score_is_the_rule_reward(truth: object) -> None:
    assert compute_score("llmbar", judgment("9, 2"), truth) == CORRECT
    assert compute_score("llmbar", judgment("2, 9"), truth) == WRONG
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("llmbar", judgment("9, 2"), {"label": 0})
