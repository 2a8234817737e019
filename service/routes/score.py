"""Stateless scoring: a list of turns in, scores for the last turn (or every turn) out."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import Authenticated, PipelineDep
from service.schemas import ScoreAllResult, ScoreIn, ScoreResult, errors
from turnwise.api import ErrorKind as K

router = APIRouter(prefix="/v1", tags=["score"], dependencies=[Authenticated])


@router.post(
    "/score",
    response_model=None,
    responses={
        200: {
            "model": ScoreResult | ScoreAllResult,
            "description": "ScoreResult, or ScoreAllResult when all=true",
        },
        **errors(K.unauthenticated, K.too_large, K.invalid, K.overloaded, K.model_unavailable, K.deadline_exceeded),
    },
)
async def score(req: ScoreIn, pipeline: PipelineDep) -> JSONResponse:
    """Score turns without storing anything; ``all: true`` scores each turn with its own window.

    The windows are the ones a live call gets (the last ``window.max_turns`` turns up to the scored
    one). At most TURNWISE_MAX_TURNS_PER_REQUEST turns (413 above)."""
    return JSONResponse(await pipeline.score(req))
