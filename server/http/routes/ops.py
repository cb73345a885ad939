"""Operational routes: /health (alive), /ready (engines loaded), /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.http.routes.deps import ServingDep, check_auth

router = APIRouter(tags=["operations"])


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Engines are loaded and answering; 503 with the reason otherwise")
async def ready(serving: ServingDep) -> dict[str, Any]:
    return await serving.ready()


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(check_auth)])
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
