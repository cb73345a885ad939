"""Pure, deterministic core: response blocks, score extraction, response orders and seeds, Meta RM selection and voting."""

from voting.orders import ShownOrder, derive_seed, map_to_caller, plan_orders
from voting.parse import ParseError, ScoreParse, parse_scores, split_judgment
from voting.render import render_responses
from voting.vote import VoteResult, pick_best, select_top, unit_score, vote

__all__ = [
    "ShownOrder",
    "ParseError",
    "ScoreParse",
    "VoteResult",
    "derive_seed",
    "map_to_caller",
    "parse_scores",
    "pick_best",
    "plan_orders",
    "render_responses",
    "select_top",
    "split_judgment",
    "unit_score",
    "vote",
]
