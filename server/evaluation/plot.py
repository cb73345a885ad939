"""Draw accuracy vs k (one line per method, 95% bootstrap bands, greedy as a dashed level) to a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_COLORS = {"voting": "#1f77b4", "metarm": "#d62728", "greedy": "#555555"}


def plot_accuracy(results: dict[str, Any], path: Path, *, title: str | None = None) -> Path:
    """Write the plot of results["rows"] to `path` (matplotlib, headless Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["accuracy"] is not None]
    methods = sorted({r["method"] for r in rows if r["method"] != "greedy"}, key=lambda m: (m != "voting", m))
    ks = sorted({int(r["k"]) for r in rows if r["method"] != "greedy"}) or [1]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for i, method in enumerate(methods):
        line = sorted((r for r in rows if r["method"] == method), key=lambda r: r["k"])
        x = [int(r["k"]) for r in line]
        color = _COLORS.get(method, f"C{i + 2}")
        label = (
            "Voting@k"
            if method == "voting"
            else f"MetaRM@k (k_meta={method.removeprefix('metarm_kmeta').removeprefix('metarm') or 'k/2'})"
        )
        ax.plot(x, [r["accuracy"] for r in line], marker="o", color=color, label=label)
        if all(r["ci_low"] is not None for r in line):
            ax.fill_between(x, [r["ci_low"] for r in line], [r["ci_high"] for r in line], color=color, alpha=0.15)
    greedy = next((r for r in rows if r["method"] == "greedy"), None)
    if greedy is not None:
        ax.axhline(greedy["accuracy"], color=_COLORS["greedy"], linestyle="--", label="greedy (k=1, T=0)")
        if greedy["ci_low"] is not None:
            ax.axhspan(greedy["ci_low"], greedy["ci_high"], color=_COLORS["greedy"], alpha=0.07)
    chance = results["items"].get("chance_accuracy")
    if chance is not None:
        ax.axhline(chance, color="#999999", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (sampled judgments)")
    ax.set_ylabel("accuracy (ties = 1/m)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    n = results["items"]["evaluated"]
    ax.set_title(title or f"Accuracy vs k ({n} items, 95% bootstrap CI)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
