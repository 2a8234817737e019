"""What a load test runs against: a real redis-server and ``turnwise serve`` on loopback, and a bundle.

Both processes are started on free loopback ports and stopped (SIGTERM, then SIGKILL) on exit; their
logs go to files next to the results so a failed run can be read afterwards. The redis-server, the
ports and the untrained bundles come from :mod:`harness`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.bundles import untrained_bundle
from harness.ports import free_port
from harness.redis import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


@contextlib.contextmanager
def redis_server(log_path: Path, binary: str | None = None) -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free loopback port; yields its URL."""
    with RedisServer(binary=binary, log_path=log_path) as server:
        yield server.url


def turnwise_command() -> list[str]:
    """The ``turnwise`` console script of this interpreter's environment (or the same via ``-c``)."""
    script = Path(sys.executable).parent / "turnwise"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cli.main import main; main()"]


@contextlib.contextmanager
def service(bundle: Path, redis_url: str, log_path: Path, env: dict[str, str] | None = None,
            start_timeout_s: float = 180) -> Iterator[tuple[str, dict[str, Any]]]:
    """``turnwise serve`` (uvicorn) with the Redis window store; yields (base URL, /readyz body)."""
    port = free_port()
    full_env = {**os.environ, "TURNWISE_REDIS_URL": redis_url, "TURNWISE_LOG_LEVEL": "warning",
                "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    cmd = [*turnwise_command(), "serve", "--bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=full_env)
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                        ready = json.loads(r.read())
                        break
                except OSError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"turnwise serve exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"turnwise serve not ready after {start_timeout_s:.0f}s (log: {log_path})")
                time.sleep(0.2)
            yield url, ready
        finally:
            _stop(proc)


def build_bundle(kind: str, out: Path, *, max_turns: int = 12, max_tokens: int = 128) -> Path:
    """A servable bundle at ``out`` (reused if it is already there and intact).

    ``tiny``: a 2-layer random BERT (tests, smoke runs). ``minilm``: the pretrained all-MiniLM-L6-v2
    backbone with untrained task heads -- the production architecture, so the same compute per turn
    as a trained model; the scores themselves are meaningless, which a load test does not look at.
    """
    from turnwise.window import WindowConfig

    return untrained_bundle(out, kind=kind, window=WindowConfig(max_turns=max_turns, max_tokens=max_tokens),
                            name=f"loadtest-{kind}", version="untrained-1")
