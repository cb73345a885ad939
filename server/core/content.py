"""OpenAI-style message content as the judge reads it: a string, or the text of its content parts."""

from __future__ import annotations

import json
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


TOOL_ROLES = frozenset({"tool", "function", "ipython"})
"""Turns in which a tool answered (OpenAI's `tool` and legacy `function`, Llama 3's `ipython`)."""


def tool_calls_text(tool_calls: Any) -> str:
    """An assistant turn's tool calls as the judge reads them, one `Tool call: name(arguments)` line each.
    Takes OpenAI's `[{"type": "function", "function": {"name", "arguments": "<json>"}}]`, Hugging Face chat
    templates' dict `arguments`, and the legacy single `function_call` {"name", "arguments"}."""
    if not tool_calls:
        return ""
    calls = [tool_calls] if isinstance(tool_calls, Mapping) else tool_calls
    if not isinstance(calls, list | tuple):
        return f"Tool call: {calls}"
    lines = []
    for call in calls:
        if not isinstance(call, Mapping):
            lines.append(f"Tool call: {call}")
            continue
        function = call.get("function")
        fn: Mapping[str, Any] = function if isinstance(function, Mapping) else call
        arguments = fn.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str)
        lines.append(f"Tool call: {fn.get('name', '')}({arguments})")
    return "\n".join(lines)


def turn_text(message: Mapping[str, Any]) -> str:
    """The text of one chat turn as the judge reads it: its content, then its tool calls (assistant turns); a
    tool's answer led by the tool's name in brackets (`[multiply] 6`)."""
    text = content_text(message.get("content"))
    calls = tool_calls_text(message.get("tool_calls") or message.get("function_call"))
    if calls:
        text = f"{text}\n{calls}" if text.strip() else calls
    name = message.get("name")
    if message.get("role") in TOOL_ROLES and isinstance(name, str) and name:
        text = f"[{name}] {text}"
    return text
