"""Official scores of each benchmark present in a run, for the greedy and Voting@k_max judgments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from server.evaluation.benchmarks import rules
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


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def _score(benchmark: str, items: list[tuple[dict[str, Any], dict[str, Any], Rewards]]) -> dict[str, Any]:
    if benchmark == "rewardbench":
        by_subset: dict[str, list[float]] = defaultdict(list)
        for _, meta, r in items:
            by_subset[meta["subset"]].append(float(rules.beats_all(r)))
        acc = {s: sum(v) / len(v) for s, v in by_subset.items()}
        return {k: _pct(v) for k, v in rules.rewardbench_sections(acc).items()}
    if benchmark == "rewardbench2":
        subsets: dict[str, list[float]] = defaultdict(list)
        ties: dict[str, tuple[Sequence[float], int]] = {}
        for record, meta, r in items:
            if meta["subset"] == "Ties":
                ties[record["id"]] = (r, meta["num_correct"])
            else:
                subsets[meta["subset"]].append(float(rules.beats_all(r)))
        out: dict[str, float | None] = {s: sum(v) / len(v) for s, v in subsets.items()}
        if ties:
            out["Ties"] = rules.ties_score(ties)
        scored = [v for v in out.values() if v is not None]
        out["Score"] = sum(scored) / len(scored) if scored else None
        return {k: _pct(v) for k, v in out.items()}
    if benchmark == "rmbench":
        domains: dict[str, list[tuple[int, int, bool]]] = defaultdict(list)
        for _, meta, r in items:
            domains[meta["domain"]].append((meta["chosen_style"], meta["rejected_style"], rules.beats_all(r)))
        all_pairs = [p for v in domains.values() for p in v]
        out_rm: dict[str, Any] = {k: _pct(v) for k, v in rules.rmbench_matrix(all_pairs).items()}
        out_rm["per_domain"] = {d: _pct(rules.rmbench_matrix(v)["avg"]) for d, v in sorted(domains.items())}
        return out_rm
    if benchmark == "ppe_correctness":
        rows = [rules.ppe_correctness(r, meta["correct"], meta.get("conflict_pairs")) for _, meta, r in items]
        accs = [a for row in rows if (a := row["accuracy"]) is not None]
        bok = [b for row in rows if (b := row["best_of_k"]) is not None]
        return {"accuracy": _pct(sum(accs) / len(accs) if accs else None), "best_of_k": _pct(sum(bok) / len(bok))}
    if benchmark == "pandalm":
        predicted = [rules.three_way(r) for _, _, r in items]
        return {k: _pct(v) for k, v in rules.pandalm_scores(predicted, [m["majority"] for _, m, _ in items]).items()}
    # judgebench, ppe_preference, rmb_pairwise, rmb_bon: the labelled response must beat every other one.
    hits = [float(rules.beats_all(r, record["perm"][record["label"]])) for record, _, r in items]
    return {"accuracy": _pct(sum(hits) / len(hits))}


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
        entry: dict[str, Any] = {"items": len(recs)}
        for method in ("greedy", "voting", "metarm"):
            scored = [(r, meta[r["key"]], rw) for r in recs if (rw := method_rewards(r, method, k_meta)) is not None]
            entry[method] = _score(bench, scored) if scored else None
        pairwise = [r for r in recs if r["n"] == 2]
        both = [d for r in pairwise if len(d := order_decisions(r)) == 2]
        if both:
            entry["position_consistency"] = _pct(sum(d[0] == d[1] for d in both) / len(both))
        if bench == "judgebench" and both:
            labelled = [(r, d) for r in pairwise if len(d := order_decisions(r)) == 2]
            votes = [rules.judgebench_pair("A>B" if r["perm"][r["label"]] == 0 else "B>A", d) for r, d in labelled]
            entry["both_orders"] = {
                "accuracy": _pct(sum(v > 0 for v in votes) / len(votes)),
                "inconsistent": _pct(sum(v == 0 for v in votes) / len(votes)),
                "pairs": len(votes),
            }
        out[bench] = entry
    return out
