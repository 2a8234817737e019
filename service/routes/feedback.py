"""Label feedback for the training sidecar, appended to the feedback stream."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import Authenticated, PipelineDep
from service.schemas import FeedbackIn, FeedbackOut, errors
from turnwise.api import ErrorKind as K

router = APIRouter(prefix="/v1", tags=["feedback"], dependencies=[Authenticated])


@router.post(
    "/feedback",
    status_code=202,
    response_model=None,
    responses={
        202: {"model": FeedbackOut, "description": "In the feedback stream."},
        **errors(K.unauthenticated, K.too_large, K.invalid, K.store_unavailable, K.model_unavailable),
    },
)
async def feedback(fb: FeedbackIn, pipeline: PipelineDep) -> JSONResponse:
    """Accept a corrected label for (dialogue_id, seq, task); 202 once it is in the stream.

    ``context`` says whether the turn's window was stored with it (``window``): only then can the
    training sidecar use the label. Feedback for a call whose window is gone (ended, expired, or the turn
    already trimmed out) is still recorded, as ``missing``, and counted but not trained on. An unknown
    task or label is a 422. Not idempotent: a retry records the label twice."""
    entry_id, attached = await pipeline.feedback(fb)
    pipeline.metrics.count("feedback", "ok")
    return JSONResponse({"status": "accepted", "id": entry_id, "context": "window" if attached else "missing"},
                        status_code=202)
