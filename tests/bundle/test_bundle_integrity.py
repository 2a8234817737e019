"""The bundle's seal (SHA256SUMS over bundle.json and every file): an edited bundle.json is refused at
load, by a hot reload (the old bundle keeps serving), and by the fetcher; ``turnwise bundle seal``
re-seals a deliberate edit and nothing else."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bundle.errors import BundleError, BundleIncompleteError, ChecksumError
from bundle.fetch import seed
from bundle.loader import load_bundle
from bundle.manifest import MANIFEST, SEAL, bundle_files, read_seal


def edit_window(bundle: Path, **window: int) -> None:
    """What train/serve skew looks like: a larger window than the model was trained and checked with."""
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["window"].update(window)
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def test_an_edited_window_in_bundle_json_is_refused(tiny_bundle: Path) -> None:
    assert load_bundle(tiny_bundle, warmup=False).window.max_turns == 8
    edit_window(tiny_bundle, max_turns=50, max_tokens=512)
    with pytest.raises(ChecksumError, match=r"sha256 of 'bundle\.json'.*edited after export"):
        load_bundle(tiny_bundle, warmup=False)


def test_the_seal_covers_bundle_json_and_every_file(tiny_bundle: Path) -> None:
    assert set(read_seal(tiny_bundle)) == {MANIFEST, *bundle_files(tiny_bundle)}
    assert SEAL not in bundle_files(tiny_bundle)
    if shutil.which("sha256sum"):  # the standard tool reads it: a user can check a bundle by hand
        check = subprocess.run(["sha256sum", "--check", "--quiet", SEAL], cwd=tiny_bundle, capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_a_bundle_without_its_seal_is_refused_with_the_way_out(tiny_bundle: Path) -> None:
    (tiny_bundle / SEAL).unlink()
    with pytest.raises(BundleIncompleteError, match=r"no SHA256SUMS.*turnwise export.*turnwise bundle seal"):
        load_bundle(tiny_bundle, warmup=False)


def test_a_seal_that_disagrees_with_bundle_json_is_refused(tiny_bundle: Path) -> None:
    lines = (tiny_bundle / SEAL).read_text().splitlines()
    (tiny_bundle / SEAL).write_text("\n".join(line for line in lines if not line.endswith("  tasks.yaml")) + "\n")
    with pytest.raises(BundleIncompleteError, match=r"not sealed: \['tasks\.yaml'\]"):
        load_bundle(tiny_bundle, warmup=False)
    (tiny_bundle / SEAL).write_text("not a checksum line\n")
    with pytest.raises(BundleError, match="line 1"):
        load_bundle(tiny_bundle, warmup=False)


def run_turnwise(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from cli.main import main

    monkeypatch.setattr(sys, "argv", ["turnwise", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out + err


def test_bundle_seal_reseals_a_deliberate_edit_but_not_a_modified_model(
        tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    edit_window(tiny_bundle, max_turns=4)
    code, out = run_turnwise(monkeypatch, capsys, "bundle", "seal", str(tiny_bundle))
    assert code == 0 and SEAL in out
    assert load_bundle(tiny_bundle, warmup=False).window.max_turns == 4
    model = tiny_bundle / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    code, out = run_turnwise(monkeypatch, capsys, "bundle", "seal", str(tiny_bundle))
    assert code == 2 and "model.onnx" in out  # sealing never blesses a changed model file
    with pytest.raises(ChecksumError, match=r"model\.onnx"):
        load_bundle(tiny_bundle, warmup=False)


def test_a_fetched_bundle_without_its_seal_is_not_published(tiny_bundle: Path, tmp_path: Path) -> None:
    (tiny_bundle / SEAL).unlink()
    dest = tmp_path / "models"
    dest.mkdir()
    with pytest.raises(BundleIncompleteError, match="SHA256SUMS"):
        seed(dest, "current", "url-0123456789abcdef", lambda scratch: shutil.copytree(tiny_bundle, scratch,
                                                                                         dirs_exist_ok=True))
    assert not (dest / "current").exists() and list(dest.iterdir()) == []


def test_hot_reload_refuses_an_edited_bundle_json_and_keeps_serving(
        fp32_bundle: Path, tmp_path: Path, live_service: Callable[..., Any]) -> None:
    v1 = tmp_path / "v1"
    shutil.copytree(fp32_bundle, v1)
    link = tmp_path / "current"
    link.symlink_to(v1, target_is_directory=True)
    server = live_service(bundle=link)
    call = {"turns": [{"speaker": "customer" if i % 2 else "agent", "text": f"turn number {i}"} for i in range(12)]}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/v1/score", json=call).json()["window_turns"] == 8
        edit_window(v1, max_turns=50, max_tokens=512)
        refused = http.post("/v1/admin/reload")
        assert refused.status_code == 422, refused.text
        assert refused.json()["error_type"] == "bundle_rejected" and "bundle.json" in refused.json()["error"]
        after = http.post("/v1/score", json=call)
        assert after.status_code == 200 and after.json()["window_turns"] == 8  # the old window, still served
        assert http.get("/readyz").json()["model"]["version"] == "1"


def test_a_bundle_the_sidecar_publishes_is_sealed(tiny_checkpoint_session: Path, fp32_bundle: Path,
                                                  tmp_path: Path) -> None:
    from sidecar.publish import export_candidate, publish_bundle

    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(fp32_bundle, root / "1")
    (root / "current").symlink_to("1", target_is_directory=True)
    serving = json.loads((root / "current" / MANIFEST).read_text())
    candidate = export_candidate(tiny_checkpoint_session, root / ".candidate-2", serving, "2")
    published = publish_bundle(candidate, root / "current", "2")
    assert set(read_seal(published)) == {MANIFEST, *bundle_files(published)}
    assert load_bundle(root / "current", warmup=False).version == "2"
