"""Settings of the Meta RM section (`GRM_META_RM__*`); the server's settings tree nests this model."""

from __future__ import annotations

import enum

from pydantic import BaseModel, Field


class MetaRMBackend(enum.StrEnum):
    NONE = "none"
    EMBEDDED = "embedded"
    HF = "hf"
    VLLM = "vllm"
    REMOTE = "remote"


class MetaRMSettings(BaseModel):
    backend: MetaRMBackend = Field(MetaRMBackend.NONE, description="none: plain voting")
    model: str | None = Field(None, description="path or name of the scalar Meta RM")
    base_url: str | None = Field(None, description="remote vLLM pooling server (remote backend)")
    batch_size: int = Field(8, ge=1, description="judgments scored per forward pass")
