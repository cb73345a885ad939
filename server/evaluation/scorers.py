"""Where evaluation sends its core requests: the in-process judging service, or a running server's `/score`
over HTTP (the `/score` JSON is built and read here, so evaluation never imports the HTTP layer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from server.core.errors import GRMError, InvalidRequestError
from server.core.judging import JudgeService
from server.core.types import JudgeRequest, JudgeResult, Neutralizations, Sample, Usage

ROLES = frozenset({"system", "user", "assistant", "tool", "function", "ipython"})
"""The roles `/score` accepts; the in-process scorer refuses others the same way (a 400 for the item)."""

# Failures that say something about the item or the model (kept in items.jsonl); anything else
# (overload, backend down, lost connection) stops the run so that a rerun retries the item.
RECORDED_STATUSES = frozenset({400, 413, 422, 502, 504})


class ScoreFailure(Exception):
    """A `/score` call that returned an error body instead of a result."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        raw = body.get("error")
        error: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self.status = status
        self.type = str(error.get("type") or f"http_{status}")
        self.message = str(error.get("message") or body)
        super().__init__(f"{status} {self.type}: {self.message}")

    @property
    def recorded(self) -> bool:
        """True when the item should be recorded as failed rather than retried on the next run."""
        return self.status in RECORDED_STATUSES and self.type != "backend_error"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "type": self.type, "message": self.message[:500]}


@dataclass(frozen=True, slots=True)
class ScorerInfo:
    model: str
    meta_rm: str | None


class Scorer(Protocol):
    """Judges core requests; raises ScoreFailure with the error body on failure."""

    async def info(self) -> ScorerInfo: ...

    async def score(self, request: JudgeRequest) -> JudgeResult: ...


class ServiceScorer:
    """The in-process judging service (`server.core.engines.open_service`), same validation as `/score`."""

    def __init__(self, service: JudgeService) -> None:
        self.service = service

    async def info(self) -> ScorerInfo:
        rm = self.service.meta_rm
        return ScorerInfo(self.service.generator.model_name, rm.name if rm is not None else None)

    async def score(self, request: JudgeRequest) -> JudgeResult:
        try:
            for i, m in enumerate(request.messages):
                if m.role not in ROLES:
                    raise InvalidRequestError(
                        f"messages.{i}.role: {m.role!r} is not one of {sorted(ROLES)}", param=f"messages.{i}.role"
                    )
            return await self.service.judge(request)
        except GRMError as exc:
            raise ScoreFailure(exc.status, exc.to_body()) from exc


class HTTPScorer:
    """A running grm-server: `POST {url}/score`; `GET {url}/ready` names the model and the Meta RM."""

    def __init__(self, client: httpx.AsyncClient, url: str, api_key: str | None = None) -> None:
        self.client = client
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def info(self) -> ScorerInfo:
        r = await self.client.get(f"{self.url}/ready", headers=self.headers)
        body = _json(r)
        if r.status_code != 200:
            raise ScoreFailure(r.status_code, body)
        return ScorerInfo(str(body.get("model")), body.get("meta_rm"))

    async def score(self, request: JudgeRequest) -> JudgeResult:
        r = await self.client.post(f"{self.url}/score", json=score_body(request), headers=self.headers)
        out = _json(r)
        if r.status_code != 200:
            raise ScoreFailure(r.status_code, out)
        return result_from_body(out)


def score_body(request: JudgeRequest) -> dict[str, Any]:
    """The `/score` body of a core request, with every judgment returned (`return_samples`)."""
    knobs = {
        "k": request.k,
        "k_meta": request.k_meta,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "structured_output": request.structured_output.value if request.structured_output is not None else None,
    }
    return {
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "responses": list(request.responses),
        **{key: value for key, value in knobs.items() if value is not None},
        "return_samples": True,
    }


def result_from_body(body: dict[str, Any]) -> JudgeResult:
    """A `/score` response body read back into the core result (what the service would have returned)."""
    usage = body.get("usage") or {}
    samples = tuple(
        Sample(
            scores=tuple(s["scores"]) if s.get("scores") is not None else None,
            order=tuple(s["order"]),
            text=str(s.get("text", "")),
            principles=str(s.get("principles", "")),
            critique=str(s.get("critique", "")),
            error=s.get("error"),
            meta_reward=s.get("meta_reward"),
            kept=bool(s.get("kept", False)),
            finish_reason=s.get("finish_reason"),
            completed=bool(s.get("completed", False)),
        )
        for s in body.get("samples") or []
    )
    return JudgeResult(
        request_id=str(body["id"]),
        model=str(body["model"]),
        rewards=tuple(int(r) for r in body["rewards"]),
        scores=tuple(float(s) for s in body["scores"]),
        best=int(body["best"]),
        k=int(body["k"]),
        k_meta=int(body["k_meta"]),
        valid=int(body["valid"]),
        kept=int(body["kept"]),
        seed=int(body["seed"]),
        usage=Usage(**{key: int(usage.get(key, 0)) for key in Usage.__dataclass_fields__}),
        samples=samples,
        created=int(body.get("created", 0)),
        neutralized=Neutralizations(
            responses=tuple(int(x) for x in body.get("neutralized") or ()),
            conversation=int(body.get("neutralized_conversation", 0)),
        ),
    )


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"error": {"type": f"http_{r.status_code}", "message": r.text[:500]}}
    return body if isinstance(body, dict) else {"error": {"type": "bad_body", "message": str(body)[:500]}}
