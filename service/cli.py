"""What ``turnwise serve`` calls (the typer command lives in cli.main)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.config import Settings


def run_serve(bundle: Path | None, host: str | None, port: int | None) -> None:
    """Serve until SIGTERM/Ctrl-C. Arguments given here beat ``TURNWISE_*`` env vars; None = env/default."""
    from service.serve import run

    overrides: dict[str, Any] = {
        k: v for k, v in {"bundle": bundle, "host": host, "port": port}.items() if v is not None
    }
    run(Settings(**overrides))
