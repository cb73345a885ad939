"""Read benchmark rows from a local file (json, jsonl, parquet) or a Hugging Face dataset name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class FormatError(ValueError):
    """A benchmark file that cannot be read or converted: which file, which line or field, and why."""

    def __init__(self, source: str, message: str, *, line: int | None = None) -> None:
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source, self.line = source, line


def read_rows(path: Path) -> list[tuple[int | None, Any]]:
    """Rows of a file or dataset as (line number or None, row); a JSON file may hold a list or a dict of lists."""
    if path.is_file():
        return _read_file(path)
    name = str(path)
    if path.exists():
        raise FormatError(name, "not a file")
    if name.count("/") == 1 and not name.startswith((".", "/")) and path.suffix == "":
        return _read_hub(name)
    raise FormatError(name, "no such file (pass a json, jsonl or parquet file, or a Hugging Face dataset name)")


def _read_file(path: Path) -> list[tuple[int | None, Any]]:
    name = str(path)
    if path.suffix == ".parquet":
        return _read_parquet(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(name, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    stripped = text.lstrip()
    if not stripped:
        raise FormatError(name, "the file is empty")
    if stripped[0] == "[" or (stripped[0] == "{" and path.suffix == ".json"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if path.suffix == ".json" or stripped[0] == "[":
                raise FormatError(name, f"invalid JSON: {exc.msg}", line=exc.lineno) from exc
        else:
            return [(None, row) for row in _json_rows(doc, name)]
    rows: list[tuple[int | None, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise FormatError(name, f"invalid JSON: {exc.msg} (column {exc.colno})", line=number) from exc
    return rows


def _json_rows(doc: Any, name: str) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) == 1:
            return list(lists[0])
        return [doc]
    raise FormatError(name, f"expected a JSON list of objects, got {type(doc).__name__}")


def _read_parquet(path: Path) -> list[tuple[int | None, Any]]:
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise FormatError(str(path), "reading parquet needs pyarrow (pip install pyarrow), or pass json/jsonl") from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for broken files
        raise FormatError(str(path), f"not a readable parquet file ({exc})") from exc
    return [(number, row) for number, row in enumerate(table.to_pylist(), start=1)]


def _read_hub(name: str) -> list[tuple[int | None, Any]]:
    try:
        import datasets  # noqa: PLC0415 - optional and slow to import
    except ImportError as exc:
        raise FormatError(
            name, "not a local file, and reading a Hugging Face dataset needs `datasets`; pass a downloaded file"
        ) from exc
    try:
        loaded = datasets.load_dataset(name)
    except Exception as exc:  # offline, unknown name, gated: all end the same way
        raise FormatError(
            name, f"could not load it from the Hugging Face hub ({type(exc).__name__}); pass a downloaded file"
        ) from exc
    rows: list[tuple[int | None, Any]] = []
    for split in loaded.values():
        rows.extend((None, dict(row)) for row in split)
    return rows
