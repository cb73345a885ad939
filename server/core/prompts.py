"""Judging prompts: the Appendix G template (released checkpoints), a generic one, and the score-box regex."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

from voting import render_responses
from voting.parse import SCORES_OPEN
from voting.sanitize import neutralize

_PLACEHOLDER = re.compile(r"\{(conversation|responses|n)\}")
_METACHARACTER = re.compile(r"[\\{}()\[\].*+?^$|]")
_ROLE_LABELS = {
    "system": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
    "function": "Function",
    "ipython": "IPython",
}


class TemplateName(enum.StrEnum):
    """`deepseek-grm`: Appendix G verbatim, for DeepSeek-GRM checkpoints; `generic`: one worked
    example, for ordinary instruct models; `auto`: deepseek-grm when the model name says so."""

    AUTO = "auto"
    DEEPSEEK_GRM = "deepseek-grm"
    GENERIC = "generic"


class StructuredOutput(enum.StrEnum):
    """How decoding is constrained. `free+complete`: reasoning sampled freely (as in the paper), a
    judgment without a parseable box is completed by a short constrained continuation; `regex`: the
    whole judgment under a regex whose every section needs real text (judgments cut by max_tokens are
    completed too); `off`: no constraint, no completion; `auto`: free+complete for `deepseek-grm`,
    regex otherwise."""

    AUTO = "auto"
    FREE_COMPLETE = "free+complete"
    REGEX = "regex"
    OFF = "off"


# Default judgment budgets per template (README, "Judgments whole", gives the source): a DeepSeek-GRM
# judgment of a pair was seen at ~700 tokens; 2048 leaves ~3x room. The generic template's worked
# example asks for one line per section.
DEFAULT_MAX_TOKENS = {"deepseek-grm": 2048, "generic": 512}


def _concrete(template: TemplateName) -> TemplateName:
    if template is TemplateName.AUTO:
        raise ValueError("resolve 'auto' to a concrete template first (resolve_template, from the model name)")
    return template


def resolve_structured_output(mode: StructuredOutput, template: TemplateName) -> StructuredOutput:
    """The mode `auto` stands for with this (concrete) template."""
    if mode is not StructuredOutput.AUTO:
        return mode
    return (
        StructuredOutput.FREE_COMPLETE if _concrete(template) is TemplateName.DEEPSEEK_GRM else StructuredOutput.REGEX
    )


def default_max_tokens(template: TemplateName) -> int:
    """The judgment budget of a (concrete) template when neither the request nor the settings give one."""
    return DEFAULT_MAX_TOKENS[_concrete(template).value]


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


def load_template(name: TemplateName) -> str:
    file = "deepseek_grm.txt" if _concrete(name) is TemplateName.DEEPSEEK_GRM else "generic.txt"
    return resources.files("server.core.templates").joinpath(file).read_text(encoding="utf-8")


def resolve_template(name: TemplateName, model: str) -> TemplateName:
    """The one resolution of `auto`: deepseek-grm when the model name says `grm`, else generic."""
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
        self.template = _concrete(template)
        self._text = load_template(template)

    def build(self, messages: Sequence[Message], responses_in_order: Sequence[str]) -> str:
        values = {
            "conversation": render_conversation(messages),
            "responses": render_responses(responses_in_order),
            "n": str(len(responses_in_order)),
        }
        # One pass, so placeholder-like text inside the user's content is never substituted.
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self._text)

    def score_regex(self, n_responses: int, max_tokens: int, chars_per_token: float = 1.0) -> str:
        """A regex forcing the three-line answer with exactly n scores in 1..10, every section starting
        with a non-space character, its length bounds sized to end inside max_tokens at the tokenizer's
        measured `chars_per_token` (with a 25% margin; a cut judgment is completed anyway)."""
        box = literal_regex(SCORES_OPEN) + box_scores_regex(n_responses)
        box_tokens = len(SCORES_OPEN) + 1 + 4 * n_responses  # a character per token here: digits, commas
        free_tokens = max(16, max_tokens - box_tokens - len("Specific Criteria: \nAnalysis: \n") - 8)
        free = max(16, int(free_tokens * max(1.0, chars_per_token) * 0.75))
        criteria, analysis = max(4, free // 3), max(8, free - free // 3)
        body = r"[\s\S]" if self.template is TemplateName.DEEPSEEK_GRM else r"[^\n]"
        return rf"Specific Criteria: \S{body}{{0,{criteria - 1}}}\nAnalysis: \S{body}{{0,{analysis - 1}}}\n" + box

    @staticmethod
    def min_max_tokens(n_responses: int) -> int:
        """The smallest max_tokens for which the regex leaves room for real text."""
        return 96 + 8 * n_responses


def literal_regex(text: str) -> str:
    """`text` as a regex matching itself, escaping only the metacharacters (the structured-output engines'
    regex dialects do not all take Python's escapes of spaces and letters)."""
    return _METACHARACTER.sub(r"\\\g<0>", text)


def box_scores_regex(n_responses: int) -> str:
    """What follows `\\boxed{`: exactly n integer scores in 1..10 and the closing brace."""
    score = r"([1-9]|10)"
    return score + (", " + score) * (n_responses - 1) + r"\}"


def measure_chars_per_token(count_tokens: Callable[[str], int], template: TemplateName) -> float:
    """Characters per token of this tokenizer on the judging template's own prose (the text judgments resemble)."""
    text = load_template(template)
    return len(text) / max(1, count_tokens(text))
