"""The WebSocket's AsyncAPI document (the OpenAPI one is FastAPI's ``/openapi.json``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.asyncapi import build_asyncapi
from service.schemas import errors

router = APIRouter(tags=["stream"])


@router.get(
    "/asyncapi.json",
    response_model=None,
    responses={200: {"description": "AsyncAPI 3.0 document of WS /v1/stream.",
                     "content": {"application/json": {"schema": {"type": "object"}}}}, **errors()},
)
async def asyncapi(request: Request) -> JSONResponse:
    """The AsyncAPI 3.0 document of ``WS /v1/stream``: frames, reply order, errors, authentication, close codes."""
    return JSONResponse(build_asyncapi(request.url.netloc or "127.0.0.1:8080"))
