"""Turn ingestion and the dialogue resource: POST turns, GET window + last result, DELETE (end of call)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from service.deps import Authenticated, DialogueId, PipelineDep
from service.schemas import DialogueList, DialogueOut, TurnIn, TurnResult, errors
from turnwise.api import ErrorKind as K

router = APIRouter(prefix="/v1/dialogues", tags=["dialogues"], dependencies=[Authenticated])


@router.post(
    "/{dialogue_id}/turns",
    response_model=None,
    responses={
        200: {"model": TurnResult, "description": "The turn's scores and labels (a retry: the stored result)."},
        **errors(K.unauthenticated, K.conflict, K.too_large, K.invalid, K.overloaded, K.store_unavailable,
                 K.model_unavailable, K.deadline_exceeded),
    },
)
async def post_turn(dialogue_id: DialogueId, turn: TurnIn, pipeline: PipelineDep) -> JSONResponse:
    """Append a turn to the dialogue's window and score it with the window as the model sees it.

    Idempotent on (dialogue_id, seq): the same seq with the same speaker and text returns the stored
    result, so a client may retry any failure (429, 503, 504, a timeout) with the same body. A seq
    older than the last one, or the last one with other text, is a 409. Gaps in seq are allowed."""
    body = await pipeline.score_turn(dialogue_id, turn.seq, turn.speaker, turn.text, endpoint="turns")
    return JSONResponse(body)


@router.get(
    "",
    response_model=None,
    responses={
        200: {"model": DialogueList, "description": "Live calls, most recently scored first."},
        **errors(K.unauthenticated, K.invalid, K.store_unavailable),
    },
)
async def list_dialogues(pipeline: PipelineDep,
                         limit: Annotated[int, Query(ge=1, le=1000, description="Most calls listed.")] = 200,
                         ) -> JSONResponse:
    """Live calls (scored within the window TTL and not ended) with their latest labels and alert count."""
    body = await pipeline.live_calls(limit)
    pipeline.metrics.count("dialogue", "ok")
    return JSONResponse(body)


@router.get(
    "/{dialogue_id}",
    response_model=None,
    responses={
        200: {"model": DialogueOut, "description": "The window and the last result."},
        **errors(K.unauthenticated, K.not_found, K.invalid, K.store_unavailable),
    },
)
async def get_dialogue(dialogue_id: DialogueId, pipeline: PipelineDep) -> JSONResponse:
    """The current window (oldest first), the last result and the call's aggregates (turns scored, label
    counts, sentiment trend, alerts so far); 404 when the dialogue is unknown, ended or expired."""
    body = await pipeline.dialogue(dialogue_id)
    pipeline.metrics.count("dialogue", "ok")
    return JSONResponse(body)


@router.delete(
    "/{dialogue_id}",
    status_code=204,
    responses={204: {"description": "Forgotten (or never known)."},
               **errors(K.unauthenticated, K.invalid, K.store_unavailable)},
)
async def delete_dialogue(dialogue_id: DialogueId, pipeline: PipelineDep) -> Response:
    """End of call: forget the window (204 whether or not it existed)."""
    await pipeline.end(dialogue_id)
    pipeline.metrics.count("dialogue", "ok")
    return Response(status_code=204)
