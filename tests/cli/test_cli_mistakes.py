"""Mistakes a user makes on the command line: each is caught early, with one line that says what is
wrong and a non-zero exit code, before any time is spent (no torch import, no training, no retries)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from harness.ports import free_port


def one_error_line(err: str) -> str:
    """The error line of a run's stderr (usage errors: click's ``Error:``; ours: ``error:``)."""
    lines = [line for line in err.splitlines() if line.lower().startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def three_calls(samples_dir: Path, tmp_path: Path) -> Path:
    p = tmp_path / "three.jsonl"
    p.write_text("".join((samples_dir / "dialogues.jsonl").read_text().splitlines(keepends=True)[:3]))
    return p


@pytest.fixture
def misspelt_tasks(samples_dir: Path, tmp_path: Path) -> Path:
    schema = yaml.safe_load((samples_dir / "tasks.yaml").read_text())
    schema["tasks"]["sentimnet"] = schema["tasks"].pop("sentiment")
    p = tmp_path / "tasks.yaml"
    p.write_text(yaml.safe_dump(schema))
    return p


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--objective", "pairwsie", "'pairwsie' is not one of 'pairwise', 'pointwise', 'pairwise+pointwise', 'none'."),
    ("--encoder", "flatt", "'flatt' is not one of 'streaming', 'flat'."),
    ("--source", "dailydialogue", "'dailydialogue' is not one of 'dailydialog', 'meld', 'multiwoz'"),
    ("--gold-fraction", "2", "Input should be less than or equal to 1"),
    ("--gold-fraction", "0", "0.0 is not > 0"),
    ("--precision", "fp16", "'fp16' is not one of 'auto', 'fp32', 'bf16'."),
    ("--backbone", "./no/such/model", "backbone path './no/such/model' does not exist"),
])
def test_train_choices_and_ranges_are_checked_at_parse_time(run_cli, three_calls, samples_dir, tmp_path, option,
                                                             value, message):
    args = ["train", "--data", three_calls, "--tasks", samples_dir / "tasks.yaml", "--out", tmp_path / "ck",
            option, value]
    t0 = time.monotonic()
    code, _, err = run_cli(*args)
    line = one_error_line(err)
    assert code == 2 and f"Invalid value for '{option}'" in line and message in line
    assert not (tmp_path / "ck").exists() and time.monotonic() - t0 < 10


@pytest.mark.parametrize(("args", "message"), [
    (["--teacher", "gpt"], "'gpt' is not one of 'llm', 'zeroshot', 'fewshot', 'simulated'."),
    (["--samples", "0"], "Input should be greater than or equal to 1"),
    (["--shard", "4/4"], "need 0 <= i < n, got '4/4'"),
    (["--top-p", "1.5"], "Input should be less than or equal to 1"),
])
def test_label_choices_and_ranges(run_cli, three_calls, samples_dir, tmp_path, args, message):
    code, _, err = run_cli("label", "--data", three_calls, "--tasks", samples_dir / "tasks.yaml",
                           "--out", tmp_path / "s.jsonl", *args)
    line = one_error_line(err)
    assert code == 2 and f"Invalid value for '{args[0]}'" in line and message in line


def test_a_misspelt_task_is_an_error_naming_the_likely_one(run_cli, three_calls, misspelt_tasks, tmp_path):
    code, _, err = run_cli("label", "--data", three_calls, "--tasks", misspelt_tasks, "--teacher", "simulated",
                           "--samples", "3", "--out", tmp_path / "s.jsonl")
    line = one_error_line(err)
    assert code == 2 and "task 'sentimnet' (did you mean 'sentiment'?)" in line and "--allow-unlabelled" in line
    assert not (tmp_path / "s.jsonl").exists()
    code, _, err = run_cli("train", "--data", three_calls, "--tasks", misspelt_tasks, "--objective", "none",
                           "--out", tmp_path / "ck")
    assert code == 2 and "did you mean 'sentiment'?" in one_error_line(err)


def test_allow_unlabelled_warns_and_the_json_has_no_nan(run_cli, three_calls, misspelt_tasks, tmp_path):
    code, out, err = run_cli("label", "--data", three_calls, "--tasks", misspelt_tasks, "--teacher", "simulated",
                             "--samples", "3", "--out", tmp_path / "s.jsonl", "--allow-unlabelled")
    assert code == 0, err
    assert "warning:" in err and "sentimnet" in err

    def no_nan(token: str) -> None:
        raise AssertionError(f"{token} in JSON")

    summary = json.loads(out, parse_constant=no_nan)
    json.loads((tmp_path / "s.summary.json").read_text(), parse_constant=no_nan)
    assert summary["solved"]["sentimnet"]["achieved_accuracy"] is None
    # the table's rows keep their brackets (rich would eat "[intent]" as markup)
    assert "accuracy[intent]" in err and "accuracy[act]" in err
    # without a terminal, progress is plain lines
    assert "simulated teacher: turns: " in err


def test_a_backbone_path_that_does_not_exist(run_cli, three_calls, samples_dir, tmp_path):
    code, _, err = run_cli("train", "--data", three_calls, "--tasks", samples_dir / "tasks.yaml",
                           "--out", tmp_path / "ck", "--backbone", str(tmp_path / "no-such-model"))
    line = one_error_line(err)
    assert code == 2 and "backbone path" in line and "does not exist" in line and "Repo id" not in err


def test_a_corpus_folder_without_source(run_cli, tmp_path, samples_dir):
    folder = tmp_path / "dailydialog"
    folder.mkdir()
    for cmd in (["data", "stats", folder], ["label", "--data", folder, "--tasks", samples_dir / "tasks.yaml",
                                            "--teacher", "simulated", "--out", tmp_path / "s.jsonl"]):
        code, _, err = run_cli(*cmd)
        line = one_error_line(err)
        assert code == 2 and "a folder, not a JSONL file: pass --source" in line, err


def test_label_fails_fast_when_the_endpoint_refuses_connections(run_cli, three_calls, samples_dir, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.monotonic()
    code, _, err = run_cli("label", "--data", three_calls, "--tasks", samples_dir / "tasks.yaml", "--teacher", "llm",
                           "--model", "m", "--endpoint", endpoint, "--samples", "1", "--out", tmp_path / "s.jsonl")
    line = one_error_line(err)
    assert code == 2 and f"cannot reach the endpoint {endpoint}" in line
    assert time.monotonic() - t0 < 20  # one probe, not minutes of retries


def test_ctrl_c_in_label_says_what_the_cache_kept(run_cli, three_calls, samples_dir, tmp_path, monkeypatch):
    from fakes.openai_server import FakeOpenAIServer, constant_responder

    from trainer.teachers.llm import LLMTeacher

    args = ["label", "--data", three_calls, "--tasks", samples_dir / "tasks.yaml", "--teacher", "llm", "--model",
            "m", "--samples", "2", "--out", tmp_path / "s.jsonl", "--max-dialogues", "1"]
    with FakeOpenAIServer(constant_responder("A")) as srv:
        code, _, err = run_cli(*args, "--endpoint", srv.base_url)
        assert code == 0, err
        real_fetch = LLMTeacher._fetch

        def fetch_then_interrupt(self, todo, answers, progress):
            real_fetch(self, todo[:1], answers, progress)  # some answers arrive, then the user presses Ctrl-C
            raise KeyboardInterrupt

        monkeypatch.setattr(LLMTeacher, "_fetch", fetch_then_interrupt)
        code, _, err = run_cli(*args[:-2], "--max-dialogues", "3", "--endpoint", srv.base_url)
    assert code == 130
    assert "interrupted: the cache" in err and "run the same command again to resume" in err
    kept = int(err.split("keeps ")[1].split()[0])
    assert kept > 0


def test_serve_start_up_errors_are_one_line(run_cli, tmp_path, monkeypatch):
    code, _, err = run_cli("serve", "--bundle", "/nonexistent")
    assert code == 2 and "/nonexistent: model bundle not found" in one_error_line(err)
    code, _, err = run_cli("serve", "--bundle", tmp_path)
    assert code == 2 and "not a model bundle (no bundle.json)" in one_error_line(err)
    monkeypatch.setenv("TURNWISE_MAX_QUEUE", "lots")
    code, _, err = run_cli("serve", "--bundle", tmp_path)
    assert code == 2 and "TURNWISE_MAX_QUEUE: Input should be a valid integer" in one_error_line(err)


def test_score_refuses_a_checkpoint(run_cli, tiny_checkpoint_session, three_calls, tmp_path):
    code, _, err = run_cli("score", "--model", tiny_checkpoint_session, "--data", three_calls,
                           "--out", tmp_path / "p.jsonl")
    assert code == 2 and "a training checkpoint, not a bundle: export it first" in one_error_line(err)


def test_version(run_cli):
    from turnwise import __version__

    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"turnwise {__version__}"


def test_every_option_has_help():
    import typer.main

    from cli.main import app

    missing = []

    def walk(cmd, path):
        for param in cmd.params:
            if param.param_type_name == "option" and not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}")
            if param.param_type_name == "argument" and not (getattr(param, "help", "") or "").strip():
                missing.append(f"{path} {param.name}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "turnwise")
    assert not missing, missing
