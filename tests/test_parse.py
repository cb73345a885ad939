"""Score extraction: table-driven cases from docs/design.md ("The method") plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voting.parse import ParseError, parse_scores, split_judgment

CASES = [
    # (text, n, expected scores or the failure reason)
    ("Scores: \\boxed{8, 3}", 2, (8, 3)),
    ("Scores: \\boxed{10,1}", 2, (10, 1)),
    ("Scores: \\boxed{ 7 ， 9 }", 2, (7, 9)),  # full-width comma
    ("Scores: \\boxed{5}", 1, (5,)),
    ("first \\boxed{1, 1} then Scores: \\boxed{9, 2}", 2, (9, 2)),  # the last box wins
    ("Scores: \\boxed{4, 5, 6}", 3, (4, 5, 6)),
    ("Scores: \\boxed{08, 3}", 2, (8, 3)),
    ("Scores: 8, 3", 2, ParseError.NO_BOX),
    ("", 1, ParseError.NO_BOX),
    ("Scores: \\boxed{8, 3", 2, ParseError.UNCLOSED_BOX),
    ("Scores: \\boxed{}", 1, ParseError.EMPTY_BOX),
    ("Scores: \\boxed{  }", 2, ParseError.EMPTY_BOX),
    ("Scores: \\boxed{8, 3}", 3, ParseError.WRONG_COUNT),
    ("Scores: \\boxed{8, 3, 4}", 2, ParseError.WRONG_COUNT),
    ("Scores: \\boxed{8,}", 1, ParseError.WRONG_COUNT),
    ("Scores: \\boxed{8.5, 3}", 2, ParseError.NOT_INTEGER),
    ("Scores: \\boxed{eight, 3}", 2, ParseError.NOT_INTEGER),
    ("Scores: \\boxed{-1, 3}", 2, ParseError.NOT_INTEGER),
    ("Scores: \\boxed{8, }", 2, ParseError.NOT_INTEGER),
    ("Scores: \\boxed{\\text{8}}", 1, ParseError.NOT_INTEGER),
    ("Scores: \\boxed{0, 3}", 2, ParseError.OUT_OF_RANGE),
    ("Scores: \\boxed{11, 3}", 2, ParseError.OUT_OF_RANGE),
    ("good \\boxed{8, 3} but then \\boxed{8}", 2, ParseError.WRONG_COUNT),  # only the last box counts
]


@pytest.mark.parametrize(("text", "n", "expected"), CASES)
def test_parse_table(text: str, n: int, expected: tuple[int, ...] | ParseError) -> None:
    result = parse_scores(text, n)
    if isinstance(expected, ParseError):
        assert result.scores is None
        assert result.error is expected
        assert result.detail
    else:
        assert result.scores == expected
        assert result.error is None


@given(st.lists(st.integers(1, 10), min_size=1, max_size=16), st.sampled_from([",", "，", " , "]), st.text(max_size=40))
def test_roundtrip_any_valid_box(scores: list[int], sep: str, prefix: str) -> None:
    text = prefix.replace("\\boxed{", "") + "Scores: \\boxed{" + sep.join(map(str, scores)) + "}"
    assert parse_scores(text, len(scores)).scores == tuple(scores)


@given(st.lists(st.integers(-5, 20), min_size=1, max_size=8))
def test_out_of_range_is_never_valid(scores: list[int]) -> None:
    result = parse_scores("\\boxed{" + ", ".join(map(str, scores)) + "}", len(scores))
    assert (result.scores is not None) == all(1 <= s <= 10 for s in scores)


@given(st.text(max_size=200), st.integers(1, 6))
def test_parse_never_raises(text: str, n: int) -> None:
    result = parse_scores(text, n)
    assert (result.scores is None) == (result.error is not None)
    if result.scores is not None:
        assert len(result.scores) == n


@pytest.mark.parametrize(
    ("text", "principles", "critique"),
    [
        (
            "Specific Criteria: accuracy 60%.\nAnalysis: R1 is right.\nScores: \\boxed{9, 2}",
            "accuracy 60%.",
            "R1 is right.",
        ),
        ("Specific Criteria: a\nb\nAnalysis: multi\nline\nScores: \\boxed{1}", "a\nb", "multi\nline"),
        ("Analysis only \\boxed{3}", "", ""),
        ("Specific Criteria: c\nAnalysis: d", "c", "d"),
    ],
)
def test_split_judgment(text: str, principles: str, critique: str) -> None:
    assert split_judgment(text) == (principles, critique)


def test_split_judgment_is_linear_on_a_long_unterminated_section() -> None:
    """The section split was a lazy regex, quadratic on `Specific Criteria:` + blanks without `Analysis:`."""
    import time

    def seconds(n: int) -> float:
        text = "Specific Criteria:" + " " * n + "x"
        start = time.perf_counter()
        assert split_judgment(text) == ("", "")
        return time.perf_counter() - start

    small, large = min(seconds(4_000) for _ in range(3)), min(seconds(32_000) for _ in range(3))
    assert large / max(small, 1e-5) < 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Specific Criteria: a b\nAnalysis: c d\nScores: \\boxed{1, 2}", ("a b", "c d")),
        ("Specific Criteria:\n a \nAnalysis:\n c \n\\boxed{3}", ("a", "c")),
        ("Specific Criteria: a\nAnalysis: c, no box\n", ("a", "c, no box")),
        ("Analysis: c\nSpecific Criteria: a", ("", "")),
        ("no sections", ("", "")),
    ],
)
def test_split_judgment_table(text: str, expected: tuple[str, str]) -> None:
    assert split_judgment(text) == expected
