"""The soak test's short form: two ``turnwise serve`` on one real redis-server, live calls over
WebSockets for a minute, the three faults (Redis killed and restarted, a hot reload, SIGTERM of one
service), through the same ``python -m loadtests.soak`` that make soak runs; then the audit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.redis


def test_soak_short_form_loses_nothing_through_three_faults(tiny_stream_bundle: Path, tmp_path: Path) -> None:
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        pytest.skip("redis-server not installed (make test installs it with apt-get)")
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "loadtests.soak", "--bundle", str(tiny_stream_bundle), "--calls", "12",
           "--minutes", "0.75", "--pause-min", "0.3", "--pause-max", "0.8", "--redis-outage-s", "2",
           "--max-rss-growth", "1000", "--work", str(tmp_path / "work"), "--out", str(out)]
    # --max-rss-growth 1000: 45 s is all warm-up (caches filling), RSS growth is judged by the full run only
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert (out / "soak.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "soak.json").read_text())
    audit = report["audit"]
    assert audit["turns_sent"] > 100
    assert audit["lost"] == 0 and audit["duplicated"] == 0 and audit["mismatched"] == 0, audit
    assert audit["answered"] + sum(audit["refused"].values()) == audit["turns_sent"]
    assert audit["accounted_for"]
    # the faults happened and were seen by the callers
    assert [f["kind"] for f in report["faults"]] == ["redis", "reload", "sigterm"]
    assert all(f["ok"] for f in report["faults"]), report["faults"]
    assert audit["server_closes_by_code"].get("1012", 0) >= 1  # the drained service closed its calls with 1012
    assert set(audit["models_seen"]) == {"1", "1-reloaded"}  # answers before and after the reload
    assert report["checks"]["faults_injected"] and report["checks"]["drain_closed_with_1012"]
    assert {"steady", "after_redis_kill", "after_reload", "after_sigterm"} <= set(report["phases"])
    assert report["phases"]["after_sigterm"]["answered"] > 0
    assert len(report["rss"]["services"]) == 3  # two services and the SIGTERMed one's replacement
    assert report["machine"]["cpu_flags"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "soak.png").stat().st_size > 10_000


def test_the_audit_counts_lost_duplicated_and_refused_turns() -> None:
    from loadtests.soak_client import Audit, TurnRecord

    audit = Audit()
    for seq, scores, refused in [(0, 1, None), (1, 2, None), (2, 0, None), (3, 0, "conflict")]:
        audit.turns[("call-1", seq)] = TurnRecord("call-1", seq, 0.0, attempts=1, scores=scores, refused=refused)
    s = audit.summary()
    assert (s["turns_sent"], s["answered"], s["lost"], s["duplicated"]) == (4, 2, 1, 1)
    assert s["refused"] == {"conflict": 1} and s["lost_examples"] == ["call-1/2"]
    assert s["duplicated_examples"] == ["call-1/1"] and not s["accounted_for"]
    del audit.turns[("call-1", 1)], audit.turns[("call-1", 2)]
    assert audit.summary()["accounted_for"]


def test_calls_are_spread_over_the_replicas_and_avoid_one_that_failed() -> None:
    from loadtests.soak_client import Replicas

    replicas = Replicas(["ws://a", "ws://b"])
    assert sorted(replicas.pick() for _ in range(10)) == [0] * 5 + [1] * 5
    assert {replicas.pick(avoid=0) for _ in range(6)} == {1}
    replicas.mark_down(1, 60)
    assert {replicas.pick() for _ in range(6)} == {0}
