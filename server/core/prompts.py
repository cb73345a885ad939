"""Judging prompts: the Appendix G template (released checkpoints), a generic one, and the score-box regex."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from voting import render_responses
from voting.sanitize import neutralize

_PLACEHOLDER = re.compile(r"\{(conversation|responses|n)\}")
_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


class TemplateName(enum.StrEnum):
    """`deepseek-grm`: Appendix G verbatim, for DeepSeek-GRM checkpoints; `generic`: one worked
    example, for ordinary instruct models; `auto`: deepseek-grm when the model name says so."""

    AUTO = "auto"
    DEEPSEEK_GRM = "deepseek-grm"
    GENERIC = "generic"


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


def load_template(name: TemplateName) -> str:
    file = "deepseek_grm.txt" if name is TemplateName.DEEPSEEK_GRM else "generic.txt"
    return resources.files("server.core.templates").joinpath(file).read_text(encoding="utf-8")


def resolve_template(name: TemplateName, model: str) -> TemplateName:
    if name is not TemplateName.AUTO:
        return name
    return TemplateName.DEEPSEEK_GRM if "grm" in model.lower() else TemplateName.GENERIC


def render_conversation(messages: Sequence[Message]) -> str:
    """Label each turn with its role; the last turn is the user's query. Turn texts are neutralized
    (voting.sanitize), so they cannot forge turns, blocks or chat tokens."""
    return "\n\n".join(f"{_ROLE_LABELS.get(m.role, m.role.capitalize())}: {neutralize(m.content)}" for m in messages)


class PromptBuilder:
    """Fills one template; `build` returns the user-turn text for one response order."""

    def __init__(self, template: TemplateName) -> None:
        if template is TemplateName.AUTO:
            raise ValueError("resolve 'auto' to a concrete template first")
        self.template = template
        self._text = load_template(template)

    def build(self, messages: Sequence[Message], responses_in_order: Sequence[str]) -> str:
        values = {
            "conversation": render_conversation(messages),
            "responses": render_responses(responses_in_order),
            "n": str(len(responses_in_order)),
        }
        # One pass, so placeholder-like text inside the user's content is never substituted.
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self._text)

    def score_regex(self, n_responses: int, max_tokens: int) -> str:
        """A regex forcing the three-line answer with exactly n scores in 1..10, sized to fit max_tokens
        (a character is at least one token, so the longest match always ends inside the budget)."""
        score = r"([1-9]|10)"
        box = r"Scores: \\boxed\{" + score + (", " + score) * (n_responses - 1) + r"\}"
        box_chars = len("Scores: \\boxed{}") + 4 * n_responses
        free = max(16, max_tokens - box_chars - len("Specific Criteria: \nAnalysis: \n") - 8)
        criteria, analysis = max(4, free // 3), max(8, free - free // 3)
        body = r"[\s\S]" if self.template is TemplateName.DEEPSEEK_GRM else r"[^\n]"
        return rf"Specific Criteria: {body}{{1,{criteria}}}\nAnalysis: {body}{{1,{analysis}}}\n" + box

    @staticmethod
    def min_max_tokens(n_responses: int) -> int:
        """The smallest max_tokens for which the regex leaves room for real text."""
        return 96 + 8 * n_responses
