"""Content-part flattening: the core's `content_text`, the client's copy of it, and every caller of either
(the compatible routes' messages, the TRL adapter, the client's prompts) read content the same way."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.content import content_text, turn_text
from server.http.protocol_compat import ChatMessageIn
from server.integrations import client
from server.integrations.trl import GRMReward

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
CASES: list[tuple[Any, str]] = [
    (None, ""),
    ("", ""),
    ("plain text", "plain text"),
    ([], ""),
    ([{"type": "text", "text": "a"}, IMAGE, {"type": "text", "text": "b"}], "ab"),
    ([{"text": "a part without a type is text"}], "a part without a type is text"),
    ([{"type": "text"}], ""),
    ([{"type": "text", "text": 5}], "5"),
    ([{"type": "input_audio", "text": "not text"}, {"type": "text", "text": "x"}], "x"),
    (["a bare string is no part", {"type": "text", "text": "y"}], "y"),
    (({"type": "text", "text": "a tuple"},), "a tuple"),
    (7, "7"),
]


@pytest.mark.parametrize(("content", "text"), CASES)
def test_core_and_client_copy_agree_on_the_table(content: Any, text: str) -> None:
    assert content_text(content) == text
    assert client.content_text(content) == text
    assert client.to_messages([{"role": "user", "content": content}]) == [{"role": "user", "content": text}]


def request_shaped(content: Any) -> bool:
    """What the compatible routes' message model accepts: null, a string, or a list of objects."""
    return (
        content is None
        or isinstance(content, str)
        or (isinstance(content, list) and all(isinstance(p, dict) for p in content))
    )


@pytest.mark.parametrize(("content", "text"), [(c, t) for c, t in CASES if request_shaped(c)])
def test_compatible_routes_read_message_content_the_same_way(content: Any, text: str) -> None:
    assert ChatMessageIn(role="user", content=content).text() == text


PARTS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url", "input_audio"])}, optional={"text": st.text(max_size=8)}
    ),
    st.dictionaries(st.sampled_from(["text", "type", "other"]), st.one_of(st.text(max_size=5), st.integers())),
    st.text(max_size=5),
)
CONTENT = st.one_of(st.none(), st.text(), st.lists(PARTS, max_size=6), st.integers())


@given(CONTENT)
def test_the_client_copy_equals_the_core_function(content: Any) -> None:
    assert client.content_text(content) == content_text(content)


def test_trl_reward_judges_the_text_of_conversational_completions() -> None:
    sent: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        sent.extend(item["responses"] for item in items)
        results = [{"scores": [5.0] * len(i["responses"]), "rewards": [5], "valid": 1} for i in items]
        return httpx.Response(200, json={"results": results})

    completions = [
        [{"role": "assistant", "content": [{"type": "text", "text": "ab"}, IMAGE, {"type": "text", "text": "c"}]}],
        [{"role": "assistant", "content": None}],
        "plain",
    ]
    reward = GRMReward("http://x", transport=httpx.MockTransport(handler), scale="raw")
    assert reward(["p", "p", "p"], completions) == [5.0, 5.0, 5.0]
    assert sent == [["abc", "", "plain"]]


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
         'Tool call: f({"a": 1})'),  # OpenAI: arguments as a JSON string
        ({"role": "assistant", "content": "Let me see.", "tool_calls": [{"function": {"name": "f", "arguments": {"b": 2, "a": 1}}}]},
         'Let me see.\nTool call: f({"a": 1, "b": 2})'),  # Hugging Face templates: a dict
        ({"role": "assistant", "content": "", "function_call": {"name": "g", "arguments": "{}"}}, "Tool call: g({})"),
        ({"role": "assistant", "content": "x", "tool_calls": [{"function": {"name": "f"}}, {"function": {"name": "h"}}]},
         "x\nTool call: f()\nTool call: h()"),
        ({"role": "tool", "name": "f", "content": "6"}, "[f] 6"),
        ({"role": "ipython", "content": [{"type": "text", "text": "6"}]}, "6"),
        ({"role": "user", "name": "alice", "content": "hi"}, "hi"),  # only a tool's name is shown
    ],
)  # fmt: skip
def test_turn_text_renders_tool_calls_and_answers(message: dict[str, Any], text: str) -> None:
    assert turn_text(message) == text
    assert ChatMessageIn.model_validate(message).text() == text  # the compatible routes read turns the same way
