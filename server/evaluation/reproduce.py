"""The paper's table from an evaluation run: accuracy per benchmark beside DeepSeek-GRM-27B's published
numbers (docs/design.md, "The method"), with per-k judgment tokens and the share of judgments whose box was
completed (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BENCHMARKS = ("Reward Bench", "PPE-Pref", "PPE-Corr", "RMB")
# Liu et al. 2025 (arXiv 2504.02495), DeepSeek-GRM-27B: Reward Bench / PPE-Pref / PPE-Corr / RMB / Overall.
PAPER: dict[str, tuple[float, float, float, float, float]] = {
    "greedy": (86.0, 64.7, 59.8, 69.0, 69.9),
    "voting@32": (88.5, 65.3, 60.4, 69.7, 71.0),
    "metarm@32": (90.4, 67.2, 63.2, 70.3, 72.8),  # k_meta = 16 (k/2, the paper's default)
}
REFERENCES = "paper, overall: GPT-4o 71.3, Nemotron-4-340B-Reward 70.5"
_ALIASES = {
    "reward_bench": "Reward Bench", "rewardbench": "Reward Bench", "reward-bench": "Reward Bench",
    "ppe_preference": "PPE-Pref", "ppe-preference": "PPE-Pref", "ppe_pref": "PPE-Pref", "ppe-pref": "PPE-Pref",
    "ppe_correctness": "PPE-Corr", "ppe-correctness": "PPE-Corr", "ppe_corr": "PPE-Corr", "ppe-corr": "PPE-Corr",
    "rmb": "RMB",
}  # fmt: skip


def benchmark_of(source: str) -> str:
    """`<benchmark>/<subset>...` -> the paper's column name, or the benchmark's own name."""
    head = source.split("/", 1)[0].strip()
    return _ALIASES.get(head.lower(), head)


def paper_key(row: dict[str, Any]) -> str:
    """The PAPER key of a results row (`metarm@32 (k_meta=16)` -> `metarm@32` when k_meta = k/2)."""
    if row["method"] == "greedy":
        return "greedy"
    if row["method"] == "metarm" and row["k_meta"] == max(1, int(row["k"]) // 2):
        return f"metarm@{row['k']}"
    return f"{row['method']}@{row['k']}"


def _per_benchmark(by_source: dict[str, dict[str, Any]]) -> dict[str, tuple[float | None, int]]:
    """Item-weighted accuracy per benchmark from a row's per-source breakdown."""
    sums: dict[str, list[float]] = {}
    for source, summary in by_source.items():
        if summary.get("accuracy") is None:
            continue
        acc, n = sums.setdefault(benchmark_of(source), [0.0, 0.0]), int(summary["n"])
        acc[0] += float(summary["accuracy"]) * n
        acc[1] += n
    return {b: (s / n if n else None, int(n)) for b, (s, n) in sums.items()}


def _judgment_stats(records: Sequence[dict[str, Any]], part: str) -> dict[str, float | int | None]:
    """Judgments, completed share and mean completion tokens per judgment of one part (greedy/sampled)."""
    judged = completed = tokens = 0
    for record in records:
        samples = record.get(part, {}).get("samples") or []
        judged += len(samples)
        completed += sum(bool(s.get("completed")) for s in samples)
        tokens += int(record.get(part, {}).get("usage", {}).get("completion_tokens", 0))
    return {
        "judgments": judged,
        "completed_share": round(completed / judged, 4) if judged else None,
        "tokens_per_judgment": round(tokens / judged, 1) if judged else None,
    }


def reproduce_table(results: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row per method and k: accuracy (%) per benchmark and overall, the paper's numbers where it
    reports that row, judgment tokens per item at that k, and the share of completed judgments."""
    stats = {"greedy": _judgment_stats(records, "greedy"), "sampled": _judgment_stats(records, "sampled")}
    columns: list[str] = list(BENCHMARKS)
    rows = []
    for row in results["rows"]:
        per = _per_benchmark(results["breakdown"]["by_source"].get(row["name"], {}))
        columns += [b for b in sorted(per) if b not in columns]
        paper_row = [b for b in BENCHMARKS if per.get(b, (None, 0))[0] is not None]
        # the paper's overall is the mean over its four benchmarks; with others, the mean over those present
        present = paper_row if paper_row else [b for b in per if per[b][0] is not None]
        overall = sum(per[b][0] or 0.0 for b in present) / len(present) if present else None
        part = stats["greedy"] if row["method"] == "greedy" else stats["sampled"]
        per_judgment = part["tokens_per_judgment"]
        k = int(row["k"])
        rows.append(
            {
                "name": row["name"],
                "paper_key": paper_key(row),
                "accuracy": {b: None if a is None else round(100 * a, 1) for b, (a, _) in per.items()},
                "n": {b: n for b, (_, n) in per.items()},
                "overall": None if overall is None else round(100 * overall, 1),
                "overall_over": present,
                "paper": dict(zip((*BENCHMARKS, "Overall"), PAPER[paper_key(row)], strict=True))
                if paper_key(row) in PAPER
                else None,
                "tokens_per_item": None if per_judgment is None else round(float(per_judgment) * k),
                "completed_share": part["completed_share"],
            }
        )
    return {"columns": columns, "rows": rows, "judgments": stats, "references": REFERENCES}


def format_reproduce(table: dict[str, Any]) -> str:
    """`ours (paper)` per benchmark column, then overall, judgment tokens per item, completed share."""
    cols = [c for c in table["columns"] if any(c in r["accuracy"] for r in table["rows"]) or c in BENCHMARKS]
    head = f"{'method':<24}" + "".join(f"{c:>16}" for c in (*cols, "Overall")) + f"{'tokens/item':>13}{'completed':>11}"
    lines = [head]
    for r in table["rows"]:
        cells = []
        for c in (*cols, "Overall"):
            ours = r["overall"] if c == "Overall" else r["accuracy"].get(c)
            paper = r["paper"].get(c) if r["paper"] else None
            text = "-" if ours is None else f"{ours:.1f}"
            cells.append(f"{text + ('' if paper is None else f' ({paper:.1f})'):>16}")
        tokens = "-" if r["tokens_per_item"] is None else str(r["tokens_per_item"])
        share = "-" if r["completed_share"] is None else f"{100 * r['completed_share']:.1f}%"
        lines.append(f"{r['name']:<24}" + "".join(cells) + f"{tokens:>13}{share:>11}")
    lines.append(f"accuracy in %, (paper) = DeepSeek-GRM-27B in Liu et al. 2025; {table['references']}")
    lines.append("tokens/item = k x mean completion tokens per judgment; completed = judgments whose box was completed")
    return "\n".join(lines)
