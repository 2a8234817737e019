"""Turn ingestion and the dialogue resource: POST turns, GET window + last result, DELETE (end of call)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.deps import Authenticated, DialogueId, PipelineDep
from service.schemas import ERROR_RESPONSES, DialogueOut, TurnIn, TurnResult

router = APIRouter(prefix="/v1/dialogues", tags=["dialogues"], dependencies=[Authenticated], responses=ERROR_RESPONSES)


@router.post("/{dialogue_id}/turns", response_model=None, responses={200: {"model": TurnResult}})
async def post_turn(dialogue_id: DialogueId, turn: TurnIn, pipeline: PipelineDep) -> JSONResponse:
    """Append a turn to the dialogue's window and score it. Idempotent on (dialogue_id, seq)."""
    body = await pipeline.score_turn(dialogue_id, turn.seq, turn.speaker, turn.text, endpoint="turns")
    return JSONResponse(body)


@router.get("/{dialogue_id}", response_model=None, responses={200: {"model": DialogueOut}})
async def get_dialogue(dialogue_id: DialogueId, pipeline: PipelineDep) -> JSONResponse:
    """The current window (oldest first) and the last result."""
    return JSONResponse(await pipeline.dialogue(dialogue_id))


@router.delete("/{dialogue_id}", status_code=204)
async def delete_dialogue(dialogue_id: DialogueId, pipeline: PipelineDep) -> Response:
    """End of call: forget the window (204 whether or not it existed)."""
    await pipeline.end(dialogue_id)
    return Response(status_code=204)
