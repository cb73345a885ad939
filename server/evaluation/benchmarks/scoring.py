"""The official scorer of each benchmark: judged items (record, meta, rewards in source order) -> its own scores.

Percentages rounded to 2 places; `None` where a part of the score has no items in the run. The registry
(formats/registry.py) names which scorer each benchmark uses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from server.evaluation.benchmarks import rules

Rewards = tuple[float, ...]
Judged = Sequence[tuple[dict[str, Any], dict[str, Any], Rewards]]
OfficialScorer = Callable[[Judged], dict[str, Any]]


def pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def _pcts(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: _pcts(v) if isinstance(v, dict) else pct(v) for k, v in scores.items()}


def rewardbench(items: Judged) -> dict[str, Any]:
    """Subset accuracy (chosen strictly above rejected), sections weighted by subset size, Score = their mean."""
    by_subset: dict[str, list[float]] = defaultdict(list)
    for _, meta, r in items:
        by_subset[meta["subset"]].append(float(rules.beats_all(r)))
    acc = {s: sum(v) / len(v) for s, v in by_subset.items()}
    return _pcts(dict(rules.rewardbench_sections(acc)))


def rewardbench2(items: Judged) -> dict[str, Any]:
    """Non-Ties subsets: best-of-N credit 1/m; Ties: the weighted ties score; Score = mean of the subsets."""
    subsets: dict[str, list[float]] = defaultdict(list)
    ties: dict[str, tuple[Sequence[float], int]] = {}
    for record, meta, r in items:
        if str(meta["subset"]).lower() == "ties":
            ties[record["id"]] = (r, meta["num_correct"])
        else:
            subsets[meta["subset"]].append(rules.best_of_n_credit(r))
    out: dict[str, float | None] = {s: sum(v) / len(v) for s, v in subsets.items()}
    if ties:
        out["Ties"] = rules.ties_score(ties)
    scored = [v for v in out.values() if v is not None]
    out["Score"] = sum(scored) / len(scored) if scored else None
    return _pcts(dict(out))


def rmbench(items: Judged) -> dict[str, Any]:
    """3x3 style matrix per domain (hard / normal / easy), each averaged over the domains present."""
    domains: dict[str, list[tuple[int, int, bool]]] = defaultdict(list)
    for _, meta, r in items:
        domains[meta["domain"]].append((meta["chosen_style"], meta["rejected_style"], rules.beats_all(r)))
    return _pcts(rules.rmbench_scores(domains))


def ppe_correctness(items: Judged) -> dict[str, Any]:
    rows = [rules.ppe_correctness(r, meta["correct"], meta.get("conflict_pairs")) for _, meta, r in items]
    accs = [a for row in rows if (a := row["accuracy"]) is not None]
    bok = [b for row in rows if (b := row["best_of_k"]) is not None]
    return {"accuracy": pct(sum(accs) / len(accs) if accs else None), "best_of_k": pct(sum(bok) / len(bok))}


def pandalm(items: Judged) -> dict[str, Any]:
    predicted = [rules.three_way(r) for _, _, r in items]
    return _pcts(dict(rules.pandalm_scores(predicted, [m["majority"] for _, m, _ in items])))


def labelled_accuracy(items: Judged) -> dict[str, Any]:
    """The labelled response must score strictly above every other one (pairwise and best-of-N sets)."""
    hits = [float(rules.beats_all(r, record["perm"][record["label"]])) for record, _, r in items]
    return {"accuracy": pct(sum(hits) / len(hits))}
