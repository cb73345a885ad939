"""The Meta RM's input text, one pure definition shared by training and every backend.

A judgment is shown as a two-turn chat: the user turn holds the conversation, the responses in the
order the judgment saw them and "Please score the responses."; the assistant turn is the judgment
(principles, critique, scores). Models with a chat template get it applied; others get `plain_text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from meta_rm.protocol import MetaRMInput
from voting import render_responses

INSTRUCTION = "Please score the responses."


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the Meta RM uses."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def __call__(self, text: Any, **kwargs: Any) -> Any: ...


def meta_rm_messages(item: MetaRMInput) -> list[dict[str, str]]:
    """The chat form: [user: conversation + responses + instruction, assistant: judgment]."""
    user = f"{item.conversation}\n\n{render_responses(item.responses)}\n{INSTRUCTION}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": item.judgment}]


def plain_text(item: MetaRMInput) -> str:
    """The text form for tokenizers without a chat template."""
    user, judgment = meta_rm_messages(item)
    return f"{user['content']}\n\n{judgment['content']}"


def render(item: MetaRMInput, tokenizer: ChatTokenizer) -> tuple[str, bool]:
    """(text, add_special_tokens): the chat template when the tokenizer has one (it writes its own
    special tokens), else the plain text with the tokenizer's special tokens added."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(meta_rm_messages(item), tokenize=False)
        return str(text), False
    return plain_text(item), True


def encode(items: Sequence[MetaRMInput], tokenizer: ChatTokenizer, max_length: int) -> list[list[int]]:
    """Token ids per item; inputs longer than `max_length` lose tokens from the left (the judgment at
    the end is what is rated, and the last token is the one the scalar head reads)."""
    out = []
    for item in items:
        text, special = render(item, tokenizer)
        ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
        out.append(ids[-max_length:])
    return out
