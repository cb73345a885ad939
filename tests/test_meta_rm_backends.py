"""Meta RM backends on the real embedded Meta RM: the factory and its errors, the transformers scorer, the
judging service's top-k_meta selection, vLLM pooling in-process, and a real vLLM pooling server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from meta_rm import remote as meta_rm_remote
from meta_rm.embedded import EMBEDDED_META_RM_NAME, EmbeddedMetaRM, prepare_embedded_meta_rm
from meta_rm.errors import MetaRMBackendError, MetaRMConfigError, MetaRMUnavailableError
from meta_rm.factory import build_meta_rm
from meta_rm.hf import HFMetaRM
from meta_rm.protocol import MetaRM, MetaRMInput
from meta_rm.remote import RemoteMetaRM
from meta_rm.settings import MetaRMBackend, MetaRMSettings
from meta_rm.vllm_local import VLLMMetaRM
from server.core.engines import build_meta_rm as server_build_meta_rm
from server.core.errors import ConfigurationError
from server.core.judging import JudgeService
from server.core.prompts import Message, PromptBuilder, TemplateName
from server.core.settings import Settings
from server.core.types import JudgeRequest
from tests.conftest import app_client, cache_dir
from tests.fakes import ScriptedGenerator, shown_responses
from tests.proxy import dropping_proxy
from tests.servers import Background, free_port, start_vllm_server
from voting import vote

INPUTS = [
    MetaRMInput(
        "User: What is the capital of France?",
        ("Paris.", "Lyon."),
        f"Specific Criteria: facts.\nAnalysis: {why}\nScores: \\boxed{{{box}}}",
    )
    for why, box in [
        ("Paris is right.", "9, 2"),
        ("Lyon is right.", "2, 9"),
        ("Both fine.", "5, 5"),
        ("Short.", "7, 3"),
        ("Long answer " * 6, "8, 1"),
    ]
]


@pytest.fixture(scope="session")
def meta_rm_folder(embedded_model: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The embedded Meta RM folder; starts the pooling server now if a selected test needs it."""
    folder = prepare_embedded_meta_rm(embedded_model, cache_dir())
    if any(item.get_closest_marker("meta_remote") for item in request.session.items):
        request.config.stash[_POOL] = start_pooling_server(folder)
    yield folder
    server = request.config.stash.get(_POOL, None)
    if server is not None:
        server.stop()


@pytest_asyncio.fixture(scope="session")
async def hf_meta_rm(meta_rm_folder: Path) -> AsyncIterator[HFMetaRM]:
    rm = HFMetaRM(meta_rm_folder, batch_size=4, max_length=1024)
    await rm.start()
    yield rm
    await rm.close()


def test_factory_builds_each_backend(meta_rm_folder: Path, tmp_path: Path) -> None:
    def build(**kw: object) -> MetaRM | None:
        return build_meta_rm(MetaRMSettings.model_validate(kw), tmp_path, embedded_backbone=lambda: tmp_path)

    assert build(backend="none") is None
    built = [
        build(backend="embedded"),
        build(backend="hf", model=str(meta_rm_folder)),
        build(backend="vllm", model=str(meta_rm_folder)),
        build(backend="remote", base_url="http://127.0.0.1:1/v1", model="m"),
        build(backend="hf", model="BBQGOD/DeepSeek-GRM-27B-MetaRM"),  # a hub name: loaded at start
    ]
    kinds = [EmbeddedMetaRM, HFMetaRM, VLLMMetaRM, RemoteMetaRM, HFMetaRM]
    assert [type(rm) for rm in built] == kinds
    assert all(isinstance(rm, MetaRM) for rm in built)
    assert built[0] is not None and built[0].name == EMBEDDED_META_RM_NAME
    assert built[3] is not None and built[3].name == "m"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backend": "hf"}, "needs meta_rm.model"),
        ({"backend": "vllm"}, "needs meta_rm.model"),
        ({"backend": "hf", "model": "/nonexistent/meta-rm"}, "is not a folder"),
        ({"backend": "hf", "model": "EMPTY_DIR"}, "has no config.json"),
        ({"backend": "remote"}, "needs meta_rm.base_url"),
        ({"backend": "remote", "base_url": "localhost:8000"}, "http(s) URL"),
    ],
)
def test_bad_settings_are_clear_configuration_errors(settings: dict[str, str], message: str, tmp_path: Path) -> None:
    if settings.get("model") == "EMPTY_DIR":
        settings = {**settings, "model": str(tmp_path)}
    with pytest.raises(MetaRMConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_meta_rm(MetaRMSettings.model_validate(settings), tmp_path)
    server_settings = Settings().with_overrides({f"meta_rm.{k}": v for k, v in settings.items()})
    with pytest.raises(ConfigurationError) as info:  # the server's error tree: 500 configuration_error
        server_build_meta_rm(server_settings)
    assert (
        info.value.status == 500
        and info.value.type == "configuration_error"
        and message.split()[0] in info.value.message
    )


def test_embedded_needs_its_backbone_and_a_sound_head(tmp_path: Path, embedded_model: Path) -> None:
    with pytest.raises(MetaRMConfigError, match="embedded backbone"):
        build_meta_rm(MetaRMSettings(backend=MetaRMBackend.EMBEDDED), tmp_path)
    bad = tmp_path / "head.json"
    bad.write_text('{"format": 1, "hidden_size": 3, "weight": [1.0]}')
    with pytest.raises(MetaRMConfigError, match="malformed"):
        prepare_embedded_meta_rm(embedded_model, tmp_path, head_file=bad)
    with pytest.raises(MetaRMConfigError, match="missing or unreadable"):
        prepare_embedded_meta_rm(embedded_model, tmp_path, head_file=tmp_path / "absent.json")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRM_META_RM__BACKEND", "remote")
    monkeypatch.setenv("GRM_META_RM__BASE_URL", "http://10.0.0.2:8002")
    monkeypatch.setenv("GRM_META_RM__ROUTE", "pooling")
    s = Settings().meta_rm
    assert (s.backend, s.base_url, s.route) == (MetaRMBackend.REMOTE, "http://10.0.0.2:8002", "pooling")


async def test_hf_scores_are_deterministic_and_independent_of_batching(
    hf_meta_rm: HFMetaRM, meta_rm_folder: Path
) -> None:
    scores = await hf_meta_rm.score(INPUTS)
    assert len(scores) == len(INPUTS) and len(set(scores)) == len(scores)
    assert await hf_meta_rm.score(INPUTS[::-1]) == pytest.approx(scores[::-1], abs=1e-4)
    single = HFMetaRM(meta_rm_folder, batch_size=1, max_length=1024)  # no padding at all
    await single.start()
    assert await single.score(INPUTS) == pytest.approx(scores, abs=1e-4)
    await single.close()
    assert await hf_meta_rm.score([]) == []


async def test_embedded_backend_prepares_at_start_and_reports_readiness(embedded_model: Path) -> None:
    rm = build_meta_rm(
        MetaRMSettings(backend=MetaRMBackend.EMBEDDED), cache_dir(), embedded_backbone=lambda: embedded_model
    )
    assert rm is not None
    with pytest.raises(MetaRMUnavailableError, match="not started"):
        await rm.check_ready()
    with pytest.raises(MetaRMUnavailableError):
        await rm.score(INPUTS[:1])
    await rm.start()
    await rm.check_ready()
    assert len(await rm.score(INPUTS[:2])) == 2
    await rm.close()
    with pytest.raises(MetaRMUnavailableError, match="closed"):
        await rm.check_ready()


def varied_judge(prompt: str, i: int) -> str:
    """A scripted GRM whose scores differ per sample, so which judgments vote changes the result."""
    shown = shown_responses(prompt)
    scores = [1 + (3 * i + 5 * pos + len(text)) % 10 for pos, text in enumerate(shown)]
    return f"Specific Criteria: variety.\nAnalysis: sample {i} says {' then '.join(shown)}.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


async def test_judge_service_keeps_exactly_the_top_k_meta_judgments(hf_meta_rm: HFMetaRM) -> None:
    settings = Settings()
    service = JudgeService(
        ScriptedGenerator(judge=varied_judge), PromptBuilder(TemplateName.GENERIC), settings, meta_rm=hf_meta_rm
    )
    plain = JudgeService(ScriptedGenerator(judge=varied_judge), PromptBuilder(TemplateName.GENERIC), settings)
    request = JudgeRequest((Message("user", "Which is better?"),), ("Paris.", "Lyon is the capital."), k=6, seed=4)
    result = await service.judge(JudgeRequest(request.messages, request.responses, k=6, k_meta=2, seed=4))
    assert (result.k, result.k_meta, result.valid, result.kept) == (6, 2, 6, 2)
    rated = sorted((s.meta_reward for s in result.samples if s.meta_reward is not None), reverse=True)
    assert len(rated) == 6
    kept = [s for s in result.samples if s.kept]
    assert (
        sorted((s.meta_reward for s in kept if s.meta_reward is not None), reverse=True) == rated[:2]
    )  # the two best-rated vote
    assert result.rewards == vote([s.scores for s in kept if s.scores], 2).rewards
    default = await service.judge(JudgeRequest(request.messages, request.responses, k=6, seed=4))
    assert (default.k_meta, default.kept) == (3, 3)  # k/2 with a Meta RM loaded
    off = await service.judge(JudgeRequest(request.messages, request.responses, k=6, k_meta=0, seed=4))
    voting = await plain.judge(JudgeRequest(request.messages, request.responses, k=6, seed=4))
    assert (off.rewards, off.best, off.kept) == (voting.rewards, voting.best, 6)
    assert all(s.meta_reward is None and s.kept for s in off.samples)
    assert result.rewards != voting.rewards  # the selection mattered here


# --- vLLM pooling in-process and a real pooling server (vLLM CPU runs the classify task) ---


@pytest.mark.engine
async def test_vllm_in_process_pooling_scores_like_transformers(meta_rm_folder: Path, hf_meta_rm: HFMetaRM) -> None:
    rm = VLLMMetaRM(str(meta_rm_folder), cache_dir=str(cache_dir()), max_length=2048)
    await rm.start()
    try:
        await rm.check_ready()
        scores = await rm.score(INPUTS)
    finally:
        await rm.close()
    assert scores == pytest.approx(await hf_meta_rm.score(INPUTS), abs=2e-3)
    with pytest.raises(MetaRMUnavailableError, match="closed"):
        await rm.check_ready()


_POOL = pytest.StashKey[Background]()


def start_pooling_server(folder: Path) -> Background:
    """A real vLLM pooling server (`--runner pooling`) serving the embedded Meta RM."""
    return start_vllm_server(
        folder, EMBEDDED_META_RM_NAME, "--runner", "pooling", "--dtype", "float32",
        "--enforce-eager", "--max-model-len", "2048", name="meta-rm-pooling",
    )  # fmt: skip


@pytest.fixture(scope="session")
def pooling_url(meta_rm_folder: Path, request: pytest.FixtureRequest) -> str:
    server = request.config.stash.get(_POOL, None)
    if server is None:
        pytest.fail("pooling_url needs the `meta_remote` marker on the test")
    return server.wait()


@pytest.mark.meta_remote
@pytest.mark.parametrize("route", ["classify", "pooling"])
async def test_remote_pooling_server_scores_like_transformers(
    pooling_url: str, route: str, hf_meta_rm: HFMetaRM
) -> None:
    settings = MetaRMSettings(
        backend=MetaRMBackend.REMOTE, base_url=pooling_url + "/v1", model=EMBEDDED_META_RM_NAME, route=route
    )  # type: ignore[arg-type]
    rm = build_meta_rm(settings, cache_dir())
    assert rm is not None
    await rm.start()
    await rm.check_ready()
    try:
        remote = await rm.score(INPUTS)
    finally:
        await rm.close()
    # same chat text, same tokens, same float32 weights: only kernel rounding differs
    assert remote == pytest.approx(await hf_meta_rm.score(INPUTS), abs=2e-3)


async def test_unreachable_remote_is_unavailable_not_a_crash() -> None:
    rm = RemoteMetaRM(f"http://127.0.0.1:{free_port()}")
    await rm.start()  # tolerated: the server may come up later
    with pytest.raises(MetaRMUnavailableError, match="not reachable"):
        await rm.check_ready()
    with pytest.raises(MetaRMUnavailableError, match="not reachable"):
        await rm.score(INPUTS[:1])
    await rm.close()


@pytest.mark.parametrize(
    ("status", "payload", "error", "message"),
    [
        (500, {"error": "boom"}, MetaRMUnavailableError, "answered 500"),
        (400, {"error": {"message": "too long"}}, MetaRMBackendError, "answered 400"),
        (200, {"data": []}, MetaRMBackendError, "unexpected /classify response"),
    ],
)
async def test_remote_faults_become_meta_rm_errors(
    status: int, payload: object, error: type[Exception], message: str
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 50}]})
        return httpx.Response(status, json=payload)

    rm = RemoteMetaRM("http://pool:8000/v1", model="m", max_length=99, transport=httpx.MockTransport(handler))
    with pytest.raises(error, match=message) as info:
        await rm.score(INPUTS[:1])
    assert type(info.value) is error
    await rm.close()
    assert [str(r.url) for r in seen] == ["http://pool:8000/v1/models", "http://pool:8000/classify"]
    sent = httpx.Response(200, content=seen[1].content).json()
    assert sent["messages"][1] == {"role": "assistant", "content": INPUTS[0].judgment}
    # truncation is capped at the served context (50 < 99), keeps the end, and the raw logit comes back
    assert (sent["model"], sent["truncate_prompt_tokens"], sent["truncation_side"], sent["use_activation"]) == (
        "m",
        50,
        "left",
        False,
    )


async def test_remote_refuses_a_model_the_server_does_not_serve() -> None:
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, json={"data": [{"id": "other", "max_model_len": 512}]})
    )
    rm = RemoteMetaRM("http://pool:8000", model="m", transport=transport)
    with pytest.raises(MetaRMUnavailableError, match="'m' is not served"):
        await rm.check_ready()
    await rm.close()


# --- a remote pooling server whose connections drop (#11): scoring is deterministic, so it is asked again once ---


@pytest.mark.meta_remote
async def test_remote_meta_rm_asks_again_once_when_a_connection_drops(pooling_url: str, hf_meta_rm: HFMetaRM) -> None:
    async with dropping_proxy(pooling_url) as proxy:
        rm = RemoteMetaRM(proxy.url, model=EMBEDDED_META_RM_NAME, max_length=2048)
        try:
            proxy.drop = 1
            scores = await rm.score(INPUTS)
            assert (proxy.dropped, proxy.posts, rm.retried) == (1, len(INPUTS) + 1, 1)
            assert scores == pytest.approx(await hf_meta_rm.score(INPUTS), abs=2e-3)  # the lost one, re-asked
            proxy.drop, proxy.posts = -1, 0
            with pytest.raises(MetaRMUnavailableError, match="not reachable"):
                await rm.score(INPUTS[:1])
            assert (proxy.posts, rm.retried) == (2, 2)  # one call, one retry, no more
        finally:
            await rm.close()


@pytest.mark.meta_remote
async def test_a_meta_rm_dropping_connections_is_a_503_then_judging_resumes(
    pooling_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(meta_rm_remote, "READY_TIMEOUT_S", 0.5)
    async with dropping_proxy(pooling_url) as proxy:
        rm = RemoteMetaRM(proxy.url, model=EMBEDDED_META_RM_NAME, max_length=2048)
        async with app_client(generator=ScriptedGenerator(), meta_rm=rm) as (client, _):
            body = {"query": "q", "responses": ["a", "bb"], "k": 2, "k_meta": 1, "seed": 1}
            proxy.drop = -1
            r = await client.post("/score", json=body)
            assert r.status_code == 503 and set(r.json()["error"]) == {"message", "type", "param", "code"}
            await proxy.pause()
            assert (await client.get("/ready")).status_code == 503  # /ready follows the pooling server
            await proxy.resume()
            proxy.hang = True  # a server that accepts and never answers: 503 within the readiness timeout
            ready = await client.get("/ready")
            assert ready.status_code == 503 and "did not answer" in ready.json()["error"]["message"]
            proxy.hang = False
            await proxy.pause()
            await proxy.resume()
            proxy.drop = 0
            assert (await client.get("/ready")).status_code == 200
            assert (await client.post("/score", json=body)).json()["kept"] == 1
            assert 'grm_engine_retries_total{engine="meta_rm"} 2.0' in (await client.get("/metrics")).text


async def test_remote_meta_rm_retries_resets_but_not_timeouts() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 512}]})
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if len(calls) == 3:
            raise httpx.ReadTimeout("timed out")
        return httpx.Response(200, json={"data": [{"probs": [0.25]}]})

    rm = RemoteMetaRM("http://pool:8000", model="m", transport=httpx.MockTransport(handler))
    assert await rm.score(INPUTS[:1]) == [0.25]
    assert (calls, rm.retried) == (["/classify"] * 2, 1)
    with pytest.raises(MetaRMUnavailableError, match="timed out"):
        await rm.score(INPUTS[:1])
    assert len(calls) == 3  # a timeout spent the deadline: not sent again
    await rm.close()
