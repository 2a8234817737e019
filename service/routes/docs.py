"""The WebSocket's AsyncAPI document (the OpenAPI one is FastAPI's ``/openapi.json``), and the API
pages ``/docs`` (Swagger UI) and ``/redoc`` served offline: their scripts, styles and favicon come from
the ``fastapi-offline`` package under ``/docs/assets/``, so the pages load with no outside host.

The app must be created with ``docs_url=None, redoc_url=None`` (FastAPI's own pages load from a CDN).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from service.asyncapi import build_asyncapi
from service.errors import ErrorKind, ServiceError
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


DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# No validator badge: Swagger UI would send the document to validator.swagger.io.
SWAGGER_PARAMETERS = {"validatorUrl": None}


@cache
def _static() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def _prefix(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _prefix(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
        swagger_ui_parameters={**(request.app.swagger_ui_parameters or {}), **SWAGGER_PARAMETERS},
    )


@router.get(OAUTH2_REDIRECT, include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    root = _prefix(request)
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}/docs/assets/redoc.standalone.js",
        redoc_favicon_url=f"{root}/docs/assets/favicon.png",
        with_google_fonts=False,
    )


@router.get("/docs/assets/{name}", include_in_schema=False)
async def docs_asset(name: str) -> FileResponse:
    """Swagger UI's and ReDoc's files from the installed package; any other name is a 404."""
    media_type = DOCS_ASSETS.get(name)
    if media_type is None:
        raise ServiceError(ErrorKind.not_found, f"no docs asset '{name[:64]}'")
    return FileResponse(_static() / name, media_type=media_type)
