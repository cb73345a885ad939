"""Generator over any OpenAI-compatible server (vllm serve, SGLang, hosted) via the async `openai` client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import openai

from server.core.errors import BackendError, BackendUnavailableError, InvalidRequestError
from server.core.generators.base import Generation, SamplingConfig

if TYPE_CHECKING:
    from server.core.settings import GeneratorSettings


class OpenAIGenerator:
    """Chat completions with `n`, `seed` and `structured_outputs.regex` in `extra_body`."""

    def __init__(self, settings: GeneratorSettings) -> None:
        if not settings.base_url:
            raise ValueError("the openai backend needs a base_url")
        self._settings = settings
        key = settings.api_key.get_secret_value() if settings.api_key else "EMPTY"
        self._client = openai.AsyncOpenAI(
            base_url=settings.base_url, api_key=key, timeout=settings.timeout_s, max_retries=0
        )
        self._model = settings.model
        self._error: str | None = "not connected yet"

    @property
    def model_name(self) -> str:
        return self._settings.served_model_name or self._model or "unknown"

    async def start(self) -> None:
        try:
            await self.check_ready()
        except BackendUnavailableError:
            pass  # the server may come up later; /ready reports it until then

    async def generate(self, prompt: str, sampling: SamplingConfig, request_id: str) -> Generation:
        if self._model is None:
            await self.check_ready()
        extra: dict[str, Any] = {}
        if sampling.regex:
            extra["structured_outputs"] = {"regex": sampling.regex}
        try:
            completion = await self._client.chat.completions.create(
                model=self._model or "",
                messages=[{"role": "user", "content": prompt}],
                n=sampling.n,
                temperature=sampling.temperature,
                max_tokens=sampling.max_tokens,
                seed=sampling.seed,
                extra_body=extra or None,
                extra_headers={"X-Request-Id": request_id},
            )
        except openai.APIConnectionError as exc:
            self._error = f"OpenAI-compatible server unreachable at {self._settings.base_url}: {exc}"
            raise BackendUnavailableError(self._error) from exc
        except openai.BadRequestError as exc:
            raise InvalidRequestError(f"the GRM server rejected the request: {exc.message}", param="responses") from exc
        except openai.APIStatusError as exc:
            raise BackendError(f"the GRM server answered {exc.status_code}: {exc.message}") from exc
        self._error = None
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
        )

    async def check_ready(self) -> None:
        try:
            models = await self._client.models.list()
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            self._error = f"OpenAI-compatible server not reachable at {self._settings.base_url}: {exc}"
            raise BackendUnavailableError(self._error) from exc
        names = [m.id for m in models.data]
        if self._model is None:
            if not names:
                raise BackendUnavailableError("the OpenAI-compatible server lists no model")
            self._model = names[0]
        elif names and self._model not in names:
            raise BackendUnavailableError(f"model {self._model!r} is not served there (it serves {names})")
        self._error = None

    async def close(self) -> None:
        await self._client.close()
