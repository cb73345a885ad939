"""Turn items.jsonl records into results.json: accuracy per method and k, breakdowns, position bias (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from server.evaluation.metrics import JudgedPosition, Outcome, position_bias, summarize, summarize_groups
from server.evaluation.sweep import Judgment, has_meta_rewards, k_meta_for, metarm_method, sweep
from voting.orders import OrderStrategy

TIE_RULE = (
    "an item whose labelled response ties for the top voted reward with m-1 others counts 1/m "
    "(the expectation of the paper's random tie-break); `strict_accuracy` counts such ties as wrong"
)
NO_VALID = "no_valid_judgment"
OFFICIAL_ONLY = "tie_official_score_only"  # a tie row judged for its benchmark's official score (PandaLM)


@dataclass(frozen=True, slots=True)
class ReportSpec:
    ks: tuple[int, ...]
    k_meta_specs: tuple[str | int, ...] = ()
    strategy: OrderStrategy = OrderStrategy.ROTATE
    resamples: int = 1000
    seed: int = 0


@dataclass
class _Rows:
    """Outcomes per row name, each with the record it came from (for the per-group breakdowns)."""

    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    meta: dict[str, tuple[str, int, int | None]] = field(default_factory=dict)

    def add(self, record: dict[str, Any], method: str, k: int, k_meta: int | None, outcome: Outcome) -> None:
        name = _row_name(method, k, k_meta)
        self.outcomes.setdefault(name, []).append(outcome)
        self.records.setdefault(name, []).append(record)
        self.meta[name] = (method, k, k_meta)


def judgments(part: dict[str, Any]) -> list[Judgment]:
    return [
        Judgment(
            tuple(s["scores"]) if s["scores"] is not None else None,
            tuple(s["order"]),
            s.get("meta_reward"),
        )
        for s in part.get("samples", [])
    ]


def _failure(record: dict[str, Any]) -> str | None:
    """The error type that keeps an item out of accuracy (no valid judgment is not one: it counts wrong)."""
    for name in ("greedy", "sampled"):
        err = record.get(name, {}).get("error")
        if err is not None and err["type"] != NO_VALID:
            return str(err["type"])
    return None


def _row_name(method: str, k: int, k_meta: int | None) -> str:
    if method == "greedy":
        return "greedy"
    return f"{method}@{k}" if k_meta is None else f"{method}@{k} (k_meta={k_meta})"


def build_results(records: Sequence[dict[str, Any]], spec: ReportSpec) -> dict[str, Any]:
    """Everything results.json reports, from the records of the selected items (in any order)."""
    records = sorted(records, key=lambda r: str(r["key"]))  # bootstrap draws must not depend on finishing order
    excluded: Counter[str] = Counter()
    usable = []
    for record in records:
        reason = _failure(record)
        if reason is None and record["label"] is None:
            excluded[OFFICIAL_ONLY] += 1  # a tie row: judged for its benchmark's official score (PandaLM)
        elif reason is None:
            usable.append(record)
        else:
            excluded[reason] += 1
    sampled_ok = [judgments(r["sampled"]) for r in usable if "samples" in r["sampled"]]
    voting_sets = [js for js in sampled_ok if any(j.scores is not None for j in js)]
    meta_ok = bool(voting_sets) and all(has_meta_rewards(js) for js in voting_sets)
    specs = spec.k_meta_specs if meta_ok else ()
    rows = _Rows()
    greedy_positions: list[JudgedPosition] = []
    sampled_positions: list[JudgedPosition] = []
    counts = Counter[str]()
    for record in usable:
        n, label = record["n"], record["label"]
        if "greedy" in record:
            part = record["greedy"]
            js = judgments(part) if "samples" in part else []
            rewards = js[0].scores if js and js[0].scores is not None else None
            rows.add(record, "greedy", 1, None, Outcome.of(rewards, label))
            greedy_positions += [JudgedPosition(j.scores, j.order, label) for j in js]
            counts["greedy_judgments"] += len(js)
            counts["greedy_valid"] += sum(j.scores is not None for j in js)
        part = record["sampled"]
        js = judgments(part) if "samples" in part else []
        sampled_positions += [JudgedPosition(j.scores, j.order, label) for j in js]
        counts["sampled_judgments"] += len(js)
        counts["sampled_valid"] += sum(j.scores is not None for j in js)
        ks = [k for k in spec.ks if k <= len(js)] if js else list(spec.ks)
        voted = sweep(js, n, ks, record["seed"], strategy=spec.strategy, k_meta_specs=specs) if js else {}
        for k in ks:
            rows.add(record, "voting", k, None, Outcome.of(voted.get(("voting", k)), label))
            for s in specs:
                outcome = Outcome.of(voted.get((metarm_method(s), k)), label)
                rows.add(record, metarm_method(s), k, k_meta_for(s, k), outcome)
    by_key = {"by_file": "file", "by_source": "source", "by_category": "category"}
    table: list[dict[str, Any]] = []
    breakdown: dict[str, dict[str, Any]] = {b: {} for b in by_key}
    for name, outcomes in rows.outcomes.items():
        method, k, km = rows.meta[name]
        summary = summarize(outcomes, resamples=spec.resamples, seed=spec.seed)
        table.append({"name": name, "method": method, "k": k, "k_meta": km, **summary.to_json()})
        for b, field_name in by_key.items():
            groups = [str(r[field_name]) for r in rows.records[name]]
            per = summarize_groups(outcomes, groups, resamples=spec.resamples, seed=spec.seed)
            breakdown[b][name] = {g: s.to_json() for g, s in per.items()}
    notes = []
    if spec.k_meta_specs and not meta_ok:
        notes.append("MetaRM@k rows skipped: the judge has no Meta RM (its judgments carry no meta reward)")
    return {
        "tie_rule": TIE_RULE,
        "items": {
            "judged": len(records),
            "evaluated": len(usable),
            "excluded": dict(sorted(excluded.items())),
            "by_file": dict(sorted(Counter(str(r["file"]) for r in usable).items())),
            "chance_accuracy": round(sum(1 / r["n"] for r in usable) / len(usable), 6) if usable else None,
        },
        "rows": sorted(table, key=lambda r: (_METHOD_ORDER.get(str(r["method"]), 3), str(r["method"]), int(r["k"]))),
        "breakdown": breakdown,
        "position_bias": {
            "greedy": position_bias(greedy_positions, resamples=spec.resamples, seed=spec.seed),
            "sampled": position_bias(sampled_positions, resamples=spec.resamples, seed=spec.seed),
        },
        "judgments": dict(counts),
        "usage": _usage(usable),
        "notes": notes,
    }


_METHOD_ORDER = {"greedy": 0, "voting": 1, "metarm": 2}


def _usage(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    total: Counter[str] = Counter()
    for r in records:
        total.update(r.get("usage", {}))
    out: dict[str, Any] = dict(total)
    out["judge_seconds_sum"] = round(sum(float(r.get("elapsed_s", 0.0)) for r in records), 3)
    return out


def format_table(results: dict[str, Any]) -> str:
    """The accuracy rows as a plain-text table."""
    lines = [f"{'method':<28} {'n':>5} {'acc':>7} {'95% CI':>17} {'strict':>7} {'ties':>5}"]
    for row in results["rows"]:
        ci = "" if row["ci_low"] is None else f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        acc = "" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        strict = "" if row["strict_accuracy"] is None else f"{row['strict_accuracy']:.3f}"
        lines.append(f"{row['name']:<28} {row['n']:>5} {acc:>7} {ci:>17} {strict:>7} {row['ties']:>5}")
    for which, pb in results["position_bias"].items():
        first, last = pb["first"], pb["last"]
        if first["n"] and last["n"]:
            lines.append(
                f"position bias ({which} judgments): best shown first {first['accuracy']:.3f} (n={first['n']}), "
                f"last {last['accuracy']:.3f} (n={last['n']}), gap {pb['gap']:+.3f}"
            )
    lines.extend(results["notes"])
    return "\n".join(lines)
