"""The one check that a caller's text is valid Unicode (the HTTP models and the core both use it)."""

from __future__ import annotations


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot reach an engine, or None. JSON may spell a lone surrogate (`"\\ud800"`), which
    no UTF-8 encoder (so no tokenizer) accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"the text holds a lone surrogate (\\u{ord(text[exc.start]):04x} at {exc.start}); send valid Unicode"
    return None
