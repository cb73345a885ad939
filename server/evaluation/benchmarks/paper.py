"""The paper's headline table (DeepSeek-GRM-27B, arXiv 2504.02495 Table 2) and ours beside it, by benchmark name."""

from __future__ import annotations

from typing import Any

COLUMNS = ("RewardBench", "PPE-P", "PPE-C", "RMB", "Overall")
# The one place these numbers live (docs/design.md, "The method", quotes them).
PAPER: dict[str, tuple[float, ...]] = {
    "greedy": (86.0, 64.7, 59.8, 69.0, 69.9),
    "voting": (88.5, 65.3, 60.4, 69.7, 71.0),
    "metarm": (90.4, 67.2, 63.2, 70.3, 72.8),
}
METHOD_NAMES = {"greedy": "greedy", "voting": "Voting@{k}", "metarm": "MetaRM@{k}"}


def _get(official: dict[str, Any], bench: str, method: str, field: str) -> float | None:
    scores = (official.get(bench) or {}).get(method) or {}
    value = scores.get(field)
    return float(value) if value is not None else None


def our_row(official: dict[str, Any], method: str) -> tuple[float | None, ...]:
    """RewardBench score, PPE-P and PPE-C accuracy, RMB (mean of pairwise and BoN present), their mean if all four."""
    rmb = [v for b in ("rmb-pairwise", "rmb-bon") if (v := _get(official, b, method, "accuracy")) is not None]
    row = [
        _get(official, "rewardbench", method, "Score"),
        _get(official, "ppe-preference", method, "accuracy"),
        _get(official, "ppe-correctness", method, "accuracy"),
        round(sum(rmb) / len(rmb), 2) if rmb else None,
    ]
    present = [v for v in row if v is not None]
    overall = round(sum(present) / 4, 2) if len(present) == 4 else None
    return (*row, overall)


def format_paper_table(official: dict[str, Any], k: int) -> str:
    """Ours (this run) and the paper's number in each cell; '-' where this run lacks the benchmark."""
    head = f"{'method':<12}" + "".join(f"{c:>18}" for c in COLUMNS)
    lines = [head, f"{'':<12}" + "".join(f"{'ours / paper':>18}" for _ in COLUMNS)]
    for method, paper in PAPER.items():
        ours = our_row(official, method)
        cells = "".join(
            f"{('-' if o is None else f'{o:.1f}') + f' / {p:.1f}':>18}" for o, p in zip(ours, paper, strict=True)
        )
        lines.append(f"{METHOD_NAMES[method].format(k=k):<12}{cells}")
    lines.append("paper: DeepSeek-GRM-27B, Voting@32 and MetaRM@32 (k_meta 16); ours at this run's k_max")
    return "\n".join(lines)


def format_official(official: dict[str, Any]) -> str:
    """One line per benchmark and method with its official scores."""
    lines = []
    for bench, entry in official.items():
        for method in ("greedy", "voting", "metarm"):
            scores = entry.get(method)
            if scores:
                flat = ", ".join(f"{k} {v}" for k, v in scores.items() if not isinstance(v, dict))
                lines.append(f"official {bench} ({method}, {entry['items']} items): {flat}")
        if "position_consistency" in entry:
            lines.append(f"official {bench}: position consistency {entry['position_consistency']}%")
        if "both_orders" in entry:
            bo = entry["both_orders"]
            lines.append(
                f"official {bench} (both orders): accuracy {bo['accuracy']}, inconsistent {bo['inconsistent']}"
            )
    return "\n".join(lines)
