"""What ``turnwise sidecar`` calls (the typer command lives in cli.main).

With no arguments it runs until SIGTERM with settings from the environment (the chart's container):
``TURNWISE_REDIS_URL``, ``TURNWISE_KEY_PREFIX``, ``TURNWISE_BUNDLE`` and ``TURNWISE_SIDECAR_*``.
``--once`` runs one cycle (consume what is there, finetune if enough new labels), prints its report
as JSON and exits (1 if a finetune attempt failed).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from sidecar.loop import Sidecar
from sidecar.settings import SidecarSettings

log = logging.getLogger("turnwise.sidecar")


def run_sidecar(*, once: bool = False, bundle: Path | None = None, state_dir: Path | None = None,
                checkpoint: Path | None = None, heldout: Path | None = None, min_new_labels: int | None = None,
                log_level: str = "info") -> int:
    """Arguments given here beat the environment; None = environment/default. Returns the exit code."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    overrides: dict[str, Any] = {k: v for k, v in {
        "bundle": bundle, "state_dir": state_dir, "checkpoint": checkpoint, "heldout": heldout,
        "min_new_labels": min_new_labels}.items() if v is not None}
    sidecar = Sidecar(SidecarSettings(**overrides))
    try:
        if once:
            report = sidecar.cycle(force=True)
            print(json.dumps(report.to_dict(), indent=2))
            return 1 if report.attempt is not None and report.attempt.decision == "failed" else 0

        def on_signal(sig: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping (a running finetune is abandoned; nothing is published)", sig)
            sidecar.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        sidecar.run()
        return 0
    finally:
        sidecar.close()
