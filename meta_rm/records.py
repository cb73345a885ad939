"""Labelled judgments on disk (JSONL, one judgment a line): what `build-data` writes and `train` reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from meta_rm.protocol import MetaRMInput


@dataclass(frozen=True, slots=True)
class JudgmentRecord:
    """One sampled judgment of one labelled item. `responses` and `scores` are in the dataset's order;
    `order[pos]` is the dataset index of the response the judgment showed at position `pos`."""

    item_id: str
    source: str
    conversation: str
    responses: tuple[str, ...]
    label: int
    order: tuple[int, ...]
    text: str
    scores: tuple[int, ...] | None
    correct: bool
    sample: int = 0
    seed: int = 0
    model: str = ""
    error: str | None = None

    def to_input(self) -> MetaRMInput:
        """What the Meta RM rates: the responses in the order this judgment saw them."""
        return MetaRMInput(self.conversation, tuple(self.responses[j] for j in self.order), self.text)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> JudgmentRecord:
        known = {f.name for f in fields(cls)}
        missing = {"item_id", "conversation", "responses", "label", "order", "text", "correct"} - data.keys()
        if missing:
            raise ValueError(f"a judgment record lacks {sorted(missing)}")
        values = {k: v for k, v in data.items() if k in known}
        values["responses"] = tuple(values["responses"])  # type: ignore[arg-type]
        values["order"] = tuple(values["order"])  # type: ignore[arg-type]
        if values.get("scores") is not None:
            values["scores"] = tuple(values["scores"])  # type: ignore[arg-type]
        values.setdefault("source", "")
        return cls(**values)  # type: ignore[arg-type]


def write_records(path: Path, records: Iterable[JudgmentRecord]) -> int:
    """Write records as JSONL (replacing the file); returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(rec.to_json() + "\n")
            count += 1
    return count


def read_records(path: Path) -> Iterator[JudgmentRecord]:
    """Read a JSONL file of judgment records; a bad line raises ValueError naming its line number."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield JudgmentRecord.from_dict(json.loads(line))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from exc
