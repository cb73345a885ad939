"""Accuracy evaluation of the judge over labelled data: greedy, Voting@k and MetaRM@k with bootstrap CIs.

Modules: `data` (items, seeded order), `metrics` and `sweep` (pure), `scorers` (in-process or HTTP),
`runner` (items.jsonl, resume), `report` (results.json), `plot` (PNG), `evaluate` (all of it).
"""
