"""Probes and metrics: /healthz (process alive), /readyz (model loaded, store reachable), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from service.deps import MetricsDep
from service.errors import ErrorKind, ServiceError
from service.schemas import HealthOut, ReadyOut, errors
from service.store.errors import StoreError
from turnwise.api import ErrorKind as K

router = APIRouter(tags=["health"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
METRICS_EXAMPLE = 'turnwise_requests_total{endpoint="turns",outcome="scored"} 42.0\n'


class PrometheusText(PlainTextResponse):
    media_type = PROMETHEUS_TEXT


@router.get("/healthz", response_model=HealthOut, responses=errors())
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (no dependency is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=None,
    responses={200: {"model": ReadyOut, "description": "Model loaded and store reachable."},
               **errors(K.store_unavailable, K.model_unavailable)},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the model is loaded and the store answers; 503 while loading, draining or when Redis is down."""
    state = request.app.state
    if state.draining:
        raise ServiceError(ErrorKind.model_unavailable, "shutting down")
    bundle = state.engine.current  # model_unavailable until loaded
    try:
        await state.store.ping()  # store_unavailable when unreachable
    except StoreError:
        state.metrics.store_up.set(0)
        raise
    state.metrics.store_up.set(1)
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


@router.get(
    "/metrics",
    response_class=PrometheusText,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}, "example": METRICS_EXAMPLE}},
        },
        **errors(),
    },
)
async def metrics(m: MetricsDep) -> Response:
    """Prometheus metrics (requests by endpoint and outcome, failures included; latency by stage; batches; model;
    WebSocket connections; process CPU, memory and GC)."""
    return Response(m.render(), media_type=m.content_type)
