"""OpenAI-style message content as the judge reads it: a string, or the text of its content parts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def content_text(content: Any) -> str:
    """The text of one message's `content`: a string as is; a list of content parts (`[{"type": "text",
    "text": ...}, {"type": "image_url", ...}]`) joined from its text parts (a part without `type` counts as
    text; other parts and non-mapping entries are dropped); None as ""; anything else as `str()`.

    `server.integrations.client` keeps a copy of this function (the client depends on httpx alone);
    tests/test_content.py pins the two equal."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type", "text") == "text"
        )
    return str(content)
