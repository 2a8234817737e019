"""Probes and metrics: /healthz (process alive), /readyz (model loaded, store reachable), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.deps import MetricsDep
from service.errors import ErrorKind, ServiceError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    if state.draining:
        raise ServiceError(ErrorKind.model_unavailable, "shutting down")
    bundle = state.engine.current  # model_unavailable until loaded
    await state.store.ping()  # store_unavailable when unreachable
    return JSONResponse(
        {
            "status": "ready",
            "model": {
                "name": str(bundle.name),
                "version": str(bundle.version),
                "variant": str(bundle.variant),
            },
            "store": state.store.kind,
        }
    )


@router.get("/metrics")
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=m.content_type)
