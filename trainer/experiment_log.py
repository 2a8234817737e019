"""What a Table 1 run has finished, kept on disk so a stopped run resumes where it stopped.

A round of Table 1 is hours of training; a run that stops (a killed job, a reboot, a time limit) must not
throw away what it finished. Its work folder keeps

- ``runs.jsonl``: a header line with the run's settings, then one line per finished finetuning run and
  one per teacher check, appended and flushed as each finishes;
- ``pre-<method>-s<seed>/``: each pretrained student, with ``done.json`` written only after its
  checkpoint is complete, so a half-written one is trained again.

Started again with the same settings, the run skips every (method, seed, gold fraction) in the log and
reuses every finished pretraining. Seeds, gold fractions and methods may change between starts (a run can
be extended), except the smallest gold fraction, which picks the few-shot teacher's shots and the
ablations' gold; any other setting must not change either: a log written with other settings is refused
with the folder's name, never mixed in or overwritten. A finished run deletes its checkpoints and keeps
its log, so the same command again only rewrites the table, and more seeds extend it. The log is
committed with the results (``.gitignore`` keeps ``runs.jsonl`` and drops the checkpoints), so a fresh
clone resumes too, pretraining again what a remaining run needs. One process at a
time works in a folder (a lock); a line cut short by a killed process is dropped on reading.

Finetune-only never sees the teacher, so the tables of one dataset and task with different teachers
share it: :func:`shared_baseline` finds a finished finetune-only run with the same training settings in a
sibling log (same folder of results, same header but for the teacher's settings), which the run then
keeps as its own, marked ``shared_from``, instead of training it again.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

# settings that may change between starts: what to run (runs are keyed by them) and where
EXTENSIBLE = ("seeds", "gold_fractions", "methods", "device")
# header settings a finetune-only run does not depend on (the teacher's, and the smallest gold fraction, which
# picks the few-shot teacher's shots and where the ablations run): tables that differ only in them share it
TEACHER_SETTINGS = ("teacher", "samples", "noise", "fewshot", "smallest_gold_fraction")
# settings added after logs were written, with the value an older log ran with
ADDED_LATER = {"min_finetune_steps": 0}
DONE_FILE = "done.json"


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a log's header keeps for a run's ``config``: all but the extensible ones, and the
    smallest gold fraction."""
    return {k: v for k, v in config.items() if k not in EXTENSIBLE} | {
        "smallest_gold_fraction": min(config["gold_fractions"])}


def run_key(method: str, seed: int, gold_fraction: float) -> tuple[str, int, float]:
    return method, int(seed), round(float(gold_fraction), 6)


class RunLog:
    def __init__(self, work: Path, config: dict[str, Any]):
        self.work = work
        self.path = work / "runs.jsonl"
        self.settings = settings_of(config)
        self.runs: dict[tuple[str, int, float], dict[str, Any]] = {}
        self.teacher_checks: list[dict[str, Any]] = []
        work.mkdir(parents=True, exist_ok=True)
        self._lock = (work / "lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ValueError(f"{work}: another table1 run is working in this folder") from None
        if self.path.exists():
            self._read()
        else:
            self._append({"kind": "header", "settings": self.settings})

    @staticmethod
    def exists(work: Path) -> bool:
        return (work / "runs.jsonl").exists()

    def _read(self) -> None:
        lines, kept = read_lines(self.path)
        if kept is not None:  # drop the cut line from the file too, so the next line appended starts a line of its own
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        lines[0]["settings"] = completed(lines[0]["settings"], self.settings)
        if lines[0]["settings"] != json.loads(json.dumps(self.settings)):
            changed = sorted(k for k in {*lines[0]["settings"], *self.settings}
                             if lines[0]["settings"].get(k) != json.loads(json.dumps(self.settings.get(k))))
            raise ValueError(f"{self.work}: a stopped run with other settings ({', '.join(changed)}) is kept here; "
                             "rerun with its settings to finish it, or move the folder away to start over")
        for rec in lines[1:]:
            if rec.get("kind") == "run":
                self.runs[run_key(rec["run"]["method"], rec["run"]["seed"], rec["run"]["gold_fraction"])] = rec["run"]
            elif rec.get("kind") == "teacher":
                self.teacher_checks.append(rec["check"])

    def _append(self, rec: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()

    def close(self) -> None:
        self._lock.close()  # releases the lock

    def teacher_wall_s(self) -> float:
        """The teacher's time over every start (a seed labelled again in a later start counts again)."""
        return sum(float(c["check"].get("wall_s", 0.0)) for c in self.teacher_checks)

    def get(self, method: str, seed: int, gold_fraction: float) -> dict[str, Any] | None:
        return self.runs.get(run_key(method, seed, gold_fraction))

    def add(self, run: dict[str, Any]) -> None:
        self.runs[run_key(run["method"], run["seed"], run["gold_fraction"])] = run
        self._append({"kind": "run", "run": run})

    def add_teacher(self, check: dict[str, Any]) -> None:
        self.teacher_checks.append(check)
        self._append({"kind": "teacher", "check": check})


def read_lines(path: Path) -> tuple[list[dict[str, Any]], list[str] | None]:
    """The records of a log, header first; and when its last line was cut short (and dropped), the lines
    to keep, else None."""
    lines, kept = [], None
    raw = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, line in enumerate(raw):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(raw) - 1:  # only the last line can be cut short by a killed process
                raise ValueError(f"{path}: line {i + 1} is not JSON; the log is damaged") from None
            kept = raw[:-1]
    if not lines or lines[0].get("kind") != "header":
        raise ValueError(f"{path}: not a table1 run log (no header line); move the folder away to start over")
    return lines, kept


def completed(header: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A header's settings with those added later (:data:`ADDED_LATER`) that ``current`` has filled in."""
    return {**{k: v for k, v in ADDED_LATER.items() if k in current}, **header}


def shared_baseline(work: Path, config: dict[str, Any], seed: int, gold_fraction: float,
                    settings: dict[str, Any]) -> dict[str, Any] | None:
    """A finished finetune-only run of ``seed`` and ``gold_fraction`` trained with ``settings`` in a sibling
    of ``work`` (another table of the same results folder) whose header differs from ``config``'s only in
    the teacher's settings; None when there is none. It is returned as this table keeps it: marked
    ``shared_from`` (the sibling's folder), its finetuning time moved to ``shared_finetune_wall_s`` (this
    table did not spend it)."""
    def teacherless(header: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in header.items() if k not in TEACHER_SETTINGS}

    mine = teacherless(json.loads(json.dumps(settings_of(config))))
    wanted = json.loads(json.dumps(settings))
    key = run_key("finetune_only", seed, gold_fraction)
    for log in sorted(work.parent.glob("*/runs.jsonl")):
        if log.parent == work:
            continue
        try:
            lines, _ = read_lines(log)
        except (OSError, ValueError):
            continue  # not a run log, or one damaged: nothing to share
        if teacherless(completed(lines[0]["settings"], mine)) != mine:
            continue
        for rec in lines[1:]:
            run = rec.get("run") if rec.get("kind") == "run" else None
            if run and run_key(run["method"], run["seed"], run["gold_fraction"]) == key and run.get(
                    "settings") == wanted and "shared_from" not in run:
                return {**run, "shared_from": log.parent.name, "finetune_wall_s": 0.0,
                        "shared_finetune_wall_s": run["finetune_wall_s"]}
    return None


def finished_pretraining(path: Path) -> dict[str, Any] | None:
    """``done.json`` of a pretrained student (``wall_s``, ``steps``), or None when it never finished."""
    try:
        return json.loads((path / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def mark_pretrained(path: Path, wall_s: float, steps: int) -> None:
    (path / DONE_FILE).write_text(json.dumps({"wall_s": wall_s, "steps": steps}), encoding="utf-8")


def machine_of(device: str | None = None) -> dict[str, Any]:
    """What a run or teacher check records about where it ran (its wall time depends on it): the CPU and its
    speed flags, the threads torch uses, and the device it trained on (with a GPU's name)."""
    import torch

    from turnwise.machine import cpu_flags, cpu_name

    facts: dict[str, Any] = {"cpu": cpu_name(), "flags": cpu_flags(), "threads": torch.get_num_threads()}
    if device is not None:
        facts["device"] = device
        if device.startswith("cuda") and torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return facts
