"""Pure, deterministic core: score extraction, response orders, Meta RM selection and voting."""

from voting.orders import OrderGroup, map_to_caller, plan_orders
from voting.parse import ParseError, ScoreParse, parse_scores, split_judgment
from voting.vote import VoteResult, pick_best, select_top, vote

__all__ = [
    "OrderGroup",
    "ParseError",
    "ScoreParse",
    "VoteResult",
    "map_to_caller",
    "parse_scores",
    "pick_best",
    "plan_orders",
    "select_top",
    "split_judgment",
    "vote",
]
