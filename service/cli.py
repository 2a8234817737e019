"""What ``turnwise serve`` and ``turnwise replay`` call (the typer commands live in turnwise.cli)."""

from __future__ import annotations

import asyncio
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


def run_replay(
    url: str,
    data: Path,
    ws: bool,
    rate: float,
    max_dialogues: int | None,
    api_key: str | None,
    source: str = "jsonl",
    split: str | None = None,
) -> dict[str, Any]:
    """Stream dialogues into a running service; prints a line per turn and a summary; returns the summary."""
    from service.replay import load_dialogues, print_summary, replay

    dialogues = load_dialogues(data, source=source, split=split, max_dialogues=max_dialogues)
    summary = asyncio.run(replay(url, dialogues, ws=ws, rate=rate, api_key=api_key))
    print_summary(summary)
    return summary
