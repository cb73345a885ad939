"""Settings of the Meta RM section (`GRM_META_RM__*`); the server's settings tree nests this model."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class MetaRMBackend(enum.StrEnum):
    """`none`: plain voting; `embedded`: the shipped head on the tiny CPU backbone (transformers);
    `hf`: a transformers sequence-classification model; `vllm`: vLLM pooling in-process (GPU);
    `remote`: a vLLM pooling server (`/classify`)."""

    NONE = "none"
    EMBEDDED = "embedded"
    HF = "hf"
    VLLM = "vllm"
    REMOTE = "remote"


class MetaRMSettings(BaseModel):
    backend: MetaRMBackend = Field(MetaRMBackend.NONE, description="none: plain voting")
    model: str | None = Field(
        None, description="path or name of the scalar Meta RM (hf, vllm); the served model name (remote, optional)"
    )
    base_url: str | None = Field(
        None, description="remote vLLM pooling server, e.g. http://127.0.0.1:8002 (remote backend)"
    )
    route: Literal["classify", "pooling"] = Field(
        "classify", description="pooling server route (remote): /classify or /pooling with task classify"
    )
    api_key: SecretStr | None = Field(None, description="Bearer key of the remote pooling server")
    batch_size: int = Field(
        8, ge=1, description="judgments scored per forward pass (hf, embedded); requests in flight (remote)"
    )
    max_length: int = Field(
        4096, ge=16, description="tokens per input; longer inputs lose tokens from the left, keeping the judgment"
    )
    dtype: str = Field(
        "auto", description="torch dtype (hf, embedded, vllm); auto = float32 on CPU, the checkpoint's dtype on GPU"
    )
    device: str = Field("auto", description="torch device (hf, embedded); auto = cuda when available, else cpu")
    gpu_memory_utilization: float = Field(
        0.2,
        gt=0,
        le=1,
        description="GPU memory fraction of the in-process pooling engine (vllm); the GRM engine needs the rest",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs of the in-process pooling engine (vllm)")
    enforce_eager: bool = Field(True, description="skip graph compilation of the pooling engine (vllm)")
    timeout_s: float = Field(120.0, gt=0, description="HTTP timeout towards the remote pooling server")
    connection_retries: int = Field(
        1, ge=0, le=5, description="times a scoring call is sent again when the connection drops (remote)"
    )
