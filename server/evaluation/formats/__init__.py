"""Benchmarks in their published formats, detected by content, read into normalized item dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.evaluation.formats.converters import FORMATS, detect
from server.evaluation.formats.readers import FormatError, read_rows

__all__ = ["FORMATS", "FormatError", "accepted", "detect", "load_benchmark"]


def accepted() -> str:
    return ", ".join(FORMATS)


def load_benchmark(path: Path, fmt: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Normalized items of a benchmark file (or Hugging Face dataset name) and the format they were read as."""
    name = str(path)
    rows = read_rows(path)
    if not rows:
        raise FormatError(name, "no items")
    if fmt is not None and fmt not in FORMATS:
        raise FormatError(name, f"unknown format {fmt!r}; accepted: {accepted()}")
    line, first = rows[0]
    found = fmt or detect(first)
    if found is None:
        fields = sorted(first)[:12] if isinstance(first, dict) else type(first).__name__
        raise FormatError(
            name,
            f"not a known benchmark format (fields: {fields}); accepted: {accepted()} (--format to force)",
            line=line,
        )
    convert = FORMATS[found][0]
    items: list[dict[str, Any]] = []
    for index, (line, row) in enumerate(rows):
        where = line if line is not None else None
        label = f"item {index}" if line is None else None
        try:
            if not isinstance(row, dict):
                raise ValueError(f"expected an object, got {type(row).__name__}")
            items.extend(convert(row, index))
        except KeyError as exc:
            raise FormatError(
                name, _msg(label, f"missing field {exc.args[0]!r} for format {found}"), line=where
            ) from exc
        except (TypeError, ValueError) as exc:
            raise FormatError(name, _msg(label, f"{exc} (format {found})"), line=where) from exc
    return items, found


def _msg(label: str | None, text: str) -> str:
    return f"{label}: {text}" if label else text
