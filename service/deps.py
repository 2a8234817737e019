"""FastAPI dependencies as ``Annotated`` aliases: the app-state objects, the dialogue id, auth.

All are ``async def``: FastAPI runs plain ``def`` dependencies in a worker thread, a hop per request
that showed at the top of the event-loop profile.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings
from service.errors import ErrorKind, ServiceError
from service.metrics import Metrics
from service.pipeline import Pipeline
from turnwise.api import DIALOGUE_ID_PATTERN


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_pipeline(request: Request) -> Pipeline:
    return request.app.state.pipeline


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def key_is_valid(settings: Settings, presented: str | None) -> bool:
    """Constant-time check against every configured key (no early exit that leaks which one matched)."""
    if not settings.auth_enabled:
        return True
    if not presented:
        return False
    given = presented.encode()
    ok = False
    for key in settings.api_keys:
        ok |= hmac.compare_digest(given, key.get_secret_value().encode())
    return ok


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


# The OpenAPI security scheme (Swagger's Authorize button); auto_error=False so that a missing or
# malformed header is our own 401 body, not FastAPI's 403.
BEARER = HTTPBearer(
    scheme_name="bearer",
    bearerFormat="API key",
    description="One of the keys in TURNWISE_API_KEYS, sent as `Authorization: Bearer <key>`. "
    "When TURNWISE_API_KEYS is empty, authentication is off and any or no key is accepted.",
    auto_error=False,
)


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> None:
    token = credentials.credentials.strip() if credentials is not None else None
    if not key_is_valid(request.app.state.settings, token):
        raise ServiceError(ErrorKind.unauthenticated, "missing or invalid API key (Authorization: Bearer <key>)")


SettingsDep = Annotated[Settings, Depends(get_settings)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DialogueId = Annotated[str, Path(pattern=DIALOGUE_ID_PATTERN, description="1-128 characters of [A-Za-z0-9._:-]")]
Authenticated = Depends(require_api_key)
