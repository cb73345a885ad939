"""Official scores of each benchmark present in a run, for the greedy and Voting@k_max judgments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from server.evaluation.benchmarks import rules
from server.evaluation.benchmarks.scoring import pct
from server.evaluation.formats.registry import get
from server.evaluation.report import judgments
from server.evaluation.sweep import has_meta_rewards, metarm_rewards, voting_rewards

Rewards = tuple[float, ...]


def source_order(rewards: Sequence[float], perm: Sequence[int]) -> Rewards:
    """Rewards of the sent order (`perm[j]` = source index of position j) back in the file's order."""
    out = [0.0] * len(perm)
    for j, src in enumerate(perm):
        out[src] = float(rewards[j])
    return tuple(out)


def method_rewards(record: dict[str, Any], method: str, k_meta: int = 0) -> Rewards | None:
    """Greedy, Voting@k_max or MetaRM@k_max (top `k_meta` by meta reward) rewards, in source order."""
    part = record.get("greedy" if method == "greedy" else "sampled") or {}
    if "error" in part or not part.get("samples"):
        return None
    found_j = judgments(part)
    if method == "metarm":
        if not k_meta or not has_meta_rewards(found_j):
            return None
        found = metarm_rewards(found_j, record["n"], k_meta)
    else:
        found = voting_rewards(found_j, record["n"])
    return None if found is None else source_order(found, record["perm"])


def order_decisions(record: dict[str, Any]) -> list[str]:
    """Pairwise items: the A/B decision of the summed sampled judgments of each presentation order."""
    groups: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for j in judgments(record.get("sampled") or {}):
        if j.scores is None or len(j.scores) != 2:
            continue
        total = groups[j.order]
        total[0], total[1] = total[0] + j.scores[0], total[1] + j.scores[1]
    decisions = []
    for order in sorted(groups):
        a, b = source_order(groups[order], record["perm"])
        decisions.append(rules.decision(a, b))
    return decisions


def official_scores(
    records: Sequence[dict[str, Any]], meta: dict[str, dict[str, Any]], *, k_meta: int = 0
) -> dict[str, Any]:
    """{benchmark: {items, greedy, voting, metarm: scores or None, position_consistency?, both_orders?}}."""
    by_bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        bench = meta.get(record["key"], {}).get("benchmark")
        if bench:
            by_bench[bench].append(record)
    out: dict[str, Any] = {}
    for bench, recs in sorted(by_bench.items()):
        entry_of = get(bench)  # an unknown benchmark name is an error, never plain accuracy
        entry: dict[str, Any] = {"items": len(recs)}
        if entry_of.score is None:
            entry["note"] = f"{bench} has no official scorer: see the accuracy-vs-k rows"
        for method in ("greedy", "voting", "metarm"):
            if entry_of.score is None:
                entry[method] = None
                continue
            scored = [(r, meta[r["key"]], rw) for r in recs if (rw := method_rewards(r, method, k_meta)) is not None]
            entry[method] = entry_of.score(scored) if scored else None
        pairwise = [r for r in recs if r["n"] == 2]
        both = [(r, d) for r in pairwise if len(d := order_decisions(r)) == 2]
        if both:
            entry["position_consistency"] = pct(sum(d[0] == d[1] for _, d in both) / len(both))
        if entry_of.both_orders and both:
            votes = [rules.judgebench_pair("A>B" if r["perm"][r["label"]] == 0 else "B>A", d) for r, d in both]
            entry["both_orders"] = {
                "accuracy": pct(sum(v > 0 for v in votes) / len(votes)),
                "inconsistent": pct(sum(v == 0 for v in votes) / len(votes)),
                "pairs": len(votes),
            }
        out[bench] = entry
    return out
