"""Operations: force a bundle reload check (the same load-check-swap the poller runs)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.deps import Authenticated
from service.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Authenticated], responses=ERROR_RESPONSES)


@router.post("/reload", response_model=None)
async def reload(request: Request, force: bool = False) -> JSONResponse:
    """Reload the bundle if it changed (``force``: even if not); 422 if the new one fails its checks."""
    return JSONResponse(await request.app.state.engine.reload(force=force))
