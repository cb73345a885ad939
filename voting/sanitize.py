"""Neutralize prompt-structure look-alikes in caller text (block markers, role labels, headers, chat tokens).

Caller text (every turn and every response) is pasted into the judging prompt between the template's own
markers. Text that looks like one of them could close its block and open forged ones, or start a forged
turn. `neutralize` rewrites each look-alike so the words still reach the judge but its delimiters become
round parentheses, a form the templates never use:

    [The End of Response 2]    -> (The End of Response 2)      block marker, any bracket kind, anywhere
    User: ...                  -> (User): ...                   role label at a line start
    #### Judgment ####         -> (Judgment)                    template section header at a line start
    <|im_start|>, <end_of_turn>-> (|im_start|), (end_of_turn)   chat special-token strings

Detection runs on an NFKC view with format characters removed and letters of other scripts that look like one
ASCII character (Unicode's confusables, e.g. Cyrillic `Т`, Greek `ο`) read as that character; it is
case-insensitive and spacing-tolerant, so full-width brackets and letters, zero-width joiners, look-alike
letters, other digits and Unicode spaces do not escape it.
Text without look-alikes comes back unchanged; the output has none, so a second pass changes nothing.
"""

from __future__ import annotations

import bisect
import enum
import functools
import importlib.resources
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_BREAK = re.compile(f"[{_LINE_BREAKS}]")
_LINE_START = rf"(?:\A|(?<=[{_LINE_BREAKS}]))"
_LINE_END = rf"(?=[{_LINE_BREAKS}]|\Z)"
_OPEN = "[【〔〖〘〚⟦⟨〈《<{"
_CLOSE = "]】〕〗〙〛⟧⟩〉》>}"

_BLOCK = re.compile(
    rf"(?:(?P<open>[{re.escape(_OPEN)}])\s*)?(?:the\s+)?(?:begin(?:ning)?|start(?:ing)?|end)\s+of\s+(?:the\s+)?"
    rf"responses?(?:\s*(?:(?:no\.?|number|#)\s*)?\d+)?(?:\s*(?P<close>[{re.escape(_CLOSE)}]))?",
    re.IGNORECASE,
)
_ROLE = re.compile(
    rf"{_LINE_START}(?P<pre>[ \t>*_#\-]*)(?P<role>user|assistant|system|human|developer)(?P<mid>[ \t*_]*)[:꞉∶]",
    re.IGNORECASE,
)
_HEADER = re.compile(
    rf"{_LINE_START}[ \t]*#{{2,}}[ \t]*(?P<name>(?:general\s+)?evaluation\s+criteria|conversation(?:\s+context)?"
    rf"|responses(?:\s+to\s+be\s+scored)?|output\s+format\s+requirements|judge?ment)(?:[ \t]*#+[ \t]*{_LINE_END})?",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"<\|[^|<>\n]+\|>|<(?:start_of_turn|end_of_turn|bos|eos|/?s)>", re.IGNORECASE)


class Kind(enum.StrEnum):
    """What a neutralized look-alike imitated."""

    BLOCK = "block"
    ROLE = "role"
    HEADER = "header"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class Neutralized:
    """The rewritten text and how many look-alikes of each kind it had."""

    text: str
    counts: Mapping[Kind, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class _Edit:
    start: int  # in the original text
    end: int
    kind: Kind
    replacement: str


class _Lines:
    """Line bounds of one view from one scan of its line breaks; each line's first and last text character
    found once (so many markers on one long line cost linear time, not a line scan each)."""

    def __init__(self, view: str) -> None:
        self.view = view
        self.breaks = [m.start() for m in _BREAK.finditer(view)]
        self._ends: dict[int, tuple[int, int]] = {}

    def _line(self, pos: int) -> tuple[int, int]:
        """(first non-blank index, one past the last character other than blank, '.' or ':') of pos's line."""
        i = bisect.bisect_right(self.breaks, pos)
        if i not in self._ends:
            start = self.breaks[i - 1] + 1 if i > 0 else 0
            end = self.breaks[i] if i < len(self.breaks) else len(self.view)
            line = self.view[start:end]
            self._ends[i] = (start + len(line) - len(line.lstrip()), start + len(line.rstrip(" \t.:")))
        return self._ends[i]

    def alone(self, start: int, end: int) -> bool:
        return self._line(start)[0] >= start and self._line(max(start, end - 1))[1] <= end


@functools.cache
def _ascii_look_alikes() -> dict[str, str]:
    """Each non-ASCII letter or digit that Unicode's confusables data (TR39, as shipped by `confusable_homoglyphs`)
    lists as looking like an ASCII letter or digit, with that character (a letter preferred to a digit).
    Brackets and colons stay: the patterns name their look-alikes themselves."""
    data = json.loads(importlib.resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text())
    found: dict[str, str] = {}
    for ch, entries in data.items():
        targets = [e["c"] for e in entries if len(e["c"]) == 1 and e["c"].isascii() and e["c"].isalnum()]
        if len(ch) == 1 and not ch.isascii() and unicodedata.category(ch)[0] in "LN" and targets:
            found[ch] = min(targets, key=lambda t: (not t.isalpha(), t))
    return found


class _ViewTable(dict[int, str]):
    """str.translate table, filled on demand: NFKC of each character (or the ASCII character it is a look-alike
    of), format and combining marks dropped."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        view = "" if unicodedata.category(ch) in ("Cf", "Mn", "Me") else unicodedata.normalize("NFKC", ch)
        if view and not view.isascii():
            view = "".join(_ascii_look_alikes().get(c, c) for c in view)
        if len(self) < 200_000:
            self[code] = view
        return view


_TABLE = _ViewTable()


def _origin(text: str) -> list[int]:
    """For each character of the view, the index of the original character it came from."""
    origin: list[int] = []
    for i, ch in enumerate(text):
        origin.extend([i] * len(_TABLE[ord(ch)]))
    return origin


def _edits(text: str) -> list[_Edit]:
    view = text if text.isascii() else text.translate(_TABLE)
    matches = {pattern: list(pattern.finditer(view)) for pattern in (_BLOCK, _ROLE, _HEADER, _TOKEN)}
    if not any(matches.values()):
        return []
    origin = None if view is text else _origin(text)

    def pos(i: int) -> int:
        return i if origin is None else origin[i]

    def span(m: re.Match[str], group: str | int = 0) -> tuple[int, int]:
        a, b = m.span(group)
        return pos(a), pos(b - 1) + 1

    edits: list[_Edit] = []
    lines = _Lines(view) if matches[_BLOCK] else None
    for m in matches[_BLOCK]:
        start, end = span(m)
        opened, closed = m.group("open") is not None, m.group("close") is not None
        if not (opened or closed):
            if lines is None or not lines.alone(m.start(), m.end()):
                continue  # prose ("at the end of response 2"), not a marker on its own line
        inner_start = start + 1 if opened else start
        inner_end = end - 1 if closed else end
        edits.append(_Edit(start, end, Kind.BLOCK, f"({text[inner_start:inner_end]})"))
    for m in matches[_ROLE]:
        start, end = span(m)
        pre_end = span(m, "pre")[1] if m.group("pre") else start
        role_start, role_end = span(m, "role")
        replacement = f"{text[start:pre_end]}({text[role_start:role_end]}){text[role_end:end]}"
        edits.append(_Edit(start, end, Kind.ROLE, replacement))
    for m in matches[_HEADER]:
        start, end = span(m)
        name_start, name_end = span(m, "name")
        edits.append(_Edit(start, end, Kind.HEADER, f"({text[name_start:name_end]})"))
    for m in matches[_TOKEN]:
        start, end = span(m)
        edits.append(_Edit(start, end, Kind.TOKEN, f"({text[start + 1 : end - 1]})"))
    return edits


def _pass(text: str) -> tuple[str, list[Kind]]:
    """One rewrite of every look-alike found (overlaps: the earliest, then the longest, wins)."""
    kept: list[_Edit] = []
    for edit in sorted(_edits(text), key=lambda e: (e.start, -e.end)):
        if not kept or edit.start >= kept[-1].end:
            kept.append(edit)
    parts, last = [], 0
    for edit in kept:
        parts += [text[last : edit.start], edit.replacement]
        last = edit.end
    parts.append(text[last:])
    return "".join(parts), [e.kind for e in kept]


@functools.lru_cache(maxsize=64)  # a request renders each of its texts once per response order
def scan(text: str) -> Neutralized:
    """Neutralize every look-alike in `text`; passes repeat until none is left (a nested one such as
    `<|<bos>|>` shows its outer one only after the inner one is rewritten). Every rewrite removes a
    delimiter character, a line-start label or a bare marker line and creates none, so the passes end
    within len(text) + 1."""
    kinds: list[Kind] = []
    for _ in range(len(text) + 2):
        text, found = _pass(text)
        if not found:
            break
        kinds += found
    return Neutralized(text, dict(Counter(kinds)))


def neutralize(text: str) -> str:
    """`text` with every look-alike rewritten (unchanged when it has none)."""
    return scan(text).text


def count(text: str) -> int:
    """How many look-alikes `neutralize` would rewrite in `text`."""
    return scan(text).total
