"""Pure Meta RM pieces: the label rule, the input text, records, splits, AUC, offline Voting@k vs MetaRM@k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meta_rm.evaluate import compare, item_best
from meta_rm.inputs import INSTRUCTION, encode, meta_rm_messages, plain_text, render
from meta_rm.labels import is_correct, label_judgment
from meta_rm.protocol import MetaRMInput
from meta_rm.records import JudgmentRecord, read_records, write_records
from meta_rm.train import accuracy, auc, split_by_item
from server.core.meta_data import item_seed, load_preference_items, parse_item, select_items
from voting import derive_seed

SAMPLE = Path(__file__).parent / "data" / "dev_sample.jsonl"

LABEL_CASES = [
    # (scores in the caller's order, label, correct?)
    ((8, 3), 0, True),
    ((3, 8), 0, False),
    ((3, 8), 1, True),
    ((5, 5), 0, False),  # a tie is not "strictly highest"
    ((9, 9, 2), 0, False),  # tied with another response
    ((2, 9, 3), 1, True),
    ((9, 8, 10), 0, False),
    ((1, 1, 1, 2), 3, True),
    ((7,), 7, True),  # n = 1: the score must equal the label
    ((7,), 6, False),
    ((10,), 10, True),
    (None, 0, False),  # unparseable
    (None, 7, False),
    ((), 0, False),
]


@pytest.mark.parametrize(("scores", "label", "expected"), LABEL_CASES)
def test_label_rule(scores: tuple[int, ...] | None, label: int, expected: bool) -> None:
    assert is_correct(scores, label) is expected


def test_label_outside_the_responses_is_an_error() -> None:
    with pytest.raises(ValueError, match="label 2"):
        is_correct((3, 4), 2)


@pytest.mark.parametrize(
    ("text", "order", "label", "expected"),
    [
        ("Scores: \\boxed{3, 8}", (1, 0), 0, True),  # shown swapped: caller scores (8, 3)
        ("Scores: \\boxed{3, 8}", (0, 1), 0, False),
        ("Scores: \\boxed{3，8}", (0, 1), 1, True),  # full-width comma
        ("\\boxed{1, 2} then \\boxed{9, 2}", (0, 1), 0, True),  # the last box counts
        ("no box at all", (0, 1), 0, False),
        ("Scores: \\boxed{8}", (0, 1), 0, False),  # wrong count
        ("Scores: \\boxed{11, 2}", (0, 1), 0, False),  # out of range
        ("Scores: \\boxed{6}", (0,), 6, True),
    ],
)
def test_label_judgment_text(text: str, order: tuple[int, ...], label: int, expected: bool) -> None:
    assert label_judgment(text, order, label) is expected


ITEM = MetaRMInput(
    "User: What is 2+2?", ("5", "4"), "Specific Criteria: math.\nAnalysis: 4 is right.\nScores: \\boxed{2, 9}"
)


def test_input_text_holds_query_responses_instruction_and_judgment() -> None:
    user, assistant = meta_rm_messages(ITEM)
    assert user["role"] == "user" and assistant == {"role": "assistant", "content": ITEM.judgment}
    text = user["content"]
    assert text.startswith("User: What is 2+2?") and text.endswith(INSTRUCTION)
    assert text.index("[The Begin of Response 1]\n5\n") < text.index("[The Begin of Response 2]\n4\n")
    assert plain_text(ITEM) == f"{text}\n\n{ITEM.judgment}"


def test_input_uses_the_chat_template_and_truncates_from_the_left(embedded_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model)
    text, special = render(ITEM, tok)
    assert not special and text.count("<|im_start|>") == 3 and ITEM.judgment in text  # system, user, assistant
    assert text.endswith("<|im_end|>\n")  # the head reads "\n", never the pad token <|im_end|>
    full = encode([ITEM], tok, 10_000)[0]
    assert full == tok(text, add_special_tokens=False)["input_ids"]
    assert encode([ITEM], tok, 12)[0] == full[-12:]
    tok.chat_template = None
    assert render(ITEM, tok) == (plain_text(ITEM), True)


def record(
    item: str, order: tuple[int, ...], scores: tuple[int, ...] | None, label: int = 0, seed: int = 1
) -> JudgmentRecord:
    return JudgmentRecord(
        item_id=item, source="test", conversation="User: q", responses=("a", "b"), label=label, order=order,
        text=f"judgment {item} {order} {scores}", scores=scores, correct=is_correct(scores, label), seed=seed,
    )  # fmt: skip


def test_records_round_trip_and_name_bad_lines(tmp_path: Path) -> None:
    recs = [record("x", (1, 0), (9, 2)), record("y", (0, 1), None)]
    path = tmp_path / "r.jsonl"
    assert write_records(path, recs) == 2
    assert list(read_records(path)) == recs
    assert recs[0].to_input().responses == ("b", "a")  # the order the judgment saw
    path.write_text(path.read_text() + json.dumps({"item_id": "z"}) + "\n")
    with pytest.raises(ValueError, match=r"r.jsonl:3: .*lacks"):
        list(read_records(path))


def test_split_by_item_keeps_items_whole() -> None:
    recs = [record(f"i{n}", (0, 1), (9, 2)) for n in range(10) for _ in range(4)]
    train, held = split_by_item(recs, 0.3, seed=0)
    assert len(held) == 12 and len(train) == 28
    assert not {r.item_id for r in train} & {r.item_id for r in held}
    assert split_by_item(recs, 0.3, seed=0) == (train, held)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([3.0, 2.0, 1.0, 0.0], [True, True, False, False], 1.0),
        ([0.0, 1.0, 2.0, 3.0], [True, True, False, False], 0.0),
        ([1.0, 1.0, 1.0, 1.0], [True, False, True, False], 0.5),
        ([2.0, 1.0, 1.0, 0.0], [True, True, False, False], 0.875),
    ],
)
def test_auc(scores: list[float], labels: list[bool], expected: float) -> None:
    assert auc(scores, labels) == pytest.approx(expected)


def test_accuracy_uses_the_sign() -> None:
    assert accuracy([1.0, -1.0, 0.5, -0.2], [True, False, False, False]) == 0.75


def test_meta_rm_selection_can_fix_a_wrong_vote() -> None:
    # item "x": two wrong judgments outvote one right one; the Meta RM rates the right one highest
    recs = [
        record("x", (0, 1), (2, 9)),
        record("x", (1, 0), (3, 8)),
        record("x", (0, 1), (10, 1)),
        record("x", (0, 1), None),
    ]
    meta = [0.1, -1.0, 2.0, 5.0]  # the unparseable judgment's rating is ignored
    assert item_best(recs, None, 0) == (1, False)  # rewards (15, 18)
    assert item_best(recs, meta, 1) == (0, False)  # only (10, 1) votes
    result = compare(recs, meta, k_meta=1)
    assert (result.items, result.voting_accuracy, result.meta_accuracy) == (1, 0.0, 1.0)
    assert result.k == 4 and result.auc == pytest.approx(1.0)  # the one correct judgment has the top rating
    assert compare([record("y", (0, 1), None)], [0.0]).items == 0  # no valid judgment: not counted


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"id": "a", "prompt": "q", "responses": ["x", "y"], "label": None}, "tie"),
        (
            {"id": "a", "prompt": "q", "responses": ["x", "y"], "label": 0, "meta": {"label_ambiguous": True}},
            "label_ambiguous",
        ),
        (
            {"id": "a", "prompt": "q", "responses": ["x", "x"], "label": 0, "meta": {"identical_responses": True}},
            "identical_responses",
        ),
        ({"id": "a", "prompt": "q", "responses": ["x", "y"], "label": 2}, "malformed"),
        (
            {"id": "a", "prompt": [{"role": "assistant", "content": "hi"}], "responses": ["x", "y"], "label": 0},
            "malformed",
        ),
    ],
)
def test_items_that_cannot_be_labelled_are_skipped(data: dict[str, object], reason: str) -> None:
    assert parse_item(data) == reason


def test_items_load_from_files_and_folders_and_select_disjoint_slices(tmp_path: Path) -> None:
    extra = [
        {
            "id": "multi",
            "prompt": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "and?"},
            ],
            "responses": ["a", "b"],
            "label": 1,
        },
        {"id": "tie", "prompt": "q", "responses": ["a", "b"], "label": None},
        {"id": "long", "prompt": "q" * 5000, "responses": ["a", "b"], "label": 0},
    ]
    (tmp_path / "extra.jsonl").write_text("".join(json.dumps(e) + "\n" for e in extra))
    items, report = load_preference_items([SAMPLE, tmp_path], max_chars=4000)
    assert report.kept == len(items) == 7 and report.skipped == {"tie": 1, "too_long": 1}
    multi = next(i for i in items if i.id == "multi")
    assert [m.role for m in multi.messages] == ["user", "assistant", "user"] and multi.label == 1
    first, second = select_items(items, seed=0, offset=0, limit=3), select_items(items, seed=0, offset=3, limit=3)
    assert len(first) == len(second) == 3 and not {i.id for i in first} & {i.id for i in second}
    assert select_items(items, seed=0, limit=3) == first
    assert [i.id for i in select_items(items, seed=1)] != [i.id for i in select_items(items, seed=0)]
    # An item's judging seed is the shared derivation of (run seed, item id): same id, same seed in every run.
    assert [item_seed(s, i.id) for s in (0, 1) for i in first] == [derive_seed(s, i.id) for s in (0, 1) for i in first]
    assert len({item_seed(0, i.id) for i in items}) == len(items)
