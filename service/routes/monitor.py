"""GET /monitor: the live call monitor page and its two assets, served from the package (no CDN).

The page and its assets carry no data, so they are served without an API key; the page asks for the
key and sends it with every data call (``Authorization: Bearer``; on ``WS /v1/events`` the subprotocols
``turnwise, bearer.<key>``). A strict Content-Security-Policy keeps the page to this origin.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from service.errors import ErrorKind, ServiceError

router = APIRouter(tags=["monitor"], include_in_schema=False)

ASSETS = {
    "monitor.js": "text/javascript; charset=utf-8",
    "monitor.css": "text/css; charset=utf-8",
}
# Scripts, styles and connections only to this origin (ws:/wss: for /v1/events; CSP 'self' does not
# match a WebSocket URL in every browser); the favicon is an empty data: URL; no inline script or style.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new release's page and script arrive together
}


@cache
def asset(name: str) -> bytes:
    """An asset's bytes from the installed package (read once)."""
    return (files("service.monitor") / name).read_bytes()


@router.get("/monitor")
async def monitor_page() -> Response:
    """The monitor page (HTML, no data)."""
    return Response(asset("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/monitor/{name}")
async def monitor_asset(name: str) -> Response:
    """``monitor.js`` or ``monitor.css``; any other name is a 404."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ServiceError(ErrorKind.not_found, f"no monitor asset '{name[:64]}'")
    return Response(asset(name), media_type=media_type, headers=HEADERS)
