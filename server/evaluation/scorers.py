"""Where evaluation sends `/score` bodies: the in-process judging service or a running server over HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import ValidationError

from server.core.errors import GRMError, invalid_from_errors
from server.core.judging import JudgeService
from server.http.protocol import ScoreRequest, ScoreResponse

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
    """Judges `/score` bodies; raises ScoreFailure with the error body on failure."""

    async def info(self) -> ScorerInfo: ...

    async def score(self, body: dict[str, Any]) -> dict[str, Any]: ...


class ServiceScorer:
    """The in-process judging service (`server.core.engines.open_service`), same validation as `/score`."""

    def __init__(self, service: JudgeService) -> None:
        self.service = service

    async def info(self) -> ScorerInfo:
        rm = self.service.meta_rm
        return ScorerInfo(self.service.generator.model_name, rm.name if rm is not None else None)

    async def score(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            req = ScoreRequest.model_validate(body)
            result = await self.service.judge(req.judge_request(req.conversation(), req.responses))
        except ValidationError as exc:
            raise ScoreFailure(400, invalid_from_errors(exc.errors()).to_body()) from exc
        except GRMError as exc:
            raise ScoreFailure(exc.status, exc.to_body()) from exc
        return ScoreResponse.from_result(result, with_samples=req.return_samples).model_dump(mode="json")


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

    async def score(self, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post(f"{self.url}/score", json=body, headers=self.headers)
        out = _json(r)
        if r.status_code != 200:
            raise ScoreFailure(r.status_code, out)
        return out


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"error": {"type": f"http_{r.status_code}", "message": r.text[:500]}}
    return body if isinstance(body, dict) else {"error": {"type": "bad_body", "message": str(body)[:500]}}
