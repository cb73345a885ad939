"""Operational routes: /health (alive), /ready (engines loaded), /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from server.http.protocol import ErrorResponse, HealthResponse, ReadyResponse
from server.http.routes.deps import KeyedRoute, ServingDep

router = APIRouter(tags=["operations"])
_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}


@router.get(
    "/health",
    summary="Liveness: 200 while the process can serve or is healing its engines; 503 once it cannot (replace it)",
    response_model=HealthResponse,
    responses={503: {"description": "the engines cannot be healed: replace the process"}},
)
async def health(serving: ServingDep) -> JSONResponse:
    reason = serving.runtime.health()
    if reason is None:
        return JSONResponse(HealthResponse().model_dump())
    return JSONResponse({"status": "unhealthy", "reason": reason}, status_code=503)


@router.get(
    "/ready",
    summary="Engines are loaded and answering; 503 with the reason otherwise",
    responses={503: {"model": ErrorResponse}},
)
async def ready(serving: ServingDep) -> ReadyResponse:
    return await serving.ready()


async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


router.add_api_route(
    "/metrics",
    metrics,
    methods=["GET"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: _TEXT, 401: {"model": ErrorResponse}},
    route_class_override=KeyedRoute,  # the API key, when configured, is checked before anything else
)
