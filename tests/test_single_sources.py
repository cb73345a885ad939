"""Shared single sources: the model-folder preparation (once, atomic, failure-clean) and the item skip rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meta_rm.model_folder import DONE_MARKER, prepare_folder
from server.core.items import (
    SKIP_AMBIGUOUS,
    SKIP_IDENTICAL,
    SKIP_MALFORMED,
    SKIP_SINGLE,
    SKIP_TIE,
    SKIP_TOO_LONG,
    skip_reason,
)


def test_prepares_once_then_reuses(tmp_path: Path) -> None:
    calls: list[Path] = []

    def write(folder: Path) -> None:
        calls.append(folder)
        (folder / "config.json").write_text("{}")

    target = tmp_path / "model"
    assert prepare_folder(target, write) == target
    assert prepare_folder(target, write) == target
    assert len(calls) == 1 and calls[0] != target  # written beside the target, then renamed
    assert (target / "config.json").is_file() and (target / DONE_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_write_leaves_nothing_and_is_redone(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise RuntimeError("disk full")

    target = tmp_path / "model"
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_folder(target, broken)
    assert list(tmp_path.iterdir()) == []
    prepare_folder(target, lambda folder: None if (folder / "w").write_text("ok") else None)
    assert (target / "w").read_text() == "ok"


def test_a_rival_that_finishes_first_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def rival_finishes_first(folder: Path) -> None:
        (folder / "mine").write_text("mine")
        target.mkdir()
        (target / "theirs").write_text("theirs")
        (target / DONE_MARKER).write_text("ok\n")

    prepare_folder(target, rival_finishes_first)
    assert sorted(p.name for p in target.iterdir()) == [DONE_MARKER, "theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    ("raw", "meta_rule", "accuracy_rule"),
    [
        ({"prompt": "q", "responses": ["a"], "label": 7}, None, SKIP_SINGLE),
        ({"prompt": "q", "responses": ["a", "a"], "label": 0}, None, SKIP_IDENTICAL),
        ({"prompt": "q", "responses": ["a", "b"], "label": 2}, SKIP_MALFORMED, SKIP_MALFORMED),
        (
            {"prompt": [{"role": "assistant", "content": "x"}], "responses": ["a", "b"], "label": 0},
            SKIP_MALFORMED,
            SKIP_MALFORMED,
        ),
        ({"prompt": "q", "responses": ["a", "b"], "label": None}, SKIP_TIE, SKIP_TIE),
        (
            {"prompt": "q", "responses": ["a", "b"], "label": 0, "meta": {"label_ambiguous": True}},
            SKIP_AMBIGUOUS,
            SKIP_AMBIGUOUS,
        ),
        ({"prompt": "q", "responses": ["a", "bb"], "label": 1}, None, None),
    ],
)
def test_shared_skip_rules(raw: dict[str, Any], meta_rule: str | None, accuracy_rule: str | None) -> None:
    """One reader, two documented rule sets: Meta RM data keeps single responses; accuracy needs two distinct."""
    assert skip_reason(raw) == meta_rule
    assert skip_reason(raw, for_accuracy=True) == accuracy_rule
    assert skip_reason(raw, 3, for_accuracy=True) == (SKIP_TOO_LONG if accuracy_rule is None else accuracy_rule)
