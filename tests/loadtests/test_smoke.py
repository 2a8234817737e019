"""The load test's smoke run (part of make test): a real redis-server, ``turnwise serve`` on the tiny
bundle and locust headless for ~30 s, through the same ``python -m loadtests.run`` that make loadtest
runs; then the same with an impossible SLO, which must fail the run."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def tiny_bundle(tiny_checkpoint_session: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.cli import run_export

    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        pytest.skip("redis-server not installed (make test installs it with apt-get)")
    return run_export(tiny_checkpoint_session, tmp_path_factory.mktemp("lt") / "tiny", ["fp32"], name="tiny",
                      version="1")


def run_loadtest(out: Path, bundle: Path, *extra: str, hold_s: int = 12) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "loadtests.run", "--bundle", str(bundle), "--out", str(out),
           "--logs", str(out / "logs"), "--peak-users", "6", "--ramp-s", "4", "--ramp-steps", "2",
           "--hold-s", str(hold_s), "--turn-pause-min", "0.2", "--turn-pause-max", "0.5", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)


def test_smoke_run_passes_its_gate_and_writes_the_results(tiny_bundle: Path, tmp_path: Path):
    r = run_loadtest(tmp_path, tiny_bundle, "--slo-p99-ms", "5000", "--slo-max-error-ratio", "0.05", hold_s=26)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv", "_summary.json", "_latency.png"):
        assert (tmp_path / f"loadtest{suffix}").stat().st_size > 0, suffix
    assert (tmp_path / "loadtest_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = json.loads((tmp_path / "loadtest_summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["slo"]["passed"], summary["slo"]
    assert summary["turns"]["requests"] > 0 and summary["requests"]["requests"] >= summary["turns"]["requests"]
    assert summary["turns"]["p99_ms"] > 0 and summary["at_peak"]["turns_per_s"] > 0
    assert summary["peak_users"] == 6 and summary["duration_s"] >= 28  # ramp 4 s + hold 26 s
    assert summary["stack"]["store"] == "redis" and summary["stack"]["model"]["version"] == "1"
    assert summary["stack"]["server"]["stage_mean_ms"]["inference"] > 0  # the server's view, from /metrics

    with (tmp_path / "loadtest_stats.csv").open() as fh:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(fh)}
    # Both kinds of call ran, each turn reported under one grouped name.
    assert int(rows[("WS", "/v1/stream [turn]")]["Request Count"]) > 0
    assert int(rows[("POST", "/v1/dialogues/{id}/turns")]["Request Count"]) > 0
    assert int(rows[("", "Aggregated")]["Failure Count"]) / int(rows[("", "Aggregated")]["Request Count"]) <= 0.05


def test_the_gate_fails_the_run_when_the_slo_is_impossible(tiny_bundle: Path, tmp_path: Path):
    r = run_loadtest(tmp_path, tiny_bundle, "--slo-p99-ms", "0.001", "--hold-s", "5")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "loadtest_summary.json").read_text())
    assert summary["turns"]["requests"] > 0
    assert not summary["slo"]["passed"]
    assert any("p99" in b for b in summary["slo"]["breaches"]), summary["slo"]
    assert "SLO gate: FAILED" in r.stdout
