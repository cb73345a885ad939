"""Native routes: POST /score and POST /score/batch."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.http.protocol import ScoreBatchRequest, ScoreBatchResponse, ScoreRequest, ScoreResponse
from server.http.routes.deps import ERROR_RESPONSES, KeyedRoute, RequestIdDep, ServingDep, until_disconnect

router = APIRouter(route_class=KeyedRoute, tags=["native"], responses=ERROR_RESPONSES)


@router.post("/score", summary="Judge one query's responses with Voting@k (and MetaRM@k)")
async def score(body: ScoreRequest, request: Request, serving: ServingDep, rid: RequestIdDep) -> ScoreResponse:
    return await until_disconnect(request, serving.score(body, rid))


@router.post("/score/batch", summary="Judge many items; per-item errors do not fail the batch")
async def score_batch(
    body: ScoreBatchRequest, request: Request, serving: ServingDep, rid: RequestIdDep
) -> ScoreBatchResponse:
    return await until_disconnect(request, serving.score_batch(body, rid))
