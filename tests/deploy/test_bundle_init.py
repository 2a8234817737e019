"""The bundle init container's shell script, run for real with /bin/sh against a scratch directory:
seeding, idempotence, not rolling back a version the sidecar published, taking a new image version,
several pods seeding one shared volume at once, and refusing an image without a bundle."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .chart import Renderer, one, pod_spec

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")


@pytest.fixture(scope="module")
def script(chart: Renderer) -> str:
    docs = chart.template("sidecar")
    (init,) = pod_spec(one(docs, "Deployment"))["initContainers"]
    assert init["command"][:2] == ["sh", "-c"]
    return str(init["command"][2])


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "image" / "bundle"
    src.mkdir(parents=True)
    (src / "bundle.json").write_text('{"name": "tiny", "version": "0.1.0"}')
    (src / "model.onnx").write_bytes(b"onnx")
    dest = tmp_path / "models"
    dest.mkdir()
    return {"src": src, "dest": dest}


def run(script: str, layout: dict[str, Path], version: str, pod: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "SRC": str(layout["src"]), "DEST": str(layout["dest"]),
           "LINK": "current", "VERSION": version, "HOSTNAME": pod}
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False)


def served(layout: dict[str, Path]) -> str:
    return os.readlink(layout["dest"] / "current")


def test_seeds_and_is_idempotent(script: str, layout: dict[str, Path]) -> None:
    first = run(script, layout, "image-0.1.0", "pod-a")
    assert first.returncode == 0, first.stderr
    assert served(layout) == "image-0.1.0"
    bundle = layout["dest"] / "current"
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.json", "model.onnx"]
    assert run(script, layout, "image-0.1.0", "pod-b").returncode == 0
    assert served(layout) == "image-0.1.0"
    assert len([p for p in layout["dest"].iterdir() if p.name.startswith(".image-")]) == 1


def test_keeps_a_version_the_sidecar_published(script: str, layout: dict[str, Path]) -> None:
    assert run(script, layout, "image-0.1.0", "pod-a").returncode == 0
    published = layout["dest"] / "v-20260101"
    published.mkdir()
    (published / "bundle.json").write_text("{}")
    os.symlink("v-20260101", layout["dest"] / "current.tmp")
    os.replace(layout["dest"] / "current.tmp", layout["dest"] / "current")  # the sidecar's atomic publish
    assert run(script, layout, "image-0.1.0", "pod-a-restarted").returncode == 0
    assert served(layout) == "v-20260101"
    # An operator shipping a new bundle image wins once.
    assert run(script, layout, "image-0.2.0", "pod-b").returncode == 0
    assert served(layout) == "image-0.2.0"


def test_concurrent_pods_on_one_volume(script: str, layout: dict[str, Path]) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: run(script, layout, "image-0.3.0", f"pod-{i}"), range(8)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert served(layout) == "image-0.3.0"
    copies = [p for p in layout["dest"].iterdir() if p.name.startswith(".image-0.3.0.")]
    assert len(copies) == 1, "losing pods must remove their copies"
    assert sorted(p.name for p in (layout["dest"] / "current").iterdir()) == ["bundle.json", "model.onnx"]


def test_image_without_a_bundle_fails(script: str, layout: dict[str, Path]) -> None:
    (layout["src"] / "bundle.json").unlink()
    proc = run(script, layout, "image-0.1.0", "pod-a")
    assert proc.returncode != 0 and "no bundle.json" in proc.stderr
    assert not (layout["dest"] / "current").exists()
