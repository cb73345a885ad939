"""The ASCII skeleton of caller text: what `voting.sanitize` searches, one view character per original one.

Every character maps to a short ASCII string, decided once per distinct character and cached:

    ASCII letters            -> lower case               digits of any script       -> the ASCII digit
    `{` and every opening    -> `[`  (Unicode Ps)        `}` and every closing      -> `]`  (Unicode Pe)
    `(`, `)`, `<`, `>`       -> themselves (NFKC forms)  quote marks (Pi, Pf)       -> `"`, dashes (Pd) -> `-`
    line breaks (str.splitlines) -> `\\n`                 other Unicode spaces, tab  -> ` `
    format and combining marks   -> dropped              NFKC to ASCII (`ｅ`, `ﬆ`)  -> that text
    a TR39 confusable of one ASCII character (Cyrillic `е`, `∶`, `⧵`) -> that character
    any other letter, digit or mark -> WORD (`\\x00`)      anything else              -> OTHER (`\\x01`)

Round parentheses stay apart from the other brackets: they are the neutralized form. The view is built with
`str.translate` (C speed; an ASCII text takes the translate fast path). Dropped characters and multi-character
expansions ("irregular" ones) shift view offsets from original ones; `View.origin` maps back through a
breakpoint list over the irregular characters only, built when first needed.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import json
import re
import unicodedata
from typing import Any

import numpy as np

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
WORD = "\x00"
OTHER = "\x01"
_STRUCTURAL = frozenset("[]<>\\|")  # never part of a multi-character expansion (edits replace single characters)
_CACHE_LIMIT = 200_000


def _ascii(ch: str) -> str:
    if ch in LINE_BREAKS:
        return "\n"
    if ch.isspace():
        return " "
    if ord(ch) < 0x20 or ch == "\x7f":
        return OTHER
    return {"{": "[", "}": "]"}.get(ch, ch.lower())


_ASCII_TABLE = {i: _ascii(chr(i)) for i in range(128)}


@functools.cache
def _confusables() -> dict[str, str]:
    """Each non-ASCII character that Unicode's confusables data (TR39, as shipped by `confusable_homoglyphs`)
    lists as looking like one printable ASCII character, with that character (a letter preferred, then a digit)."""
    data = json.loads(importlib.resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text())
    found: dict[str, str] = {}
    for ch, entries in data.items():
        targets = [e["c"] for e in entries if len(e["c"]) == 1 and e["c"].isascii() and e["c"].isprintable()]
        if len(ch) == 1 and not ch.isascii() and targets:
            found[ch] = min(targets, key=lambda t: (not t.isalpha(), not t.isdigit(), t))
    return found


def char_view(ch: str) -> str:
    """The view of one character (see the module docstring)."""
    if ch.isascii():
        return _ASCII_TABLE[ord(ch)]
    category = unicodedata.category(ch)
    if category in ("Cf", "Mn", "Me"):
        return ""
    if ch in LINE_BREAKS or ch.isspace():
        return _ascii(ch)
    nfkc = "".join(c for c in unicodedata.normalize("NFKC", ch) if unicodedata.category(c) not in ("Cf", "Mn", "Me"))
    if nfkc and nfkc.isascii():
        view = "".join(_ASCII_TABLE[ord(c)] for c in nfkc)
        return OTHER if len(view) > 1 and not _STRUCTURAL.isdisjoint(view) else view
    if category in ("Ps", "Pe", "Pi", "Pf", "Pd"):
        return {"Ps": "[", "Pe": "]", "Pd": "-"}.get(category, '"')
    digit = unicodedata.decimal(ch, None)
    if digit is not None:
        return str(digit)
    look_alike = _confusables().get(nfkc if len(nfkc) == 1 else ch) or _confusables().get(ch)
    if look_alike is not None:
        return _ASCII_TABLE[ord(look_alike)]
    return WORD if category[0] in "LNM" else OTHER


_VIEWS: dict[str, str] = {}


def _view_of(ch: str) -> str:
    view = _VIEWS.get(ch)
    if view is None:
        view = char_view(ch)
        if len(_VIEWS) < _CACHE_LIMIT:
            _VIEWS[ch] = view
    return view


class View:
    """`text`: the skeleton of `original`; `origin(i)`: the original index of view character i."""

    __slots__ = ("_irregular", "_points", "original", "text")

    def __init__(self, original: str) -> None:
        self.original = original
        if original.isascii():
            self.text, self._irregular = original.translate(_ASCII_TABLE), ""
        else:
            table = {ord(c): _view_of(c) for c in set(original)}
            self.text = original.translate(table)
            self._irregular = "".join(chr(c) for c, v in table.items() if len(v) != 1)
        self._points: tuple[list[int], list[int], list[int]] | None = None

    def _breakpoints(self) -> tuple[list[int], list[int], list[int]]:
        """(view start, original index, view length) of every irregular character, in order."""
        if self._points is None:
            starts, origins, lengths, shift = [], [], [], 0
            pattern = re.compile(f"[{re.escape(self._irregular)}]")
            for m in pattern.finditer(self.original):
                i = m.start()
                length = len(_view_of(self.original[i]))
                starts.append(i + shift)
                origins.append(i)
                lengths.append(length)
                shift += length - 1
            self._points = (starts, origins, lengths)
        return self._points

    def origin(self, i: int) -> int:
        """The original index of view index i (len(text) maps to len(original))."""
        if not self._irregular:
            return i
        starts, origins, lengths = self._breakpoints()
        j = bisect.bisect_right(starts, i) - 1
        if j < 0:
            return i
        if i < starts[j] + lengths[j]:
            return origins[j]  # inside a multi-character expansion
        return origins[j] + 1 + i - starts[j] - lengths[j]

    def origins(self, indices: Any) -> Any:
        """`origin(i)` of every view index in the int64 array `indices` (and -1 for -1), in one batched pass."""
        if not self._irregular:
            return indices
        starts, origins, lengths = (np.asarray(p, dtype=np.int64) for p in self._breakpoints())
        if not starts.size:
            return indices
        q = np.asarray(indices, dtype=np.int64)
        j = np.searchsorted(starts, q, side="right") - 1
        k = np.maximum(j, 0)
        s, o, n = starts[k], origins[k], lengths[k]
        mapped = np.where(q < s + n, o, o + 1 + q - s - n)
        return np.where(j < 0, q, mapped)

    def origin_end(self, j: int) -> int:
        """The original end index of a view span ending at j (exclusive)."""
        return self.origin(j - 1) + 1 if j > 0 else 0
