"""Stateless scoring: a list of turns in, scores for the last turn (or every turn) out."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import Authenticated, PipelineDep
from service.schemas import ERROR_RESPONSES, ScoreAllResult, ScoreIn, ScoreResult

router = APIRouter(prefix="/v1", tags=["score"], dependencies=[Authenticated], responses=ERROR_RESPONSES)


@router.post(
    "/score",
    response_model=None,
    responses={
        200: {
            "model": ScoreResult | ScoreAllResult,
            "description": "ScoreResult, or ScoreAllResult when all=true",
        }
    },
)
async def score(req: ScoreIn, pipeline: PipelineDep) -> JSONResponse:
    """Score turns without storing anything; ``all: true`` scores each turn with its own window."""
    return JSONResponse(await pipeline.score(req))
