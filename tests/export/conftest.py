"""An exported tiny bundle (fp32, int8, fp16), built once per session; copy it before modifying."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


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
