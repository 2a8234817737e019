"""Service fixtures: a real bundle exported once from the tiny checkpoint, and live servers.

``live`` starts the real app under uvicorn (the same ``build_server`` ``turnwise serve`` uses) on a
free loopback port in a background thread; tests talk to it with httpx and websockets like any
client. ``store_kind`` parametrizes a test over the embedded store and a real redis-server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import LiveServer

from service.config import Settings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle (fp32 ONNX, parity-checked) exported once from the tiny checkpoint: read-only."""
    from export.cli import run_export

    out = tmp_path_factory.mktemp("bundles") / "tiny-v1"
    return run_export(tiny_checkpoint_session, out, ["fp32"], name="tiny", version="1")


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides selecting the store; the redis side starts a real redis-server."""
    if request.param == "memory":
        return {"redis_url": None}
    server = request.getfixturevalue("redis_server")
    return {"redis_url": server.url, "key_prefix": "tw:"}


@pytest.fixture
def make_settings(tiny_bundle: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "bundle": tiny_bundle,
            "reload_poll_s": 0,
            "api_keys": [],
            "log_level": "warning",
            "shutdown_grace_s": 5,
        }
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def live(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveServer]]:
    """``live(**settings)`` -> a started server, stopped at teardown."""
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        server = LiveServer(make_settings(**overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through its chromedriver (skipped, with the reason, where either is missing)."""
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("Chromium or chromedriver not installed (scripts/system-deps.sh installs chromium and "
                    "chromium-driver with apt-get)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    try:
        yield driver
    finally:
        driver.quit()
