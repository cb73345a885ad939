"""The app factory: `create_app(settings, generator=..., meta_rm=...)`; engines start in the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from meta_rm.protocol import MetaRM
from server.core.engines import open_service
from server.core.errors import GRMError
from server.core.generators.base import Generator
from server.core.settings import Settings
from server.core.supervisor import Supervisor
from server.http.metrics import Metrics
from server.http.openapi import served_openapi
from server.http.routes import compat, native, ops, ui
from server.http.routes.edge import EdgeMiddleware, install_error_handlers
from server.http.serving import Runtime, Serving

logger = logging.getLogger(__name__)


def create_app(settings: Settings, generator: Generator | None = None, meta_rm: MetaRM | None = None) -> FastAPI:
    """Build the app; the engines (given, or built from settings) start when the app starts."""
    metrics = Metrics()
    runtime = Runtime()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def watch(sup: Supervisor) -> None:
            runtime.supervisors.append(sup)
            sup.listen(metrics.engine_state)

        async with contextlib.AsyncExitStack() as stack:
            try:
                runtime.service = await stack.enter_async_context(
                    open_service(
                        settings,
                        generator,
                        meta_rm,
                        observer=metrics,
                        on_supervisor=watch,
                        admission_observer=metrics,
                    )
                )
                runtime.error = None
                metrics.count_retries({"grm": runtime.service.generator, "meta_rm": runtime.service.meta_rm})
                logger.info("ready: serving %s", runtime.service.generator.model_name)
            except GRMError as exc:
                runtime.error, runtime.start_failed = exc.message, True
                logger.error("engines failed to start; /ready reports it: %s", exc.message)
            yield
            runtime.service, runtime.error = None, "shutting down"
            await serving.reattacher.close()  # judgments kept for a retry end before the engines close

    app = FastAPI(
        title="grm-server",
        version="0.1.0",
        summary="Inference-time scaling reward server (DeepSeek-GRM pointwise judgments, Voting@k, MetaRM@k)",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    serving = Serving(runtime, settings, join_observer=metrics, reattach_observer=metrics)
    app.state.serving = serving
    app.state.api_keys = [k.get_secret_value().encode() for k in settings.server.api_keys]
    install_error_handlers(app)
    app.add_middleware(
        EdgeMiddleware,
        metrics=metrics,
        max_body_bytes=settings.limits.max_body_bytes,
        body_timeout_s=settings.server.body_timeout_s,
    )
    app.include_router(native.router)
    app.include_router(compat.router)
    app.include_router(ops.router)
    app.include_router(ui.router)
    app.openapi = served_openapi(app, settings)  # type: ignore[method-assign]
    return app
