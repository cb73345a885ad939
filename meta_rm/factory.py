"""Build the Meta RM that settings name (not started); bad settings raise MetaRMConfigError at once."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from meta_rm.errors import MetaRMConfigError
from meta_rm.protocol import MetaRM
from meta_rm.settings import MetaRMBackend, MetaRMSettings


def _need(module: str, backend: MetaRMBackend, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MetaRMConfigError(f"the {backend.value} Meta RM backend needs the package {module!r} ({extra})")


def _local_model(settings: MetaRMSettings) -> str:
    """The model path or hub name; a path that looks local must be a model folder."""
    model = settings.model
    if not model:
        raise MetaRMConfigError(
            f"the {settings.backend.value} Meta RM backend needs meta_rm.model (a model folder or hub name)"
        )
    path = Path(model).expanduser()
    looks_local = path.is_absolute() or model.startswith((".", "~")) or path.exists() or model.count("/") != 1
    if looks_local:
        if not path.is_dir():
            raise MetaRMConfigError(f"meta_rm.model {model!r} is not a folder")
        if not (path / "config.json").is_file():
            raise MetaRMConfigError(f"meta_rm.model {model!r} has no config.json (save it with save_pretrained)")
        return str(path)
    return model


def build_meta_rm(
    settings: MetaRMSettings, cache_dir: Path, embedded_backbone: Callable[[], Path] | None = None
) -> MetaRM | None:
    """None for plain voting. `embedded_backbone` prepares the tiny GRM backbone folder (the server passes
    its embedded-model preparation); it is called at `start`, off the event loop."""
    backend = settings.backend
    if backend is MetaRMBackend.NONE:
        return None
    if backend is MetaRMBackend.REMOTE:
        from meta_rm.remote import RemoteMetaRM

        if not settings.base_url:
            raise MetaRMConfigError("the remote Meta RM backend needs meta_rm.base_url (the vLLM pooling server)")
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return RemoteMetaRM(
            settings.base_url, model=settings.model, api_key=key, route=settings.route, max_length=settings.max_length,
            concurrency=settings.batch_size, timeout_s=settings.timeout_s,
            connection_retries=settings.connection_retries,
        )  # fmt: skip
    _need("torch", backend, "pip install 'grm-server[cpu]' or torch")
    if backend is MetaRMBackend.EMBEDDED:
        from meta_rm.embedded import HEAD_FILE, EmbeddedMetaRM, load_head

        if embedded_backbone is None:
            raise MetaRMConfigError("the embedded Meta RM needs the embedded backbone (give embedded_backbone)")
        load_head(HEAD_FILE)  # fail now, not at start, if the shipped head is missing
        return EmbeddedMetaRM(
            embedded_backbone, Path(cache_dir), batch_size=settings.batch_size, max_length=settings.max_length,
            dtype=settings.dtype, device=settings.device,
        )  # fmt: skip
    model = _local_model(settings)
    if backend is MetaRMBackend.HF:
        from meta_rm.hf import HFMetaRM

        return HFMetaRM(
            model,
            batch_size=settings.batch_size,
            max_length=settings.max_length,
            dtype=settings.dtype,
            device=settings.device,
        )
    _need("vllm", backend, "pip install 'grm-server[gpu]' (GPU) or 'grm-server[cpu]'")
    from meta_rm.vllm_local import VLLMMetaRM

    return VLLMMetaRM(
        model, cache_dir=str(cache_dir), max_length=settings.max_length, dtype=settings.dtype,
        gpu_memory_utilization=settings.gpu_memory_utilization, tensor_parallel_size=settings.tensor_parallel_size,
        enforce_eager=settings.enforce_eager,
    )  # fmt: skip
