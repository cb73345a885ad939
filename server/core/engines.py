"""Build the engines a Settings tree names: the generator (GRM), its prompt builder, the Meta RM."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from meta_rm.protocol import MetaRM
from server.core.admission import AdmissionObserver
from server.core.embedded import EMBEDDED_NAME, prepare_embedded_model
from server.core.errors import meta_rm_errors
from server.core.generators.base import Generator
from server.core.generators.openai_remote import OpenAIGenerator
from server.core.generators.vllm_local import VLLMGenerator
from server.core.judging import JudgeObserver, JudgeService, Planner
from server.core.prompts import PromptBuilder, TemplateName, resolve_template
from server.core.settings import Backend, MetaRMBackend, Settings
from server.core.supervisor import SupervisedGenerator, SupervisedMetaRM, Supervisor


def supervise(settings: Settings, gen: Generator, rm: MetaRM | None) -> tuple[Generator, MetaRM | None]:
    """Wrap the engines this process owns and that can die (`Generator.restartable`; the in-process vLLM Meta
    RM) in a Supervisor; remote engines are someone else's process: /ready follows them, nothing restarts them."""
    from meta_rm.vllm_local import VLLMMetaRM

    if gen.restartable:
        gen = SupervisedGenerator(gen, settings.supervision)
    if isinstance(rm, VLLMMetaRM):
        rm = SupervisedMetaRM(rm, settings.supervision)
    return gen, rm


def build_generator(settings: Settings) -> Generator:
    """The configured GRM engine (not started). No model on the vllm backend = the embedded CPU default."""
    gen = settings.generator
    if gen.backend is Backend.OPENAI:
        return OpenAIGenerator(gen)
    if gen.model is None:
        path = prepare_embedded_model(Path(settings.cache_dir))
        named = gen.model_copy(update={"served_model_name": gen.served_model_name or EMBEDDED_NAME})
        return VLLMGenerator(named, str(path), str(settings.cache_dir))
    return VLLMGenerator(gen, gen.model, str(settings.cache_dir))


TRAINED_INFO = "training.json"  # written by `grm-server train sft|grpo` into the model folder, with its "template"


def recorded_template(model: str) -> TemplateName | None:
    """The template a model folder trained by this project was trained on (its training.json), if it says."""
    info = Path(model) / TRAINED_INFO
    try:
        name = json.loads(info.read_text(encoding="utf-8")).get("template") if info.is_file() else None
        return TemplateName(name) if name is not None and name != TemplateName.AUTO.value else None
    except (OSError, ValueError, AttributeError):
        return None


def judging_template(settings: Settings) -> TemplateName:
    """The template named by settings; `auto` resolved once: the template a checkpoint trained here records,
    else from the model name (Appendix G for DeepSeek-GRM)."""
    model = settings.generator.model or settings.generator.served_model_name or EMBEDDED_NAME
    if settings.judging.template is TemplateName.AUTO and settings.generator.model:
        recorded = recorded_template(settings.generator.model)
        if recorded is not None:
            return recorded
    return resolve_template(settings.judging.template, model)


def build_prompt_builder(settings: Settings) -> PromptBuilder:
    return PromptBuilder(judging_template(settings))


def build_planner(settings: Settings) -> Planner:
    """The request planner these settings give; a budget that cannot fit raises ConfigurationError (before
    any engine loads)."""
    has_meta_rm = settings.meta_rm.backend is not MetaRMBackend.NONE
    return Planner(settings, judging_template(settings), has_meta_rm=has_meta_rm)


def build_meta_rm(settings: Settings) -> MetaRM | None:
    """The configured Meta RM (not started), or None for plain voting; bad settings raise ConfigurationError."""
    from meta_rm.factory import build_meta_rm as build

    cache = Path(settings.cache_dir)
    with meta_rm_errors():
        return build(settings.meta_rm, cache, embedded_backbone=lambda: prepare_embedded_model(cache))


__all__ = [
    "TemplateName",
    "build_generator",
    "build_meta_rm",
    "build_planner",
    "build_prompt_builder",
    "judging_template",
    "open_service",
    "supervise",
]


@contextlib.asynccontextmanager
async def open_service(
    settings: Settings,
    generator: Generator | None = None,
    meta_rm: MetaRM | None = None,
    observer: JudgeObserver | None = None,
    on_supervisor: Callable[[Supervisor], None] | None = None,
    admission_observer: AdmissionObserver | None = None,
) -> AsyncIterator[JudgeService]:
    """Build (unless given), start, and finally close the engines; yield the judging service."""
    prompts = build_prompt_builder(settings)
    build_planner(settings)  # settings that cannot serve fail here, before an engine loads
    gen = generator if generator is not None else await asyncio.to_thread(build_generator, settings)
    rm = meta_rm if meta_rm is not None else build_meta_rm(settings)
    gen, rm = supervise(settings, gen, rm)
    if on_supervisor is not None:
        for engine in (gen, rm):
            if isinstance(engine, SupervisedGenerator | SupervisedMetaRM):
                on_supervisor(engine.supervisor)
    try:
        await gen.start()
        if rm is not None:
            with meta_rm_errors():
                await rm.start()
        yield JudgeService(
            gen,
            prompts,
            settings,
            meta_rm=rm,
            observer=observer,
            admission_observer=admission_observer,
        )
    finally:
        if rm is not None:
            await rm.close()
        await gen.close()
