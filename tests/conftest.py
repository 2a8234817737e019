"""Shared fixtures: a tiny random BERT backbone (built once per session), the sample task schema,
an untrained tiny checkpoint, the public data root, and a real redis-server on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from turnwise.errors import DataError
from turnwise.tasks import TaskSchema, parse_tasks
from turnwise.window import WindowConfig

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
    from trainer.model import make_tiny_backbone

    return make_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone"))


@pytest.fixture(scope="session")
def tiny_checkpoint_session(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path,
                            sample_schema: TaskSchema) -> Path:
    """An untrained tiny student saved as a checkpoint (session-scoped: copy before modifying)."""
    from trainer.checkpoint import save_checkpoint
    from trainer.model import build_model

    built = build_model(str(tiny_backbone), sample_schema, seed=0)
    out = tmp_path_factory.mktemp("tiny-ckpt")
    save_checkpoint(out, built.model, built.tokenizer, WindowConfig(max_turns=8, max_tokens=64),
                    {"backbone": str(tiny_backbone), "name": "tiny", "version": "0.0.1"})
    return out


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A real redis-server process on a free loopback port; can be stopped and restarted on the same port."""

    def __init__(self, workdir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server not installed (make test installs it with apt-get)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
