"""HTTP conformance through the real app (httpx on ASGITransport, scripted engine): Allow on 405, Bearer
challenges, the key before the body, strict knob types, OpenAPI bounds, one 400 for a batch's shared knobs,
field names in the caller's terms, UTF-8-only JSON bodies, request-id hygiene, no query strings in the log."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.errors import InvalidRequestError, caller_loc
from server.core.judging import Planner
from server.core.prompts import Message, TemplateName
from server.core.settings import Settings
from server.core.text import unicode_problem
from server.core.types import JudgeRequest
from server.http.routes.deps import KeyedRoute, parse_json_body
from tests.conftest import app_client
from tests.fakes import ScriptedGenerator

CHAT = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
BODIES: dict[str, dict[str, Any]] = {  # a valid body of every judging route
    "/score": {"query": "q", "responses": ["a"]},
    "/score/batch": {"items": [{"query": "q", "responses": ["a"]}]},
    "/v1/score": {"text_1": "q", "text_2": ["a"]},
    "/get_reward": {"query": ["P:a"], "prompts": ["P:"]},
    "/reward": {"prompt": "P:", "response": "a"},
    "/v1/chat/completions": {"messages": CHAT},
}
KEY = "s3cret"


@contextlib.asynccontextmanager
async def client_for(overrides: dict[str, Any] | None = None, **engines: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(overrides, **engines) as (client, _):
        yield client


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def raw_post(client: httpx.AsyncClient, route: str, raw: bytes, **headers: str) -> Any:
    return client.post(route, content=raw, headers={"content-type": "application/json", **headers})


# 1. 405 Allow, 401 WWW-Authenticate, the key before the body


@pytest.mark.parametrize(("method", "path", "allowed"), [("GET", "/score", "POST"), ("GET", "/v1/score", "POST"),
                         ("POST", "/health", "GET"), ("DELETE", "/metrics", "GET")])  # fmt: skip
async def test_a_405_names_the_methods_the_path_accepts(method: str, path: str, allowed: str) -> None:
    async with client_for() as client:
        r = await client.request(method, path)
    err = assert_error(r, 405)
    assert allowed in {m.strip() for m in r.headers["allow"].split(",")}
    assert method in err["message"] and allowed in err["message"]


async def test_protected_routes_are_every_judging_route_and_metrics() -> None:
    async with app_client() as (_, app):
        keyed = {r.path for r in app.routes if isinstance(r, KeyedRoute)}
    assert keyed == set(BODIES) | {"/v1/models", "/metrics"}


@pytest.mark.parametrize("path", [*BODIES, "/v1/models", "/metrics"])
async def test_a_401_carries_a_bearer_challenge(path: str) -> None:
    method = "GET" if path in ("/v1/models", "/metrics") else "POST"
    async with client_for({"server.api_keys": [KEY]}) as client:
        missing = await client.request(method, path, json=BODIES.get(path))
        wrong = await client.request(method, path, json=BODIES.get(path), headers={"Authorization": "Bearer nope"})
        basic = await client.request(method, path, json=BODIES.get(path), headers={"Authorization": f"Basic {KEY}"})
        ok = await client.request(method, path, json=BODIES.get(path), headers={"Authorization": f"Bearer {KEY}"})
    assert_error(missing, 401)
    assert missing.headers["www-authenticate"] == 'Bearer realm="grm-server"'  # RFC 6750: no error code
    for r in (wrong, basic):
        assert_error(r, 401)
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="grm-server"') and 'error="invalid_token"' in challenge
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("route", list(BODIES))
async def test_the_key_is_checked_before_the_body_is_parsed(route: str) -> None:
    gen = ScriptedGenerator()
    async with client_for({"server.api_keys": [KEY]}, generator=gen) as client:
        for raw in (b"{not json", b"\xff\xfe{}", json.dumps({**BODIES[route], "k": True}).encode()):
            assert_error(await raw_post(client, route, raw), 401)
            assert_error(await raw_post(client, route, raw, authorization="Bearer wrong"), 401)
            assert_error(await raw_post(client, route, raw, authorization=f"Bearer {KEY}"), 400)
    assert gen.calls == []


# 2. strict knob types on every route

BAD_KNOBS: list[tuple[dict[str, Any], str]] = [({"k": True}, "k"), ({"k": "2"}, "k"), ({"k": 2.5}, "k"), ({"seed": False}, "seed"),
             ({"seed": "1"}, "seed"), ({"temperature": "0.5"}, "temperature"), ({"temperature": True}, "temperature"),
             ({"max_tokens": 1.5}, "max_tokens"), ({"max_tokens": "300"}, "max_tokens"), ({"k_meta": False}, "k_meta")]  # fmt: skip


@pytest.mark.parametrize("route", list(BODIES))
async def test_knob_types_are_strict_on_every_route(route: str) -> None:
    gen = ScriptedGenerator()
    async with client_for(generator=gen) as client:
        for bad, param in BAD_KNOBS:
            err = assert_error(await client.post(route, json={**BODIES[route], **bad}), 400, param)
            assert err["message"].startswith(f"{param}: ")
        assert gen.calls == []
        # A JSON integer is a number (fine for temperature) and 300.0 is an integer, as JSON Schema has it.
        knobs = {"k": 2, "temperature": 1, "seed": 3, "max_tokens": 300.0}
        ok = await client.post(route, json={**BODIES[route], **knobs})
        assert ok.status_code == 200, ok.text
    ((_, sampling, _),) = gen.calls
    assert (sampling.n, sampling.temperature, sampling.max_tokens) == (2, 1.0, 300)


async def test_native_flags_are_strict_booleans() -> None:
    async with client_for() as client:
        assert_error(
            await client.post("/score", json={**BODIES["/score"], "return_samples": "yes"}), 400, "return_samples"
        )
        body = {"messages": CHAT, "stream": "false"}
        assert_error(await client.post("/v1/chat/completions", json=body), 400, "stream")


async def test_the_openai_sdk_gets_a_400_for_a_coerced_knob() -> None:
    async with app_client() as (_, app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/v1")
        sdk = openai.AsyncOpenAI(base_url="http://test/v1", api_key="x", http_client=http, max_retries=0)  # type: ignore[arg-type]  # openai types its own httpx alias
        with pytest.raises(openai.BadRequestError) as info:
            await sdk.chat.completions.create(model="scripted", messages=CHAT, extra_body={"k": "2"})  # type: ignore[arg-type]
        await http.aclose()
    assert info.value.status_code == 400 and info.value.body["param"] == "k"  # type: ignore[index]


# 3. the OpenAPI schema states what the server enforces


def openapi_of(client_schema: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = client_schema["components"]["schemas"][name]
    return schema


def knob(schema: dict[str, Any], name: str) -> dict[str, Any]:
    (typed,) = [s for s in schema["properties"][name]["anyOf"] if s.get("type") != "null"]
    return typed  # type: ignore[no-any-return]


OVERRIDES = {"judging.k": 2, "judging.max_k": 7, "judging.max_max_tokens": 900, "limits.max_responses": 5,
             "limits.max_batch_items": 3, "limits.max_response_chars": 1000}  # fmt: skip


async def test_openapi_states_the_bounds_and_the_configured_limits() -> None:
    async with client_for(OVERRIDES) as client:
        schema = (await client.get("/openapi.json")).json()
    for name in ("ScoreRequest", "ScoreBatchRequest", "VLLMScoreRequest", "RewardRequest", "SlimeRewardRequest",
                 "ChatRewardRequest"):  # fmt: skip
        model = openapi_of(schema, name)
        assert (knob(model, "k")["minimum"], knob(model, "k")["maximum"]) == (1, 7), name
        assert (knob(model, "k_meta")["minimum"], knob(model, "k_meta")["maximum"]) == (0, 7), name
        assert (knob(model, "temperature")["minimum"], knob(model, "temperature")["maximum"]) == (0, 2), name
        assert (knob(model, "max_tokens")["minimum"], knob(model, "max_tokens")["maximum"]) == (16, 900), name
        assert (knob(model, "seed")["minimum"], knob(model, "seed")["maximum"]) == (0, 2**31 - 1), name
        assert knob(model, "k")["type"] == knob(model, "seed")["type"] == "integer"
    score = openapi_of(schema, "ScoreRequest")
    responses = score["properties"]["responses"]
    assert (responses["minItems"], responses["maxItems"], responses["items"]["maxLength"]) == (1, 5, 1000)
    items = openapi_of(schema, "ScoreBatchRequest")["properties"]["items"]
    assert (items["minItems"], items["maxItems"]) == (1, 3)
    assert openapi_of(schema, "ChatRewardRequest")["properties"]["messages"]["minItems"] == 2
    assert "securitySchemes" not in schema["components"]


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ({"query": "q", "responses": ["a"]}, True),
        ({"messages": [{"role": "user", "content": "q"}], "responses": ["a"]}, True),
        ({"query": None, "messages": [{"role": "user", "content": "q"}], "responses": ["a"]}, True),
        ({"query": "q", "messages": [{"role": "user", "content": "q"}], "responses": ["a"]}, False),
        ({"responses": ["a"]}, False),
        ({"query": None, "messages": None, "responses": ["a"]}, False),
        ({"query": "q", "responses": []}, False),
        ({"query": "   ", "responses": ["a"]}, False),
        ({"query": "q", "responses": ["a"] * 6}, False),
        ({"query": "q", "responses": ["a"], "k": 8}, False),
        ({"query": "q", "responses": ["a"], "k": 7, "temperature": 2}, True),
        ({"query": "q", "responses": ["a"], "temperature": 2.5}, False),
        ({"query": "q", "responses": ["a"], "max_tokens": 901}, False),
        ({"query": "q", "responses": ["a"], "seed": 2**31}, False),
        ({"query": "q", "responses": ["a"], "k": True}, False),
    ],
)
async def test_the_schema_and_the_server_agree(body: dict[str, Any], accepted: bool) -> None:
    async with client_for(OVERRIDES) as client:
        schema = (await client.get("/openapi.json")).json()
        answer = await client.post("/score", json=body)
    root = {"$ref": "#/components/schemas/ScoreRequest", "components": schema["components"]}
    valid = jsonschema.Draft202012Validator(root).is_valid(body)
    assert valid is accepted
    assert (answer.status_code == 200) is accepted, answer.text


async def test_openapi_names_the_bearer_scheme_on_protected_routes_when_keys_are_set() -> None:
    async with client_for({"server.api_keys": [KEY]}) as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/score"]["post"]["security"] == [{"bearer": []}]
    assert schema["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


# 4. a batch's shared knobs


@pytest.mark.parametrize(("knobs", "param"), [({"k": 0}, "k"), ({"k": 65}, "k"), ({"temperature": 2.5}, "temperature"),
                         ({"seed": -1}, "seed"), ({"max_tokens": 5000}, "max_tokens"), ({"k_meta": 1}, "k_meta")])  # fmt: skip
async def test_a_bad_shared_knob_fails_the_whole_batch_once(knobs: dict[str, Any], param: str) -> None:
    gen = ScriptedGenerator()
    items = [{"query": "q", "responses": ["a"]}, {"query": "r", "responses": ["b", "c"]}]
    async with client_for(generator=gen) as client:
        assert_error(await client.post("/score/batch", json={"items": items, **knobs}), 400, param)
    assert gen.calls == []


# Bodies whose groups would otherwise get the fallback reward (an empty prompt, no groups at all): a bad shared
# knob must still be the caller's 400, never a 200 with the fallback.
FALLBACK_BODIES: dict[str, list[dict[str, Any]]] = {"/get_reward": [{"query": [], "prompts": []}, {"query": ["P:a"], "prompts": ["P:"]}],
                                                 "/reward": [{"prompt": "", "response": "a"}, {"prompt": "P:", "response": "a"}]}  # fmt: skip


@pytest.mark.parametrize("route", list(FALLBACK_BODIES))
@pytest.mark.parametrize(
    ("knobs", "param"), [({"seed": -1}, "seed"), ({"k": 0}, "k"), ({"temperature": 3}, "temperature")]
)
async def test_a_bad_shared_knob_fails_a_reward_call_once(route: str, knobs: dict[str, Any], param: str) -> None:
    gen = ScriptedGenerator()
    async with client_for(generator=gen) as client:
        for body in FALLBACK_BODIES[route]:
            assert_error(await client.post(route, json={**body, **knobs}), 400, param)
    assert gen.calls == []


async def test_a_budget_too_small_for_one_item_fails_that_item_only() -> None:
    # regex output needs 96 + 8 tokens per response: 104 fits the one-response item, not the three-response one
    items = [{"query": "q", "responses": ["a"]}, {"query": "r", "responses": ["a", "b", "c"]}]
    async with client_for() as client:
        r = await client.post(
            "/score/batch", json={"items": items, "k": 1, "max_tokens": 104, "structured_output": "regex"}
        )
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["rewards"] == [1] and second["error"]["param"] == "max_tokens"


# 5. field names in the caller's terms; one Unicode check

TAGS = re.compile(r"function-|\[valid_unicode|list\[|\bbody\.|\bstr\]")


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/reward", {"prompt": "x\ud800", "response": "a"}, "prompt"),
        ("/reward", {"prompt": [{"role": "user", "content": "x\ud800"}], "response": "a"}, "prompt.0.content"),
        ("/reward", {"prompt": "p", "response": "\udfff"}, "response"),
        ("/v1/chat/completions", {"messages": [CHAT[0], {"role": "assistant", "content": "\ud800"}]},
         "messages.1.content"),
        ("/score", {"messages": [{"role": "user", "content": "\ud800"}], "responses": ["a"]}, "messages.0.content"),
        ("/score", {"query": "\ud800", "responses": ["a"]}, "query"),
        ("/v1/score", {"text_1": 5, "text_2": ["a"]}, "text_1"),
        ("/reward", {"prompt": 5, "response": "a"}, "prompt"),
    ],
)  # fmt: skip
async def test_errors_name_fields_without_validator_internals(route: str, body: dict[str, Any], param: str) -> None:
    async with client_for() as client:
        err = assert_error(await raw_post(client, route, json.dumps(body).encode()), 400, param)
    assert not TAGS.search(err["message"]) and "Value error" not in err["message"], err


async def test_a_batch_item_error_names_its_field_plainly() -> None:
    items = [{"messages": [{"role": "user", "content": "\ud800"}], "responses": ["a"]}]
    async with client_for() as client:
        r = await raw_post(client, "/score/batch", json.dumps({"items": items}).encode())
    (result,) = r.json()["results"]
    assert (
        result["error"]["param"] == "messages.0.content"
        and "items.0: messages.0.content: " in result["error"]["message"]
    )
    assert not TAGS.search(result["error"]["message"])


async def test_the_http_models_and_the_core_refuse_text_with_the_same_words() -> None:
    text = "ok \udc80"
    async with client_for() as client:
        http = assert_error(
            await raw_post(client, "/score", json.dumps({"query": "q", "responses": [text]}).encode()), 400
        )
    with pytest.raises(InvalidRequestError) as core:
        Planner(Settings(), TemplateName.DEEPSEEK_GRM, has_meta_rm=False).plan(
            JudgeRequest((Message("user", "q"),), (text,))
        )
    problem = unicode_problem(text)
    assert problem is not None and "\\udc80 at 3" in problem
    assert http["message"] == core.value.message == f"responses.0: {problem}"
    assert http["code"] == core.value.code == "invalid_unicode"


FIELD = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda s: s not in {"str", "int", "float",
                                                                                          "bool", "none", "list",
                                                                                          "dict", "bytes", "any"})  # fmt: skip
TAG = st.sampled_from(["function-after[valid_unicode(), str]", "list[ChatMessageIn]", "str", "list[str]",
                       "ChatMessageIn", "dict[str,any]", "nullable[str]"])  # fmt: skip


@given(st.lists(st.one_of(FIELD, st.integers(0, 99)), min_size=1, max_size=6), st.data())
def test_caller_loc_keeps_fields_and_indices_and_drops_tags(parts: list[str | int], data: st.DataObject) -> None:
    loc: list[object] = ["body"]
    for part in parts:
        loc.append(part)
        if data.draw(st.booleans()):
            loc.append(data.draw(TAG))
    assert caller_loc(loc) == ".".join(map(str, parts))


# 6. only UTF-8 JSON

DOC = {"query": "caf\u00e9", "responses": ["a"]}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (json.dumps(DOC).encode("utf-16"), "byte order mark of UTF-16-LE"),
        (b"\xfe\xff" + json.dumps(DOC).encode("utf-16-be"), "byte order mark of UTF-16-BE"),
        (json.dumps(DOC).encode("utf-32"), "byte order mark of UTF-32-LE"),
        (json.dumps(DOC).encode("utf-8-sig"), "byte order mark of UTF-8"),
        (json.dumps(DOC).encode("utf-16-le"), "JSON encoded as UTF-16-LE"),
        (json.dumps(DOC).encode("utf-16-be"), "JSON encoded as UTF-16-BE"),
        (json.dumps(DOC).encode("utf-32-be"), "JSON encoded as UTF-32-BE"),
        (json.dumps(DOC, ensure_ascii=False).encode("latin-1"), "not valid UTF-8 (byte 0xe9 at offset 14)"),
        (b'{"query": "\xed\xa0\x80", "responses": ["a"]}', "not valid UTF-8 (byte 0xed at offset 11)"),
        (b'{"query": "q", "responses": ["a"], "k": ' + b"7" * 5000 + b"}", "integer of more than 4300 digits"),
        (b'{"query": "q", "responses": ["a"], "temperature": NaN}', "NaN is not a JSON number"),
        (b'{"query": "q", "responses": ["a"], "temperature": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"query": "q",', "not valid JSON: Expecting property name"),
    ],
)
async def test_a_body_that_is_not_utf8_json_is_refused_with_the_true_reason(raw: bytes, needle: str) -> None:
    gen = ScriptedGenerator()
    async with client_for(generator=gen) as client:
        for route in ("/score", "/get_reward"):
            err = assert_error(await raw_post(client, route, raw), 400)
            assert needle in err["message"], err
            assert "send JSON encoded as UTF-8" in err["message"] or "UTF-8" not in needle
    assert gen.calls == []


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(JSON_VALUES, st.booleans())
def test_every_utf8_json_document_parses_as_json_loads_reads_it(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:  # text with lone surrogates: only its \\u escapes are UTF-8
        raw = json.dumps(value).encode()
    assert parse_json_body(raw) == json.loads(raw)


# 7. X-Request-Id


@pytest.mark.parametrize(
    ("given_id", "kept"),
    [("trace-7", True), ("a.b:c_d-9", True), ("x" * 64, True), ("x" * 65, False), ("<script>alert(1)</script>", False),
     ("a b", False), ("id\x01", False), ("caf\u00e9", False), ('"quoted"', False), ("", False)],
)  # fmt: skip
async def test_a_callers_request_id_is_kept_only_when_plain(given_id: str, kept: bool) -> None:
    async with client_for() as client:
        r = await client.post("/score", json=BODIES["/score"], headers=[(b"x-request-id", given_id.encode("latin-1"))])
    rid = r.headers["x-request-id"]
    assert r.headers.get_list("x-request-id") == [rid] and r.json()["id"] == rid
    if kept:
        assert rid == given_id
    else:
        assert rid != given_id and re.fullmatch(r"[0-9a-f]{32}", rid)


# 8. no query strings in the access log


async def test_the_access_log_line_holds_no_query_string(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.access")
    async with client_for() as client:
        await client.get("/health?token=SECRET-1")
        await client.post("/score?api_key=SECRET-2", json=BODIES["/score"])
        await client.get("/nowhere?SECRET-3=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "server.access"]
    assert len(lines) == 3 and " GET /health 200 " in lines[0] and " POST /score 200 " in lines[1]
    assert not any("SECRET" in line or "?" in line for line in lines), lines
