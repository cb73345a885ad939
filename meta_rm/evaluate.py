"""Offline evaluation on labelled judgments: the Meta RM's AUC, and Voting@k vs MetaRM@k accuracy per item."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meta_rm.records import JudgmentRecord
from meta_rm.train import accuracy, auc
from voting import pick_best, select_top, vote


@dataclass(frozen=True, slots=True)
class Comparison:
    """`*_accuracy`: share of items whose voted best response is the labelled one (seeded tie-break,
    as the server does); `*_ties`: items whose top reward was shared before the tie-break."""

    items: int
    judgments: int
    k: float
    k_meta: int | None
    auc: float
    accuracy: float
    correct_rate: float
    voting_accuracy: float
    meta_accuracy: float
    voting_ties: int
    meta_ties: int


def group_by_item(records: Sequence[JudgmentRecord]) -> dict[str, list[int]]:
    """Record indices per item, in file order."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.item_id, []).append(i)
    return groups


def item_best(records: Sequence[JudgmentRecord], meta: Sequence[float] | None, k_meta: int) -> tuple[int, bool] | None:
    """(best response, tied) of one item's judgments: every valid one votes, or the top k_meta by meta
    reward when `meta` is given (k_meta 0 = plain voting). None when no judgment is valid."""
    valid = [i for i, r in enumerate(records) if r.scores is not None]
    if not valid:
        return None
    if meta is not None and k_meta > 0:
        valid = [valid[j] for j in select_top([meta[i] for i in valid], k_meta)]
    voted = vote([records[i].scores or () for i in valid], len(records[0].responses))
    tied = voted.rewards.count(max(voted.rewards)) > 1
    return pick_best(voted.rewards, records[0].seed), tied


def compare(records: Sequence[JudgmentRecord], meta: Sequence[float], k_meta: int | None = None) -> Comparison:
    """AUC/accuracy of the ratings over the parseable judgments (the only ones the Meta RM selects among);
    Voting@k vs MetaRM@k over items with a valid judgment.
    `k_meta` None = half the item's judgments (the paper's default), at least 1."""
    if len(meta) != len(records):
        raise ValueError(f"{len(meta)} meta rewards for {len(records)} judgments")
    parsed = [i for i, r in enumerate(records) if r.scores is not None]
    labels, rated = [records[i].correct for i in parsed], [meta[i] for i in parsed]
    voting_hits = meta_hits = voting_ties = meta_ties = items = 0
    groups = group_by_item(records)
    for idx in groups.values():
        recs, scores = [records[i] for i in idx], [meta[i] for i in idx]
        keep = max(1, len(recs) // 2) if k_meta is None else k_meta
        plain, chosen = item_best(recs, None, 0), item_best(recs, scores, keep)
        if plain is None or chosen is None or len(recs[0].responses) < 2:
            continue  # no valid judgment, or a single response (no best to pick)
        items += 1
        voting_hits += plain[0] == recs[0].label
        meta_hits += chosen[0] == recs[0].label
        voting_ties += plain[1]
        meta_ties += chosen[1]
    return Comparison(
        items=items,
        judgments=len(records),
        k=len(records) / max(1, len(groups)),
        k_meta=k_meta,
        auc=auc(rated, labels),
        accuracy=accuracy(rated, labels),
        correct_rate=sum(labels) / max(1, len(labels)),
        voting_accuracy=voting_hits / max(1, items),
        meta_accuracy=meta_hits / max(1, items),
        voting_ties=voting_ties,
        meta_ties=meta_ties,
    )
