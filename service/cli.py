"""What ``turnwise serve`` calls (the typer command lives in cli.main).

Start-up mistakes are one line each: settings that do not validate name their ``TURNWISE_*``
variable, a missing bundle is refused before the server starts, and a bundle that fails its checks
while the server starts is logged as its cause alone (uvicorn would print the lifespan's whole
traceback; ``TURNWISE_DEBUG=1`` keeps it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.config import Settings
from turnwise.errors import DataError
from turnwise.names import BUNDLE_MANIFEST


class OneLineTracebacks(logging.Filter):
    """Turns a logged traceback text (uvicorn's lifespan failure) into its last line, the exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Traceback (most recent call last)"):
            lines = [line for line in message.splitlines() if line.strip()]
            record.msg, record.args, record.exc_info, record.exc_text = f"startup failed: {lines[-1]}", (), None, None
        return True


def settings_from(overrides: dict[str, Any]) -> Settings:
    """``Settings`` from the environment and ``overrides``; invalid values name their variable, one line."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        parts = []
        for e in err.errors():
            field = str(e.get("loc", ("?",))[0])
            name = f"--{field}" if field in overrides else f"TURNWISE_{field.upper()}"
            parts.append(f"{name}: {e.get('msg', 'invalid')}")
        raise DataError("invalid settings: " + "; ".join(parts)) from None


def check_bundle_path(bundle: Path | None) -> None:
    if bundle is None:
        raise DataError("no model bundle: pass --bundle or set TURNWISE_BUNDLE")
    if not bundle.exists():
        raise DataError("model bundle not found (--bundle / TURNWISE_BUNDLE)", path=str(bundle))
    if not (bundle / BUNDLE_MANIFEST).is_file():
        raise DataError(f"not a model bundle (no {BUNDLE_MANIFEST}); turnwise export writes one", path=str(bundle))


def run_serve(bundle: Path | None, host: str | None, port: int | None) -> None:
    """Serve until SIGTERM/Ctrl-C. Arguments given here beat ``TURNWISE_*`` env vars; None = env/default."""
    overrides: dict[str, Any] = {
        k: v for k, v in {"bundle": bundle, "host": host, "port": port}.items() if v is not None
    }
    settings = settings_from(overrides)
    check_bundle_path(settings.bundle)
    if os.environ.get("TURNWISE_DEBUG", "") in ("", "0"):
        logging.getLogger("uvicorn.error").addFilter(OneLineTracebacks())
    from service.serve import run

    run(settings)
