"""Operations: force a bundle reload check (the same load-check-swap the poller runs)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from service.deps import Authenticated
from service.schemas import ReloadOut, errors
from turnwise.api import ErrorKind as K

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Authenticated])


@router.post(
    "/reload",
    response_model=None,
    responses={
        200: {"model": ReloadOut, "description": "reloaded: false when the bundle did not change."},
        **errors(K.unauthenticated, K.invalid, K.bundle_rejected, K.model_unavailable),
    },
)
async def reload(
    request: Request, force: bool = Query(False, description="Reload even if bundle.json did not change.")
) -> JSONResponse:
    """Reload the bundle if it changed (``force``: even if not); 422 if the new one fails its checks
    (the old one keeps serving)."""
    body = await request.app.state.engine.reload(force=force)
    request.app.state.metrics.count("admin", "ok")
    return JSONResponse(body)
