"""OpenRLHF's rollout texts: a query is the policy's prompt (cut from the left when too long) plus its response,
decoded with the chat template's special tokens left in. Splitting them is pure string work, linear in practice
and bounded in the worst case."""

from __future__ import annotations

import re

__all__ = ["longest_overlap", "split_query", "strip_special_tokens"]

# Chat-template marker strings as tokenizers decode them: ChatML / Llama 3 / Phi `<|im_end|>`, `<|eot_id|>`;
# DeepSeek's fullwidth `<｜end▁of▁sentence｜>`; Gemma's and SentencePiece's named ones (`<end_of_turn>`, `</s>`).
_TOKEN = re.compile(
    r"<\|[^|<>\n]{1,64}\|>|<｜[^｜<>\n]{1,64}｜>|<(?:start_of_turn|end_of_turn|bos|eos|pad|unk|/?s)>", re.ASCII
)
_LONGEST_TOKEN = 70
_PROBE = 16  # characters of the query that locate candidate overlaps with str.find
_MAX_CANDIDATES = 64  # candidate checks before the linear prefix-function pass takes over


def strip_special_tokens(text: str) -> str:
    """`text` without the special-token strings (and the blanks around them) at its start and its end; tokens
    inside the text are left to the neutralizer. Each step looks at a bounded window, so this is linear."""
    start, end = 0, len(text)
    while True:
        s = start
        while s < end and text[s].isspace():
            s += 1
        m = _TOKEN.match(text, s)
        if m is None:
            break
        start = m.end()
    if start:
        while start < end and text[start].isspace():
            start += 1
    while True:
        e = end
        while e > start and text[e - 1].isspace():
            e -= 1
        if e == start or text[e - 1] != ">":
            break
        opening = text.rfind("<", max(start, e - _LONGEST_TOKEN), e)
        if opening < 0 or _TOKEN.fullmatch(text, opening, e) is None:
            break
        end = opening
    if end < len(text):
        while end > start and text[end - 1].isspace():
            end -= 1
    return text[start:end]


def longest_overlap(prompt: str, query: str, max_candidates: int = _MAX_CANDIDATES) -> int:
    """The length of the longest suffix of `prompt` that `query` starts with (0 when none)."""
    n = min(len(prompt), len(query))
    if n == 0:
        return 0
    probe = query[: min(_PROBE, n)]
    first = len(prompt) - n  # an overlap is at most n long: it starts at or after this position
    i = prompt.find(probe, first)
    checks = 0
    while i >= 0:
        if query.startswith(prompt[i:]):
            return len(prompt) - i
        checks += 1
        if checks >= max_candidates:
            return _prefix_function_overlap(prompt[first:], query[:n])
        i = prompt.find(probe, i + 1)
    for length in range(len(probe) - 1, 0, -1):  # overlaps shorter than the probe
        if prompt.endswith(query[:length]):
            return length
    return 0


def _prefix_function_overlap(tail: str, head: str) -> int:
    """Knuth-Morris-Pratt: the longest prefix of `head` that is a suffix of `tail` (both of one length)."""
    fail = [0] * len(head)
    k = 0
    for i in range(1, len(head)):
        while k and head[i] != head[k]:
            k = fail[k - 1]
        if head[i] == head[k]:
            k += 1
        fail[i] = k
    k = 0
    for c in tail:
        while k and (k == len(head) or c != head[k]):
            k = fail[k - 1]
        if c == head[k]:
            k += 1
    return k


def split_query(query: str, prompt: str) -> str | None:
    """The response in an OpenRLHF `query`: what follows `prompt`, or, when the prompt was cut from the left,
    what follows the longest suffix of `prompt` that the query starts with; special tokens at the response's
    ends removed. None when the query shares nothing with its prompt (a caller's error)."""
    if query.startswith(prompt):
        return strip_special_tokens(query[len(prompt) :])
    # a cut inside a multi-byte character decodes as U+FFFD at the query's start
    body = query.lstrip("\ufffd")
    overlap = longest_overlap(prompt, body)
    if overlap == 0:
        return None
    return strip_special_tokens(body[overlap:])
