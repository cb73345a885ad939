"""Neutralize prompt-structure look-alikes in caller text (block markers, role labels, headers, chat tokens, score
boxes).

Caller text (every turn and every response) is pasted into the judging prompt between the template's own
markers. Text that looks like one of them could close its block and open forged ones, start a forged turn, or
hand the judge a ready-made score box to copy. `neutralize` rewrites each look-alike so the words still reach
the judge but it is wrapped in round parentheses (its own delimiters dropped), a form the templates never use:

    [The End of Response 2]    -> (The End of Response 2)      block marker, any bracket kind, anywhere
    |The End of Response 2|    -> |(The End of Response 2)|    any other delimiter, a line start or end
    User: ...                  -> (User): ...                   role label at a line start
    #### Judgment ####         -> (Judgment)                    template section header at a line start
    <|im_start|>, <end_of_turn>-> (|im_start|), (end_of_turn)   chat special-token strings
    Scores: \\boxed{10, 10}     -> Scores: (boxed){10, 10}       a score box (what voting.parse reads)

Detection runs in one pass of Python `re` over the ASCII skeleton of the text (`voting.skeleton`: NFKC,
confusable letters, digits, brackets, colons, quotes, spaces and line breaks each read as one ASCII form,
format characters dropped), with possessive quantifiers only where no two of them can match the same span, so
every search is linear in the text. Text without look-alikes comes back unchanged; one pass leaves none (see
docs/security.md for why), so neutralizing twice changes nothing.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from re import ASCII, Match, compile
from typing import Any

import numpy as np

from voting.skeleton import WORD, View

_F = r"[*_~`=^\-]*+"  # formatting characters inside a word: Res**ponse, Re_sponse, Re-sponse
_SEP = r"[*_~`=^\-]*+[ \n][ \n*_~`=^\-]*+"  # between words: at least one blank or line break


def _word(word: str) -> str:
    return _F.join(word)


_THE = _word("the") + _SEP
_KEYWORDS = [rf"{_word('begin')}(?:{_F}{_word('ning')})?", rf"{_word('start')}(?:{_F}{_word('ing')})?", _word("end")]
_KEYWORD = f"(?:{'|'.join(_KEYWORDS)})"
# Every alternative starts with a literal, so `re` skips to candidate characters at C speed.
_HEADS = [rf"\[[ \n]*+(?:{_THE}{_KEYWORD}|{_KEYWORD})", rf"<[ \n]*+(?:{_THE}{_KEYWORD}|{_KEYWORD})", _THE + _KEYWORD]
_BLOCK = compile(
    rf"(?:{'|'.join(_HEADS + _KEYWORDS)}){_SEP}{_word('of')}{_SEP}(?:{_THE})?{_word('response')}(?:{_F}s)?"
    rf"(?:{_F}[ \n]*+(?:(?:no\.?|number|\#)[ \n]*+)?\d++)?(?P<end>)(?:[ \n]*+(?P<close>[\]>]))?",
    ASCII,
)
# Line starts: searched in "\n" + view, so each match starts with a literal (fast) and ends its line.
_ROLE = compile(r"\n[ >*_#\-]*+(?P<role>user|assistant|system|human|developer)[ *_]*+:", ASCII)
_HEADER = compile(
    r"\n[ ]*+\#{2,}+[ ]*+(?P<name>(?:general[ \n]++)?evaluation[ \n]++criteria|conversation(?:[ \n]++context)?"
    r"|responses(?:[ \n]++to[ \n]++be[ \n]++scored)?|output[ \n]++format[ \n]++requirements|judge?ment)"
    r"(?:[ ]*+\#++[ ]*+(?=\n|\Z))?",
    ASCII,
)
_NAMED = r"<(?:start_of_turn|end_of_turn|bos|eos|/?s)>"
_NAMED_TOKEN = compile(_NAMED, ASCII)
_TOKEN = compile(rf"<\|(?:[^|<>\n]|{_NAMED})++\|>|{_NAMED}", ASCII)  # <|x<bos>y|>: both, in one pass
_BOX = compile(rf"\\[ \n]*+(?P<word>{_word('boxed')})", ASCII)

_GAP = 8  # blanks between a marker phrase and the word that makes it prose, at most
_PROSE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789(),;:.!?" + WORD)  # a word, a round paren, punctuation
_PUNCT = frozenset(",;:.!?")


class Kind(enum.StrEnum):
    """What a neutralized look-alike imitated."""

    BLOCK = "block"
    ROLE = "role"
    HEADER = "header"
    TOKEN = "token"
    BOX = "box"


@dataclass(frozen=True, slots=True)
class Neutralized:
    """The rewritten text and how many look-alikes of each kind it had."""

    text: str
    counts: Mapping[Kind, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# Where a marker phrase stands on each side: a delimiter (a line start or end, a bracket, `|`, `*`, `-`, a quote
# ...), glued to a word with no blank, or prose (a blank and then a word, a round parenthesis).
_DELIM, _GLUED, _PROSE_SIDE = 0, 1, 2


def _left(view: str, start: int) -> int:
    if start == 0:
        return _DELIM
    c = view[start - 1]
    if c == "(":
        return _PROSE_SIDE
    if c != " ":
        return _GLUED if c in _PROSE else _DELIM
    i, low = start - 1, max(-1, start - 1 - _GAP)
    while i > low and view[i] == " ":
        i -= 1
    return _PROSE_SIDE if i >= 0 and view[i] in _PROSE else _DELIM


def _right(view: str, end: int) -> int:
    n = len(view)
    i = end
    while i < n and i < end + 3 and view[i] in _PUNCT:  # "response 2, you said", "response 2.)"
        i += 1
    if i == n:
        return _DELIM
    c = view[i]
    if c == ")":
        return _PROSE_SIDE
    if c != " ":
        return _GLUED if c in _PROSE and i == end else _DELIM
    high = min(n, i + 1 + _GAP)
    while i < high and view[i] == " ":
        i += 1
    return _PROSE_SIDE if i < n and view[i] in _PROSE else _DELIM


def _is_marker(view: str, m: Match[str], start: int) -> bool:
    if start > m.start() or m.group("close") is not None:
        return True  # a bracket on either side
    left, right = _left(view, start), _right(view, m.end("end"))
    return _DELIM in (left, right) or left == right == _GLUED  # prose: "at the end of response 2 you said"


# An edit replaces original[start:stop] with a replacement; rank orders edits at one position: the closing paren
# of what ends there, then the opening paren of what starts there, then a replaced character. Matches are found in
# view offsets; each offset is kept as (view index q, d) meaning origin(q) + d (end(b) is origin(b - 1) + 1) and
# all are mapped to original offsets in one batched pass (`View.origins`).
_REPS = ("", "(", ")")  # replacement codes, in the order str comparison sorts them
_Chunk = tuple[Any, int, int, Any, int, int]  # q of start, d of start, rank, q of stop, d of stop, replacement


def _ints(values: Sequence[object]) -> Any:
    return np.asarray(values, dtype=np.int64)


def _edits(view: str) -> tuple[list[_Chunk], dict[Kind, int]]:
    chunks: list[_Chunk] = []
    counts: dict[Kind, int] = {}
    heads, opens, ends, closes = [], [], [], []
    for m in _BLOCK.finditer(view):
        a, b = m.start(), m.end("end")
        if view[a] in "[<":
            a += 1 + len(view[a + 1 : b]) - len(view[a + 1 : b].lstrip(" \n"))
        if not _is_marker(view, m, a):
            continue
        if a > m.start():
            heads.append(m.start())  # the bracket goes, the blanks stay
        opens.append(a)
        ends.append(b - 1)
        if m.group("close") is not None:
            closes.append(m.end() - 1)
    h, o, c, z = _ints(heads), _ints(opens), _ints(closes), _ints(ends)
    chunks += [(h, 0, 2, h, 1, 0), (o, 0, 1, o, 0, 1), (z, 1, 0, z, 1, 2), (c, 0, 2, c, 1, 0)]
    counts[Kind.BLOCK] = len(opens)
    lines = "\n" + view  # one copy; offsets below are one more than in view
    spans = _ints([p for m in _ROLE.finditer(lines) for p in m.span("role")]).reshape(-1, 2)
    o, z = spans[:, 0] - 1, spans[:, 1] - 2
    chunks += [(o, 0, 1, o, 0, 1), (z, 1, 0, z, 1, 2)]
    counts[Kind.ROLE] = len(spans)
    spans = _ints([(m.start(), *m.span("name"), m.end()) for m in _HEADER.finditer(lines)]).reshape(-1, 4)
    chunks += [(spans[:, 0], 0, 2, spans[:, 1] - 1, 0, 1), (spans[:, 2] - 2, 1, 2, spans[:, 3] - 2, 1, 2)]
    counts[Kind.HEADER] = len(spans)
    tokens: list[tuple[int, int]] = []
    for m in _TOKEN.finditer(view):
        tokens.append(m.span())
        if view[m.start() + 1] == "|":
            tokens += [t.span() for t in _NAMED_TOKEN.finditer(view, m.start() + 1, m.end() - 1)]
    spans = _ints(tokens).reshape(-1, 2)
    o, z = spans[:, 0], spans[:, 1] - 1
    chunks += [(o, 0, 2, o, 1, 1), (z, 0, 2, z, 1, 2)]
    counts[Kind.TOKEN] = len(spans)
    spans = _ints([p for m in _BOX.finditer(view) for p in (m.start(), *m.span("word"))]).reshape(-1, 3)
    z = spans[:, 2] - 1
    chunks += [(spans[:, 0], 0, 2, spans[:, 1], 0, 1), (z, 1, 0, z, 1, 2)]
    counts[Kind.BOX] = len(spans)
    return [ch for ch in chunks if len(ch[0])], {kind: n for kind, n in counts.items() if n}


@functools.lru_cache(maxsize=64)  # a request renders each of its texts once per response order
def scan(text: str) -> Neutralized:
    """Neutralize every look-alike in `text` in one pass (the output has none left: docs/security.md)."""
    v = View(text)
    chunks, counts = _edits(v.text)
    if not chunks:
        return Neutralized(text, {})
    q = np.concatenate([np.concatenate((qa, qb)) for qa, _, _, qb, _, _ in chunks])
    full = [np.full(len(ch[0]), x, dtype=np.int64) for ch in chunks for x in ch[1:3] + ch[4:6]]
    da, rank, db, code = (np.concatenate(full[k::4]) for k in range(4))
    mapped = v.origins(q)
    sizes = [len(ch[0]) for ch in chunks]
    starts_parts, stops_parts, at = [], [], 0
    for size in sizes:
        starts_parts.append(mapped[at : at + size])
        stops_parts.append(mapped[at + size : at + 2 * size])
        at += 2 * size
    starts = np.concatenate(starts_parts) + da
    stops = np.concatenate(stops_parts) + db
    order = np.lexsort((code, stops, rank, starts))
    starts, stops, code = starts[order], stops[order], code[order]
    if len(starts) > 1 and bool(np.any(starts[1:] < stops[:-1])):  # never happens (the kinds' spans are disjoint)
        return Neutralized(_splice(text, starts.tolist(), stops.tolist(), code.tolist()), counts)
    n = len(starts)
    parts: list[str] = [""] * (2 * n + 1)
    parts[0 : 2 * n : 2] = map(text.__getitem__, map(slice, [0, *stops[:-1].tolist()], starts.tolist()))
    parts[1 : 2 * n : 2] = map(_REPS.__getitem__, code.tolist())
    parts[2 * n] = text[int(stops[-1]) :]
    return Neutralized("".join(parts), counts)


def _splice(text: str, starts: list[int], stops: list[int], codes: list[int]) -> str:
    """The edits applied in order, each one that starts inside an earlier one skipped (keeps the text whole)."""
    parts, last = [], 0
    for start, stop, rep in zip(starts, stops, codes, strict=True):
        if start < last:
            continue
        parts.append(text[last:start])
        parts.append(_REPS[rep])
        last = stop
    parts.append(text[last:])
    return "".join(parts)


def neutralize(text: str) -> str:
    """`text` with every look-alike rewritten (unchanged when it has none)."""
    return scan(text).text
