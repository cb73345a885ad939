"""Benchmarks in their published formats, recognised by the registry (formats/registry.py), read into normalized
item dicts. Detection cannot guess: the first row must fit one entry strictly, and every later row must keep that
shape; anything else is a FormatError naming the candidates, the line and `--format`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.evaluation.formats.readers import FormatError, read_rows
from server.evaluation.formats.registry import BENCHMARKS, REGISTRY, Benchmark, fits

__all__ = ["FORMATS", "FormatError", "accepted", "detect", "load_benchmark"]

FORMATS: tuple[str, ...] = tuple(b.name for b in BENCHMARKS)


def accepted() -> str:
    return ", ".join(FORMATS)


def _where(line: int | None, index: int) -> tuple[int | None, str | None]:
    """A jsonl row is named by its line; a row of a JSON list by its position (`row 3`, counting from 1)."""
    return (line, None) if line is not None else (None, f"row {index + 1}")


def _fields(row: Any) -> str:
    return str(sorted(row)[:12]) if isinstance(row, dict) else type(row).__name__


def detect(row: Any) -> str:
    """The one entry the row fits strictly; ValueError naming the candidates otherwise."""
    strict, loose = fits(row)
    if len(strict) == 1:
        return strict[0]
    if len(strict) > 1:
        raise ValueError(f"the row fits several formats: {', '.join(strict)}; pass --format NAME to choose one")
    if loose:
        force = f"--format {loose[0]}" if len(loose) == 1 else f"--format NAME (one of {', '.join(loose)})"
        raise ValueError(
            f"the row resembles {' or '.join(loose)} but lacks its distinguishing fields (fields: {_fields(row)}); "
            f"pass {force} if that is what it is"
        )
    raise ValueError(
        f"not a known benchmark format (fields: {_fields(row)}); accepted: {accepted()} (--format to force)"
    )


def _shape_change(entry: Benchmark, row: Any, first: str) -> str | None:
    """Why a later row does not have the first row's shape, or None if it does."""
    if not isinstance(row, dict):
        return f"expected an object, got {type(row).__name__}"
    missing = [f for f in entry.fields if f not in row]
    strict, _ = fits(row)
    if not missing and entry.fit(row) is not None and (not strict or entry.name in strict):
        return None
    parts = [f"this row reads as {' or '.join(strict)}"] if strict and entry.name not in strict else []
    if missing:
        parts.append(f"missing field {missing[0]!r} of {entry.name}")
    now = "; ".join(parts) or f"this row does not fit {entry.name} (fields: {_fields(row)})"
    return f"the rows change shape here: {now} (the file's first row, {first}, reads as {entry.name})"


def load_benchmark(path: Path, fmt: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Normalized items of a benchmark file (or Hugging Face dataset name) and the format they were read as."""
    name = str(path)
    rows = read_rows(path)
    if not rows:
        raise FormatError(name, "no items")
    if fmt is not None and fmt not in REGISTRY:
        raise FormatError(name, f"unknown format {fmt!r}; accepted: {accepted()}")
    line, first = rows[0]
    first_at = f"line {line}" if line is not None else "row 1"
    forced = fmt is not None
    if fmt is None:
        try:
            fmt = detect(first)
        except ValueError as exc:
            where, label = _where(line, 0)
            raise FormatError(name, _msg(label, str(exc)), line=where) from None
    entry = REGISTRY[fmt]
    items: list[dict[str, Any]] = []
    for index, (line, row) in enumerate(rows):
        where, label = _where(line, index)
        change = None if index == 0 or forced else _shape_change(entry, row, first_at)
        if change is not None:
            raise FormatError(name, _msg(label, change), line=where)
        try:
            if not isinstance(row, dict):
                raise ValueError(f"expected an object, got {type(row).__name__}")
            items.extend(entry.convert(row, index, path.name))
        except KeyError as exc:
            raise FormatError(name, _msg(label, f"missing field {exc.args[0]!r} for format {fmt}"), line=where) from exc
        except (TypeError, ValueError) as exc:
            raise FormatError(name, _msg(label, f"{exc} (format {fmt})"), line=where) from exc
    return items, fmt


def _msg(label: str | None, text: str) -> str:
    return f"{label}: {text}" if label else text
