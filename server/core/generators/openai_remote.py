"""Generator over any OpenAI-compatible server (vllm serve, SGLang, hosted) via the async `openai` client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import openai

from server.core.errors import BackendError, BackendUnavailableError, InvalidRequestError, RequestTimeoutError
from server.core.generators.base import (
    ContinuationUnsupportedError,
    Generation,
    Partial,
    SamplingConfig,
    nth_seed,
    one_each,
)

if TYPE_CHECKING:
    from server.core.settings import GeneratorSettings

logger = logging.getLogger(__name__)
RETRY_DELAY_S = 0.5  # lets a restarting backend (or the next replica behind a Service) take the call
READY_TIMEOUT_S = 3.0  # a hung backend makes /ready answer 503 before a probe (timeoutSeconds: 5) gives up
CONTINUATION_FIELDS = frozenset({"continue_final_message", "add_generation_prompt"})


def upstream_param(exc: openai.APIStatusError) -> str | None:
    """The request field the upstream server's error names: the OpenAI error body's `param`, or the last
    `loc` part of a FastAPI/pydantic validation error (`{"detail": [{"loc": ["body", "field"], ...}]}`)."""
    if exc.param is not None:  # the SDK reads it from the body's `error` object
        return str(exc.param)
    body = exc.body
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        for entry in detail:
            loc = entry.get("loc") if isinstance(entry, dict) else None
            if isinstance(loc, list) and loc and isinstance(loc[-1], str):
                return loc[-1]
    return None


class OpenAIGenerator:
    """Chat completions with `n`, `seed` and `structured_outputs.regex` in `extra_body`."""

    def __init__(
        self, settings: GeneratorSettings, *, http_client: openai.DefaultAsyncHttpxClient | None = None
    ) -> None:
        if not settings.base_url:
            raise ValueError("the openai backend needs a base_url")
        self._settings = settings
        key = settings.api_key.get_secret_value() if settings.api_key else "EMPTY"
        self._client = openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=key,
            timeout=settings.timeout_s,
            max_retries=0,  # our own retry (below) is for seeded calls only
            http_client=http_client,  # tests inject faults through its transport
        )
        self._model = settings.model
        self._can_continue = True
        self.retried = 0  # engine calls sent again after the connection dropped (grm_engine_retries_total)

    restartable = False  # the engine is another process: /ready follows it, nothing here restarts it

    @property
    def model_name(self) -> str:
        return self._settings.served_model_name or self._model or "unknown"

    @property
    def chars_per_token(self) -> float | None:
        return None  # no tokenizer here: the whole-judgment regex keeps its one-character-per-token bounds

    async def start(self) -> None:
        try:
            await self.check_ready()
        except BackendUnavailableError:
            pass  # the server may come up later; /ready reports it until then

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        return await self._chat([{"role": "user", "content": prompt}], sampling, request_id, {})

    async def continue_judgments(
        self, prompt: str, partials: Sequence[Partial], sampling: SamplingConfig, request_id: str
    ) -> Generation:
        """Chat completions whose last message is the partial judgment, with vLLM's/SGLang's
        `continue_final_message`. A server whose 400/422 names one of those fields (the error's `param`) is
        not asked again (the caller resamples); any other refusal is passed on as it came."""
        if not self._can_continue:
            raise ContinuationUnsupportedError(f"{self._settings.base_url} cannot continue a message")
        extra = {"continue_final_message": True, "add_generation_prompt": False}
        try:
            gens = await asyncio.gather(
                *(
                    self._chat(
                        [{"role": "user", "content": prompt}, {"role": "assistant", "content": p.text}],
                        SamplingConfig(
                            1, sampling.temperature, sampling.max_tokens, nth_seed(sampling.seed, i), sampling.regex
                        ),
                        f"{request_id}-{i}",
                        extra,
                    )
                    for i, p in enumerate(partials)
                )
            )
        except InvalidRequestError as exc:
            if exc.param not in CONTINUATION_FIELDS:
                raise  # refused for another reason (e.g. the context is full): the judgments stay as they are
            self._can_continue = False  # the server refuses the continuation fields: never ask again
            raise ContinuationUnsupportedError(exc.message) from exc
        return one_each(gens)

    async def _chat(
        self, messages: list[dict[str, str]], sampling: SamplingConfig, request_id: str, extra: dict[str, Any]
    ) -> Generation:
        if self._model is None:
            await self.check_ready()
        extra = dict(extra)
        if sampling.regex:
            extra["structured_outputs"] = {"regex": sampling.regex}
        retries = self._settings.connection_retries if sampling.seed is not None else 0
        for attempt in range(retries + 1):
            try:
                completion = await self._client.chat.completions.create(
                    model=self._model or "",
                    messages=messages,  # type: ignore[arg-type]
                    n=sampling.n,
                    temperature=sampling.temperature,
                    max_tokens=sampling.max_tokens,
                    seed=sampling.seed,
                    extra_body=extra or None,
                    extra_headers={"X-Request-Id": request_id},
                )
                break
            except openai.APITimeoutError as exc:  # the deadline is spent: sending it again cannot help
                raise RequestTimeoutError(
                    f"the GRM server at {self._settings.base_url} did not answer in {self._settings.timeout_s} s"
                ) from exc
            except openai.APIConnectionError as exc:
                if attempt == retries:
                    raise BackendUnavailableError(
                        f"OpenAI-compatible server unreachable at {self._settings.base_url}: {exc}"
                    ) from exc
                # seeded = idempotent: the same call gives the same judgments, so a lost answer is asked again
                self.retried += 1
                logger.warning("request %s: connection to the GRM server dropped (%s); retrying", request_id, exc)
                await asyncio.sleep(RETRY_DELAY_S)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                raise InvalidRequestError(
                    f"the GRM server rejected the request: {exc.message}", param=upstream_param(exc)
                ) from exc
            except openai.APIStatusError as exc:
                message = f"the GRM server answered {exc.status_code}: {exc.message}"
                if exc.status_code == 503:  # a server (or its proxy) that is up but cannot serve now
                    raise BackendUnavailableError(message) from exc
                raise BackendError(message) from exc
        choices = sorted(completion.choices, key=lambda c: c.index)
        usage = completion.usage
        cached = 0
        if usage is not None and usage.prompt_tokens_details is not None:
            cached = usage.prompt_tokens_details.cached_tokens or 0
        return Generation(
            texts=tuple(c.message.content or "" for c in choices),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_tokens=cached,
            finish_reasons=tuple(c.finish_reason for c in choices),
        )

    async def check_ready(self) -> None:
        try:
            models = await self._client.models.list(timeout=READY_TIMEOUT_S)
        except openai.APITimeoutError as exc:
            raise BackendUnavailableError(
                f"OpenAI-compatible server at {self._settings.base_url} did not answer in {READY_TIMEOUT_S} s"
            ) from exc
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            raise BackendUnavailableError(
                f"OpenAI-compatible server not reachable at {self._settings.base_url}: {exc}"
            ) from exc
        names = [m.id for m in models.data]
        if self._model is None:
            if not names:
                raise BackendUnavailableError("the OpenAI-compatible server lists no model")
            self._model = names[0]
        elif names and self._model not in names:
            raise BackendUnavailableError(f"model {self._model!r} is not served there (it serves {names})")

    async def close(self) -> None:
        await self._client.close()
