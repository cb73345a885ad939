"""Native routes: POST /score and POST /score/batch."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from server.http.protocol import ScoreParams, ScoreRequest
from server.http.routes.deps import RequestIdDep, ServingDep, check_auth, until_disconnect

router = APIRouter(dependencies=[Depends(check_auth)], tags=["native"])


class ScoreBatchRequest(ScoreParams):
    """`POST /score/batch`: items judged concurrently with shared parameters."""

    items: list[Any] = Field(
        description="each a ScoreItem ({query | messages, responses}); a bad item gets its own error entry"
    )


@router.post("/score", summary="Judge one query's responses with Voting@k (and MetaRM@k)")
async def score(body: ScoreRequest, request: Request, serving: ServingDep, rid: RequestIdDep) -> dict[str, Any]:
    return await until_disconnect(request, serving.score(body, rid))


@router.post("/score/batch", summary="Judge many items; per-item errors do not fail the batch")
async def score_batch(
    body: ScoreBatchRequest, request: Request, serving: ServingDep, rid: RequestIdDep
) -> dict[str, Any]:
    params = ScoreParams.model_validate(body.model_dump(exclude={"items"}))
    return await until_disconnect(request, serving.score_batch(body.items, params, rid))
