"""The response blocks of a judging prompt: one renderer for the GRM's prompt and the Meta RM's input."""

from __future__ import annotations

from collections.abc import Sequence

from voting.sanitize import neutralize


def render_responses(responses: Sequence[str]) -> str:
    """The response blocks, numbered from 1 in the order shown, each text neutralized (voting.sanitize) so
    it cannot close its block or open forged ones. The GRM's judging prompt and the Meta RM's input both
    call this, so the Meta RM rates a judgment against exactly the text the GRM saw."""
    return "".join(
        f"[The Begin of Response {i}]\n{neutralize(text)}\n[The End of Response {i}]\n"
        for i, text in enumerate(responses, start=1)
    )
