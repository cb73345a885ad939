"""Check benchmark files as published: each is detected as the expected format and converted without loss.

python deploy/verify_benchmarks.py --expect rm-bench RM-Bench/data/*_filtered.json
python deploy/verify_benchmarks.py --expect rmb-pairwise RMB/RMB_dataset/Pairwise_set --json out.json

Folders are searched for .json / .jsonl files. Per file: the source rows, the detected format, the converted items
and the items expected from the rows (9 per RM-Bench row, else 1). Exit 1 if any file fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from server.evaluation.formats import FORMATS, FormatError, load_benchmark
from server.evaluation.formats.readers import read_rows

ITEMS_PER_ROW = {"rm-bench": 9}


def files_of(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file()))
        else:
            out.append(path)
    return out


def check(path: Path, expect: str | None) -> dict[str, Any]:
    """One file's row: rows, detected format, items, expected items, ok and the error if any."""
    row: dict[str, Any] = {"file": str(path), "rows": None, "format": None, "items": None, "expected": None}
    try:
        rows = len(read_rows(path))
        row["rows"] = rows
        items, found = load_benchmark(path)
    except FormatError as exc:
        return {**row, "ok": False, "error": str(exc)}
    expected = rows * ITEMS_PER_ROW.get(found, 1)
    ok = (expect is None or found == expect) and len(items) == expected
    return {**row, "format": found, "items": len(items), "expected": expected, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--expect", choices=FORMATS, help="the format every file must be detected as")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    results = [check(p, args.expect) for p in files_of(args.paths)]
    print(f"{'ok':<4}{'format':<16}{'rows':>7}{'items':>8}{'expected':>10}  file")
    for r in results:
        print(
            f"{'yes' if r['ok'] else 'NO':<4}{r['format'] or '-':<16}{r['rows'] or 0:>7}{r['items'] or 0:>8}"
            f"{r['expected'] or 0:>10}  {r['file']}" + (f"\n    {r['error']}" if "error" in r else "")
        )
    good = sum(r["ok"] for r in results)
    print(f"{good} of {len(results)} files detected and converted without loss")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
