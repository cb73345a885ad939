"""The one typed settings tree: defaults, then `GRM_*` environment variables, then CLI overrides."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meta_rm.settings import MetaRMBackend, MetaRMSettings
from server.core.prompts import StructuredOutput, TemplateName
from voting.orders import OrderStrategy

__all__ = ["Backend", "MetaRMBackend", "MetaRMSettings", "Settings"]


class Backend(enum.StrEnum):
    VLLM = "vllm"
    OPENAI = "openai"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "grm-server"


class GeneratorSettings(BaseModel):
    """The GRM that writes judgments."""

    backend: Backend = Field(Backend.VLLM, description="vllm: in-process engine; openai: any OpenAI-compatible server")
    model: str | None = Field(
        None,
        description="model path or name; unset = the embedded CPU default (vllm) or the server's first model (openai)",
    )
    served_model_name: str | None = Field(None, description="name reported in responses; default: the model")
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1 (openai backend)"
    )
    api_key: SecretStr | None = Field(None, description="API key for the OpenAI-compatible server")
    structured_output_backend: Literal["guidance", "xgrammar", "outlines", "auto"] = Field(
        "guidance",
        description="vLLM structured-output backend (vllm): guidance compiles the length-bounded score regex lazily; xgrammar takes seconds per new (n, max_tokens)",
    )
    max_model_len: int = Field(
        8192, ge=256, description="engine context length (vllm): prompt + judgment; 8192 = DeepSeek-GRM-27B's own"
    )
    dtype: str = Field("auto", description="engine dtype (vllm)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (vllm)")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="fraction of GPU memory for the engine (vllm, GPU)"
    )
    enforce_eager: bool = Field(True, description="skip graph compilation: fast start (CPU default)")
    cpu_kvcache_gb: int = Field(2, ge=1, description="KV cache size in GiB on CPU hosts (VLLM_CPU_KVCACHE_SPACE)")
    timeout_s: float = Field(600.0, gt=0, description="HTTP timeout towards the OpenAI-compatible server")
    connection_retries: int = Field(
        1,
        ge=0,
        le=5,
        description="times a seeded (idempotent) call is sent again when the connection to the OpenAI-compatible server drops (openai)",
    )


class JudgingSettings(BaseModel):
    """Defaults and bounds of the inference-time scaling."""

    k: int = Field(8, ge=1, description="default number of sampled judgments per request")
    max_k: int = Field(64, ge=1, description="largest k a request may ask for")
    k_meta: int | None = Field(
        None, ge=0, description="default judgments kept by the Meta RM; unset = k/2 when a Meta RM is loaded"
    )
    temperature: float = Field(0.5, ge=0, le=2, description="sampling temperature of judgments")
    max_tokens: int | None = Field(
        None,
        ge=16,
        description="default token budget of one judgment; unset = the template's (deepseek-grm 2048, generic 512)",
    )
    max_max_tokens: int = Field(4096, ge=16, description="largest max_tokens a request may ask for")
    template: TemplateName = Field(
        TemplateName.AUTO,
        description="judging prompt template; auto: deepseek-grm when the model name says grm, else generic",
    )
    structured_output: StructuredOutput = Field(
        StructuredOutput.AUTO,
        description="free+complete: free reasoning, a judgment without a box is completed; regex: whole-judgment regex; off; auto: free+complete for deepseek-grm, else regex",
    )
    order_strategy: OrderStrategy = Field(OrderStrategy.ROTATE, description="how responses are reordered per sample")
    retries: int = Field(1, ge=0, le=5, description="resampling rounds when no judgment is valid")


class LimitsSettings(BaseModel):
    """Bounds on what one request may cost."""

    max_responses: int = Field(32, ge=1, description="responses per request")
    max_response_chars: int = Field(32_000, ge=1, description="characters per response")
    max_query_chars: int = Field(64_000, ge=1, description="characters in the conversation")
    max_body_bytes: int = Field(4_000_000, ge=1024, description="HTTP body size")
    max_batch_items: int = Field(4096, ge=1, description="items per /score/batch request")
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        description="items judged at once (a /score call, a batch item, a prompt group, a joint judgment each "
        "count one); more wait in the queue",
    )
    max_queued_items: int = Field(
        4096,
        ge=0,
        description="items waiting for a judging slot, over all calls (served round-robin by call); a call that "
        "does not fit gets 429 with Retry-After, one that never could (more than max_concurrent_requests + this) 400",
    )
    queue_timeout_s: float = Field(
        600.0,
        gt=0,
        description="longest an item waits in the queue after its call arrived; beyond: 429, call cancelled",
    )
    request_timeout_s: float = Field(300.0, gt=0, description="per-request deadline; beyond: 504 and engine abort")


class SupervisionSettings(BaseModel):
    """Healing of in-process engines (vLLM GRM, vLLM Meta RM) whose engine process dies."""

    max_restarts: int = Field(
        3, ge=0, le=100, description="restart tries over the life of the process; then /health answers 503"
    )
    backoff_initial_s: float = Field(2.0, ge=0, description="wait before the first restart; doubles each try")
    backoff_max_s: float = Field(60.0, ge=0, description="longest wait between restarts")
    check_interval_s: float = Field(2.0, gt=0, description="how often a running engine is checked")


class RewardSettings(BaseModel):
    """RL-trainer reward routes (/get_reward, /reward): what a prompt group that cannot be judged gets."""

    fallback: float = Field(
        5.5,
        ge=0,
        le=10,
        description="reward (1..10 scale) of a rollout whose prompt group has no valid judgment or is out of limits; "
        "flagged `valid=0` in extra_logs",
    )
    strict: bool = Field(False, description="fail the whole call (4xx/502) instead of using the fallback reward")
    join: bool = Field(
        True,
        description="judge rollouts of one prompt that arrive close together (per-sample calls) in one judgment "
        "of at most rewards.join_cap responses",
    )
    join_cap: int = Field(
        16, ge=1, description="rollouts of one prompt judged together at most (/get_reward, joint judging)"
    )
    join_window_s: float = Field(
        0.05, ge=0, le=10, description="a joint group is judged when no rollout of its prompt arrived for this long"
    )
    join_max_wait_s: float | None = Field(
        None,
        ge=0,
        le=300,
        description="longest a rollout waits for others of its prompt; unset = 0.5 s when joining by window, "
        "30 s when joining by group size (rewards.group_size or the X-GRM-Group-Size header): rollouts of one "
        "prompt finish seconds apart; a value set here applies to both",
    )
    group_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="the trainer's rollouts per prompt (G): a prompt's rollouts are judged as soon as G are in "
        "(in judgments of at most rewards.join_cap), or at the max wait with what arrived; the per-call "
        "X-GRM-Group-Size header wins; unset = join by rewards.join_window_s",
    )
    reattach: bool = Field(
        True,
        description="an identical reward call (same route, body and API key) gets the judgment in flight or just "
        "finished instead of a new one (trainer retries after a client timeout)",
    )
    reattach_ttl_s: float = Field(
        60.0, ge=0, le=3600, description="how long a finished reward call's result is kept for an identical call"
    )
    abandon_grace_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description="a reward judgment whose callers all disconnected is aborted after this long, unless an "
        "identical call re-attached",
    )
    reattach_max_entries: int = Field(
        4096, ge=1, le=1_000_000, description="reward calls in flight, and finished results, kept for re-attachment"
    )

    def window_max_wait_s(self) -> float:
        return 0.5 if self.join_max_wait_s is None else self.join_max_wait_s

    def group_max_wait_s(self) -> float:
        return 30.0 if self.join_max_wait_s is None else self.join_max_wait_s


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="bind address")
    port: int = Field(8000, ge=0, le=65535, description="bind port")
    api_keys: list[SecretStr] = Field(default_factory=list, description="accepted Bearer keys; empty = no auth")
    log_texts: bool = Field(False, description="log full prompts and judgments (off: sizes only)")
    keep_alive_s: int = Field(
        5, ge=1, description="an idle keep-alive connection is closed this long after its last response"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a connection whose request headers are not complete this long after it opened (or after its first byte past a response) is closed",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a request body not complete this long after its headers gets a 408 and the connection is closed",
    )
    max_header_bytes: int = Field(
        65_536, ge=1024, description="request line + headers; beyond: 431 and the connection is closed"
    )
    max_connections: int | None = Field(
        None, ge=1, description="open connections (and requests) at most; beyond, uvicorn answers 503; unset = no limit"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRM_", env_nested_delimiter="__", extra="forbid")

    cache_dir: Path = Field(default_factory=_default_cache_dir, description="prepared models and engine caches")
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)  # type: ignore[arg-type]
    judging: JudgingSettings = Field(default_factory=JudgingSettings)  # type: ignore[arg-type]
    limits: LimitsSettings = Field(default_factory=LimitsSettings)  # type: ignore[arg-type]
    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    rewards: RewardSettings = Field(default_factory=RewardSettings)  # type: ignore[arg-type]
    meta_rm: MetaRMSettings = Field(default_factory=MetaRMSettings)  # type: ignore[arg-type]
    supervision: SupervisionSettings = Field(default_factory=SupervisionSettings)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.judging.k > self.judging.max_k:
            raise ValueError("judging.k must not exceed judging.max_k")
        if self.generator.backend is Backend.OPENAI and not self.generator.base_url:
            raise ValueError("generator.base_url is required with the openai backend")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        """A copy with nested overrides applied (None values are skipped), validated again."""
        merged = self.model_dump()
        for path, value in overrides.items():
            if value is None:
                continue
            node = merged
            *parents, leaf = path.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        for section in ("generator",):
            key = merged[section].get("api_key")
            if isinstance(key, SecretStr):
                merged[section]["api_key"] = key.get_secret_value()
        merged["server"]["api_keys"] = [
            k.get_secret_value() if isinstance(k, SecretStr) else k for k in merged["server"]["api_keys"]
        ]
        return Settings.model_validate(merged)
