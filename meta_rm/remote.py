"""The remote Meta RM: a vLLM pooling server (`python -m vllm.entrypoints.openai.api_server --runner pooling`)
over httpx, one `/classify` (or `/pooling`) chat request per judgment."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from meta_rm.errors import MetaRMBackendError, MetaRMConfigError, MetaRMUnavailableError
from meta_rm.inputs import meta_rm_messages
from meta_rm.protocol import MetaRMInput

Route = Literal["classify", "pooling"]
logger = logging.getLogger(__name__)
RETRY_DELAY_S = 0.5
READY_TIMEOUT_S = 3.0  # a hung server makes /ready answer 503 before a probe (timeoutSeconds: 5) gives up


def request_body(item: MetaRMInput, *, route: Route, model: str | None, max_length: int) -> dict[str, Any]:
    """The chat form of `meta_rm.inputs`: the server applies the model's chat template (as training did),
    adds no extra special tokens, keeps the last `max_length` tokens, and returns the raw logit."""
    body: dict[str, Any] = {
        "messages": meta_rm_messages(item),
        "add_special_tokens": False,
        "truncate_prompt_tokens": max_length,
        "truncation_side": "left",
        "use_activation": False,
    }
    if model:
        body["model"] = model
    if route == "pooling":
        body["task"] = "classify"
    return body


def parse_value(payload: Any, route: Route) -> float:
    """The one scalar of a `/classify` (`data[0].probs[0]`) or `/pooling` (`data[0].data[0]`) response."""
    try:
        entry = payload["data"][0]
        values = entry["probs"] if route == "classify" else entry["data"]
        while isinstance(values, list):
            values = values[0]
        return float(values)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MetaRMBackendError(f"unexpected /{route} response: {str(payload)[:200]}") from exc


class RemoteMetaRM:
    """Talks to a running pooling server; `start` tolerates it being down (check_ready reports it)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        route: Route = "classify",
        max_length: int = 4096,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        connection_retries: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise MetaRMConfigError(f"meta_rm.base_url must be an http(s) URL, got {base_url!r}")
        self._base = base_url.rstrip("/").removesuffix("/v1")
        self._model = model
        self._route: Route = route
        self._max_length = max_length
        self._server_limit: int | None = None  # the served model's max_model_len, from /v1/models
        self._gate = asyncio.Semaphore(concurrency)
        self._retries = connection_retries
        self.retried = 0  # scoring calls sent again after the connection dropped (grm_engine_retries_total)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=self._base, headers=headers, timeout=timeout_s, transport=transport)

    @property
    def name(self) -> str:
        return self._model or self._base

    async def start(self) -> None:
        try:
            await self.check_ready()
        except MetaRMUnavailableError:
            pass  # the server may come up later; /ready reports it until then

    async def _one(self, item: MetaRMInput) -> float:
        limit = min(self._max_length, self._server_limit or self._max_length)
        body = request_body(item, route=self._route, model=self._model, max_length=limit)
        async with self._gate:
            response = await self._post(body)
        if response.status_code >= 500:
            raise MetaRMUnavailableError(
                f"Meta RM server {self._base} answered {response.status_code}: {response.text[:300]}"
            )
        if response.status_code != 200:
            raise MetaRMBackendError(
                f"Meta RM server {self._base}/{self._route} answered {response.status_code}: {response.text[:300]}"
            )
        return parse_value(response.json(), self._route)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        """POST one scoring call; scoring is deterministic (idempotent), so a dropped connection is retried."""
        for attempt in range(self._retries + 1):
            try:
                return await self._client.post(f"/{self._route}", json=body)
            except httpx.TimeoutException as exc:  # the deadline is spent: sending it again cannot help
                raise MetaRMUnavailableError(f"Meta RM server at {self._base} timed out: {exc!r}") from exc
            except httpx.TransportError as exc:
                if attempt == self._retries:
                    raise MetaRMUnavailableError(f"Meta RM server not reachable at {self._base}: {exc!r}") from exc
                self.retried += 1
                logger.warning("connection to the Meta RM server dropped (%r); retrying", exc)
                await asyncio.sleep(RETRY_DELAY_S)
            except httpx.HTTPError as exc:
                raise MetaRMUnavailableError(f"Meta RM server at {self._base} failed: {exc!r}") from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def score(self, items: Sequence[MetaRMInput]) -> list[float]:
        if self._server_limit is None and items:
            await self.check_ready()
        return list(await asyncio.gather(*(self._one(item) for item in items)))

    async def check_ready(self) -> None:
        """Healthy, and serving the named model; learns its context length (truncation must not exceed it)."""
        try:
            response = await self._client.get("/v1/models", timeout=READY_TIMEOUT_S)
        except httpx.TimeoutException as exc:
            raise MetaRMUnavailableError(
                f"Meta RM server at {self._base} did not answer in {READY_TIMEOUT_S} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise MetaRMUnavailableError(f"Meta RM server not reachable at {self._base}: {exc!r}") from exc
        if response.status_code != 200:
            raise MetaRMUnavailableError(f"Meta RM server {self._base}/v1/models answered {response.status_code}")
        try:
            models = {m["id"]: m for m in response.json()["data"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise MetaRMUnavailableError(
                f"Meta RM server {self._base}/v1/models answered {response.text[:200]}"
            ) from exc
        if self._model is not None and self._model not in models:
            raise MetaRMUnavailableError(
                f"model {self._model!r} is not served at {self._base} (it serves {sorted(models)})"
            )
        card: dict[str, Any] = models.get(self._model or "") or next(iter(models.values()), {})
        limit = card.get("max_model_len")
        self._server_limit = int(limit) if isinstance(limit, int) else self._max_length

    async def close(self) -> None:
        await self._client.aclose()
