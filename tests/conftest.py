"""Shared fixtures: a tiny random BERT backbone (built once per session), the sample task schema,
an untrained tiny checkpoint, the public data root, and a real redis-server on a free loopback port.

The machinery lives in :mod:`harness`, shared with benchmarks/ and loadtests/ (``harness.ports.free_port``,
``harness.redis.RedisServer``, ``harness.bundles``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.bundles import tiny_backbone as build_tiny_backbone
from harness.bundles import untrained_checkpoint
from harness.redis import RedisServer, RedisServerNotFound
from turnwise.errors import DataError
from turnwise.tasks import TaskSchema, parse_tasks
from turnwise.window import WindowConfig

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"

SAMPLE_SCHEMA = {
    "tasks": {
        "intent": {"type": "binary", "labels": ["no_intent", "has_intent"]},
        "act": {"type": "multiclass", "labels": ["inform", "question", "directive", "commissive"]},
        "sentiment": {"type": "multiclass", "labels": ["negative", "neutral", "positive"]},
    }
}


@pytest.fixture(scope="session")
def sample_schema() -> TaskSchema:
    return parse_tasks(SAMPLE_SCHEMA)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone"))


@pytest.fixture(scope="session")
def tiny_checkpoint_session(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path,
                            sample_schema: TaskSchema) -> Path:
    """An untrained tiny student saved as a checkpoint (session-scoped: copy before modifying)."""
    return untrained_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"), tiny_backbone, name="tiny", version="0.0.1",
                                schema=sample_schema, window=WindowConfig(max_turns=8, max_tokens=64))


@pytest.fixture
def tiny_checkpoint(tiny_checkpoint_session: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_session, dst)
    return dst


@pytest.fixture(scope="session")
def data_root() -> Path:
    from trainer.data import default_data_root

    try:
        return default_data_root()
    except DataError as err:
        pytest.skip(f"public datasets not available: {err}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started redis-server (``.url``; ``.stop()`` / ``.start()`` bring it down and back on the same port)."""
    try:
        server = RedisServer(tmp_path, start_timeout_s=10)
    except RedisServerNotFound:
        pytest.skip("redis-server not installed (make test installs it with apt-get)")
    with server:
        yield server


STREAM_WINDOW = WindowConfig.turn_causal(64, 32)  # small spans: sample calls re-anchor every few turns


@pytest.fixture(scope="session")
def tiny_stream_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path,
                           sample_schema: TaskSchema) -> Path:
    """An untrained tiny turn-causal (streaming) student: read-only."""
    return untrained_checkpoint(tmp_path_factory.mktemp("tiny-stream-ckpt"), tiny_backbone, name="tiny-stream",
                                version="1", schema=sample_schema, window=STREAM_WINDOW)


@pytest.fixture(scope="session")
def tiny_stream_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_stream_checkpoint: Path) -> Path:
    """Its streaming bundle (step graph, fp32 + int8, parity-checked): read-only."""
    from export.pipeline import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-stream"
    export_bundle(tiny_stream_checkpoint, out, ExportOptions(variants=("fp32", "int8"), bench_results=None))
    return out


@pytest.fixture(scope="session")
def tiny_bundle_session(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_session: Path) -> Path:
    from export.pipeline import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    # bench_results=None: the bundle must not depend on whatever benchmark ran on this machine last.
    export_bundle(tiny_checkpoint_session, out, ExportOptions(variants=("fp32", "int8", "fp16"), bench_results=None))
    return out


@pytest.fixture
def tiny_bundle(tiny_bundle_session: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_session, dst)
    return dst


@pytest.fixture(scope="session")
def fp32_bundle(tiny_checkpoint_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle (fp32 ONNX, parity-checked) exported once from the tiny checkpoint: read-only."""
    from export.cli import run_export

    out = tmp_path_factory.mktemp("fp32-bundles") / "tiny-v1"
    return run_export(tiny_checkpoint_session, out, ["fp32"], name="tiny", version="1")


@pytest.fixture
def live_service(fp32_bundle: Path) -> Iterator[Callable[..., Any]]:
    """``live_service(port=None, **settings)`` -> a started :class:`harness.live.LiveServer` serving
    ``fp32_bundle`` (the real app under uvicorn on a loopback port), stopped at teardown."""
    from harness.live import LiveServer
    from service.config import Settings

    servers: list[LiveServer] = []

    def start(port: int | None = None, **overrides: Any) -> LiveServer:
        base: dict[str, Any] = {"bundle": fp32_bundle, "reload_poll_s": 0, "api_keys": [], "log_level": "warning",
                                "shutdown_grace_s": 5}
        server = LiveServer(Settings(**{**base, **overrides}), port=port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
