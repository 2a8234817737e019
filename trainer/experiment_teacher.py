"""The teachers of ``turnwise experiment table1``: their scores per seed, one-vs-rest views, and the checks
(accuracy, ECE, the intra- vs inter-session slopes of paper Fig. 4) every result keeps in ``teacher_info``.

A task is a corpus task (``act``) or a one-vs-rest detection task ``<task>:<label>`` (``act:question``),
scored by the teacher's ``<task>`` votes for the label against all others. The ``fewshot`` teacher's shots
come, per seed, from that seed's gold dialogues at the smallest gold fraction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console

from trainer.experiment_log import machine_of
from trainer.teachers.progress import labelling
from trainer.train import pick_gold_dialogues
from turnwise.dialogue import Dialogue
from turnwise.tasks import Task, TaskSchema, TaskType

console = Console(stderr=True)
SLOPES = ("slope_intra", "slope_inter")


def teacher_scores(kind: str, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int, seed: int,
                   noise: dict[str, Any], fewshot: Any = None) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    """Records keyed by (dialogue, task) and a summary; ``fewshot`` is the FewshotTeacher to use."""
    if kind == "simulated":
        from trainer.teachers.simulated import SimulatedTeacher

        t: Any = SimulatedTeacher(noise, seed=seed)
    elif kind == "zeroshot":
        from trainer.teachers.prompts import PromptBank
        from trainer.teachers.zeroshot import ZeroshotTeacher

        t = ZeroshotTeacher(PromptBank.load())
    elif kind == "fewshot" and fewshot is not None:
        t = fewshot
    else:
        raise ValueError(f"teacher must be simulated, zeroshot or fewshot for experiments, got {kind!r}")
    with labelling(f"teacher {kind} on {len(dialogues)} dialogues ({'turns' if kind == 'simulated' else 'texts'})",
                   console) as bar:
        records = t.label(dialogues, schema, samples, bar)
    return {(r.dialogue_id, r.task): r for r in records}, {"kind": kind, **t.summary()}


# --- one-vs-rest tasks, teacher checks --------------------------------------------------------------


def split_task(task: str) -> tuple[str, str | None]:
    """``act:question`` -> (``act``, ``question``); ``act`` -> (``act``, None)."""
    base, _, positive = task.partition(":")
    return base, positive or None


def one_vs_rest_schema(schema: TaskSchema, task: str) -> TaskSchema:
    base, positive = split_task(task)
    if positive is None:
        return schema.select([task])
    if positive not in schema[base].labels:
        raise ValueError(f"'{positive}' is not a label of task '{base}' ({schema[base].labels})")
    return TaskSchema(tasks={task: Task(type=TaskType.binary, labels=[f"not_{positive}", positive],
                                        description=f"{base} is '{positive}' (one vs rest)")})


def one_vs_rest_dialogues(dialogues: Sequence[Dialogue], task: str) -> list[Dialogue]:
    """The dialogues with gold ``<task>`` labels turned into ``positive`` / ``not_<positive>``."""
    base, positive = split_task(task)
    if positive is None:
        return list(dialogues)
    out = []
    for d in dialogues:
        turns = [t.model_copy(update={"labels": {task: positive if t.labels[base] == positive else f"not_{positive}"}}
                              if base in t.labels else {"labels": {}}) for t in d.turns]
        out.append(d.model_copy(update={"turns": turns}))
    return out


def one_vs_rest_records(records: dict[tuple[str, str], Any], task: str) -> dict[tuple[str, str], Any]:
    """The teacher's votes for ``positive`` against all other classes, as binary records of ``task``."""
    from trainer.teachers.scores import ABSTAIN, make_record

    base, positive = split_task(task)
    assert positive is not None
    out = {}
    for (did, name), r in records.items():
        if name != base:
            continue
        v = r.votes_array()
        binary = np.where(v == ABSTAIN, ABSTAIN, (v == r.labels.index(positive)).astype(np.int64))
        info = r.teacher.model_dump(exclude_none=True)
        info["params"] = {**info.get("params", {}), "one_vs_rest_of": base}
        out[(did, task)] = make_record(did, task, [f"not_{positive}", positive], TaskType.binary, binary, info)
    return out


def teacher_check(records: dict[tuple[str, str], Any], dialogues: Sequence[Dialogue], task: str) -> dict[str, Any]:
    """Accuracy (argmax S), ECE and the intra- vs inter-session check (paper Fig. 4) of a single-label task."""
    from trainer.teachers.calibration import collect, ece, h2_check

    ts = collect(dialogues, records, task)  # turns with a gold label and at least one valid vote
    h2 = h2_check(ts)
    acc = float((ts.scores.argmax(axis=1) == ts.gold.argmax(axis=1)).mean())
    return {"accuracy": acc, "ece": ece(ts.scores, ts.gold), "h2": {**{k: h2[k] for k in (*SLOPES, "h2_holds")},
            "ordering_intra": h2["intra"]["ordering_accuracy"], "ordering_inter": h2["inter"]["ordering_accuracy"]}}



class SeedTeacher:
    """The teacher's scores for each seed: computed once (simulated, zeroshot) or per seed (fewshot, whose
    shots come from the seed's gold dialogues at the smallest gold fraction); checked on the way.

    ``cfg`` is the run's :class:`trainer.experiment.Table1Config`. ``logged`` are the checks of a stopped run
    (``{"check", "summary"}`` records, :mod:`trainer.experiment_log`), so a resumed run reports every seed's
    teacher without labelling again; ``on_check`` is called with each new one."""

    def __init__(self, cfg: Any, train_d: list[Dialogue], base_schema: TaskSchema,
                 logged: Sequence[dict[str, Any]] = (), on_check: Any = None):
        self.cfg, self.train_d, self.base_schema = cfg, train_d, base_schema
        self.task_d = one_vs_rest_dialogues(train_d, cfg.task)
        self.cache: dict[int, tuple[dict[tuple[str, str], Any], dict[str, Any]]] = {}
        self.fewshot: Any = None
        self.by_seed: dict[int, dict[str, Any]] = {int(r["check"]["seed"]): r["check"] for r in logged}
        self.summary: dict[str, Any] = dict(logged[-1]["summary"]) if logged else {"kind": cfg.teacher}
        self.on_check = on_check

    def for_seed(self, seed: int) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
        cfg = self.cfg
        key = seed if cfg.teacher == "fewshot" else 0
        if key in self.cache:
            return self.cache[key]
        t0 = time.perf_counter()
        if cfg.teacher == "fewshot":
            from trainer.teachers.fewshot import FewshotConfig, FewshotTeacher

            gold = pick_gold_dialogues(self.train_d, [split_task(cfg.task)[0]], min(cfg.gold_fractions), seed)
            pool = [self.train_d[i] for i in gold]
            self.fewshot = (self.fewshot.with_pool(pool, seed=seed) if self.fewshot is not None
                            else FewshotTeacher(pool, FewshotConfig(**{"seed": seed, **cfg.fewshot})))
        records, tinfo = teacher_scores(cfg.teacher, self.train_d, self.base_schema, cfg.samples, 0, cfg.noise,
                                        fewshot=self.fewshot)
        if split_task(cfg.task)[1] is not None:
            records = one_vs_rest_records(records, cfg.task)
        check = {"seed": seed, **teacher_check(records, self.task_d, cfg.task),
                 "wall_s": round(time.perf_counter() - t0, 1), "machine": machine_of()}
        self.by_seed[seed] = check
        acc = tinfo["accuracy_on_train"] = check["accuracy"]
        tinfo["wall_s"] = check["wall_s"]
        self.summary = dict(tinfo)
        if self.on_check is not None:
            self.on_check({"check": check, "summary": tinfo})
        console.log(f"teacher {cfg.teacher} (seed {seed}): accuracy {acc:.4f} on the training dialogues, "
                    f"H2 slopes intra {check['h2']['slope_intra']} / inter {check['h2']['slope_inter']}")
        self.cache[key] = (records, tinfo)
        return records, tinfo

    def info(self) -> dict[str, Any]:
        """The summary the JSON keeps: the last teacher's, with the checks of every seed (means on top)."""
        tinfo = dict(self.summary)
        checks = [self.by_seed[s] for s in sorted(self.by_seed)]
        if checks:
            tinfo["accuracy_on_train"] = float(np.mean([c["accuracy"] for c in checks]))
            tinfo["ece"] = float(np.mean([c["ece"] for c in checks]))
            slopes = {k: [c["h2"][k] for c in checks if c["h2"][k] is not None] for k in SLOPES}
            tinfo["h2"] = {k: float(np.mean(v)) if v else None for k, v in slopes.items()}
            tinfo["checks"] = checks
        return tinfo


