"""``turnwise experiment table1``: the paper's Table 1 on public data, with its ablations.

For one dataset/task/teacher: teacher scores on the training dialogues; per seed, one pretraining per
pretrained method (shared by all gold fractions: pretraining never sees gold), then per gold fraction a
finetuning from the backbone (finetune-only) and from each pretrained student -- pointwise, pairwise,
``pairwise+pointwise`` (pairwise + w x pointwise, w = ``pointwise_weight``; ``pairwise+pointwise@0.5``
names another w) -- evaluated on the official test split. Ablations (pairwise): alpha 0 / 1 and
inter-session pairs, at the smallest gold fraction. A task is a corpus task (``act``) or a one-vs-rest
detection task ``<task>:<label>`` (``act:question``), scored by the teacher's ``<task>`` votes for the
label against all others. The ``fewshot`` teacher's shots come, per seed, from that seed's gold
dialogues at the smallest gold fraction. Every teacher's accuracy, ECE and intra- vs inter-session
check on the training dialogues go into ``teacher_info``. Outputs: :mod:`trainer.experiment_plots`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from trainer import experiment_plots as plots
from trainer.evaluate import evaluate_path
from trainer.train import TrainConfig, pick_gold_dialogues, train
from turnwise.dialogue import Dialogue
from turnwise.tasks import Task, TaskSchema, TaskType

console = Console(stderr=True)
CPU_METHODS = ("finetune_only", "pointwise", "pairwise")
ROUND2_METHODS = (*plots.MAIN_METHODS, f"{plots.COMBINED}@0.5")
SLOPES = ("slope_intra", "slope_inter")


@dataclass
class Table1Config:
    """One Table 1 run. The defaults are the ``cpu`` preset (see :data:`PRESETS` and docs/evidence.md)."""

    dataset: str = "dailydialog"
    task: str = "act"  # a corpus task, or <task>:<label> for a one-vs-rest detection task
    teacher: str = "simulated"
    gold_fractions: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.10, 0.25])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(CPU_METHODS))
    ablations: bool = True  # alpha 0 / 1 and inter-session pairs (pairwise), at the smallest gold fraction
    train_dialogues: int | None = 800  # None or 0 = the whole split (likewise below)
    val_dialogues: int | None = 50
    test_dialogues: int | None = 250
    backbone: str = "minilm"
    encoder: str = "flat"  # flat (the paper's windows, what docs/evidence.md reports) | streaming (turn-causal spans)
    max_tokens: int = 32  # flat window
    max_turns: int = 3  # flat window
    max_context_tokens: int = 512  # streaming span
    token_budget: int = 2048  # streaming: padded tokens per batch
    pretrain_steps: int = 80
    pretrain_epochs: int | None = None  # streaming: whole epochs over the training spans (overrides steps)
    pretrain_dialogues: int = 8
    pretrain_segments: int = 6
    pretrain_lr: float = 5e-5
    pretrain_head_lr: float | None = None  # None = pretrain_lr (see TrainConfig)
    pointwise_weight: float = 0.1  # w of pairwise+pointwise (pairwise+pointwise@w overrides it per method)
    finetune_epochs: int = 4
    max_finetune_steps: int | None = 60  # None = no cap: epochs and early stopping decide
    patience: int = 2  # validations without improvement before finetuning stops
    batch_size: int = 32
    finetune_lr: float = 5e-5
    alpha: float = 0.5
    samples: int = 10  # teacher votes per turn
    noise: dict[str, Any] = field(default_factory=lambda: {"accuracy": 0.70, "drift": 1.0})
    fewshot: dict[str, Any] = field(default_factory=dict)  # FewshotConfig fields (shots, method, temperature...)
    precision: str = "auto"
    device: str = "auto"  # CUDA when available
    preset: str | None = None  # the preset the run started from (for titles)


# ``cpu``: a 2-core CPU's scale (docs/evidence.md). ``round2``: a budget where the methods can differ (docs/
# evidence.md, "How to run round 2"): 256-token streaming spans, 4,000 training dialogues (MELD: all), one
# pretraining epoch, finetuning to early stopping, the whole test split. ``full``: whole splits, for a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "round2": {"encoder": "streaming", "max_context_tokens": 256, "token_budget": 2048, "train_dialogues": 4000,
               "val_dialogues": 200, "test_dialogues": None, "pretrain_epochs": 1, "finetune_epochs": 30,
               "max_finetune_steps": None, "patience": 3, "samples": 20, "methods": list(ROUND2_METHODS),
               "ablations": False},
    "full": {"encoder": "streaming", "train_dialogues": None, "val_dialogues": None, "test_dialogues": None,
             "max_tokens": 128, "max_turns": 6, "pretrain_steps": 3000, "pretrain_segments": 12, "finetune_epochs": 10,
             "max_finetune_steps": 3000, "samples": 30},
}


def preset_config(preset: str, **overrides: Any) -> Table1Config:
    """A :class:`Table1Config` from a preset, with explicit settings (those not None) winning."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return Table1Config(**{**PRESETS[preset], **given, **({"preset": preset} if preset != "cpu" else {})})


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
    records = t.label(dialogues, schema, samples)
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


def load_splits(cfg: Table1Config, data: Path | None) -> tuple[list[Dialogue], list[Dialogue], list[Dialogue]]:
    """Train / validation / test dialogues. ``jsonl`` datasets (the miniature test) are split 60/20/20."""
    from trainer.data import default_data_root, load_source

    n_train, n_val, n_test = (n or None for n in (cfg.train_dialogues, cfg.val_dialogues, cfg.test_dialogues))
    if cfg.dataset == "jsonl":
        from turnwise.dialogue import read_jsonl

        assert data is not None, "--data is required with --dataset jsonl"
        dl = read_jsonl(data)
        a, b = int(0.6 * len(dl)), int(0.8 * len(dl))
        return dl[:a][:n_train], dl[a:b][:n_val], dl[b:][:n_test]
    root = data or default_data_root() / cfg.dataset
    return (load_source(cfg.dataset, root, "train", max_dialogues=n_train),
            load_source(cfg.dataset, root, "validation", max_dialogues=n_val),
            load_source(cfg.dataset, root, "test", max_dialogues=n_test))


def _train_cfg(cfg: Table1Config, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
                backbone=cfg.backbone, max_tokens=cfg.max_tokens, max_turns=cfg.max_turns, tasks=[cfg.task],
                encoder=cfg.encoder, max_context_tokens=cfg.max_context_tokens, token_budget=cfg.token_budget,
                pretrain_dialogues=cfg.pretrain_dialogues, pretrain_segments=cfg.pretrain_segments,
                pretrain_lr=cfg.pretrain_lr, pretrain_head_lr=cfg.pretrain_head_lr,
                finetune_epochs=cfg.finetune_epochs, batch_size=cfg.batch_size,
                finetune_lr=cfg.finetune_lr, max_steps=cfg.max_finetune_steps, alpha=cfg.alpha,
                pointwise_weight=cfg.pointwise_weight, precision=cfg.precision, device=cfg.device,
                save_every=10_000, patience=cfg.patience)
    base.update(kw)
    return TrainConfig(**base)


def pretraining_variants(cfg: Table1Config) -> list[tuple[str, dict[str, Any]]]:
    """(method name, pretraining overrides) of every pretrained method of the run, ablations last."""
    variants: list[tuple[str, dict[str, Any]]] = []
    for m in cfg.methods:
        if m in ("pointwise", "pairwise"):
            variants.append((m, {"objective": m}))
        elif m == plots.COMBINED or m.startswith(plots.COMBINED + "@"):
            w = float(m.split("@")[1]) if "@" in m else cfg.pointwise_weight
            variants.append((m, {"objective": plots.COMBINED, "pointwise_weight": w}))
        elif m != "finetune_only":
            raise ValueError(f"unknown method {m!r} (finetune_only, pointwise, pairwise, {plots.COMBINED}[@w])")
    if cfg.ablations and "pairwise" in cfg.methods:
        variants += [("pairwise_alpha0", {"objective": "pairwise", "alpha": 0.0}),
                     ("pairwise_alpha1", {"objective": "pairwise", "alpha": 1.0}),
                     ("pairwise_inter", {"objective": "pairwise", "pair_mode": "inter"})]
    return variants


def _every(n: int):
    """A training progress callback that logs one line every ``n`` steps (runs last minutes to hours)."""
    def progress(phase: str, step: int, total: int, shown: dict[str, float]) -> None:
        if step % n == 0 or step == total:
            console.log(f"  {phase} step {step}/{total} loss {shown.get('loss', float('nan')):.4f}")
    return progress


class _Teacher:
    """The teacher's scores for each seed: computed once (simulated, zeroshot) or per seed (fewshot, whose
    shots come from the seed's gold dialogues at the smallest gold fraction); checked on the way."""

    def __init__(self, cfg: Table1Config, train_d: list[Dialogue], base_schema: TaskSchema):
        self.cfg, self.train_d, self.base_schema = cfg, train_d, base_schema
        self.task_d = one_vs_rest_dialogues(train_d, cfg.task)
        self.cache: dict[int, tuple[dict[tuple[str, str], Any], dict[str, Any]]] = {}
        self.fewshot: Any = None
        self.checks: list[dict[str, Any]] = []

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
            self.fewshot = (self.fewshot.with_pool(pool) if self.fewshot is not None
                            else FewshotTeacher(pool, FewshotConfig(**{"seed": seed, **cfg.fewshot})))
        records, tinfo = teacher_scores(cfg.teacher, self.train_d, self.base_schema, cfg.samples, 0, cfg.noise,
                                        fewshot=self.fewshot)
        if split_task(cfg.task)[1] is not None:
            records = one_vs_rest_records(records, cfg.task)
        check = {"seed": seed, **teacher_check(records, self.task_d, cfg.task),
                 "wall_s": round(time.perf_counter() - t0, 1)}
        self.checks.append(check)
        acc = tinfo["accuracy_on_train"] = check["accuracy"]
        tinfo["wall_s"] = check["wall_s"]
        console.log(f"teacher {cfg.teacher} (seed {seed}): accuracy {acc:.4f} on the training dialogues, "
                    f"H2 slopes intra {check['h2']['slope_intra']} / inter {check['h2']['slope_inter']}")
        self.cache[key] = (records, tinfo)
        return records, tinfo

    def info(self) -> dict[str, Any]:
        """The summary the JSON keeps: the last teacher's, with the checks of every seed (means on top)."""
        tinfo: dict[str, Any] = dict(self.cache[max(self.cache)][1]) if self.cache else {"kind": self.cfg.teacher}
        if self.checks:
            tinfo["accuracy_on_train"] = float(np.mean([c["accuracy"] for c in self.checks]))
            tinfo["ece"] = float(np.mean([c["ece"] for c in self.checks]))
            slopes = {k: [c["h2"][k] for c in self.checks if c["h2"][k] is not None] for k in SLOPES}
            tinfo["h2"] = {k: float(np.mean(v)) if v else None for k, v in slopes.items()}
            tinfo["checks"] = self.checks
        return tinfo


def run_table1(cfg: Table1Config, out: str | Path, *, data: Path | None = None, schema: TaskSchema | None = None,
               keep_checkpoints: bool = False) -> dict[str, Any]:
    from trainer.data import source_tasks

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    base_schema = (schema or source_tasks(cfg.dataset)).select([split_task(cfg.task)[0]])
    task_schema = one_vs_rest_schema(base_schema, cfg.task)
    train_d, val_d, test_d = load_splits(cfg, data)
    work = out / plots.stem(asdict(cfg)).replace("table1-", "work-", 1)  # runs of others may share ``out``
    console.log(f"table1 {cfg.dataset}/{cfg.task} teacher={cfg.teacher}: train {len(train_d)}, "
                f"val {len(val_d)}, test {len(test_d)} dialogues")
    teacher = _Teacher(cfg, train_d, base_schema)
    train_t, val_t, test_t = (one_vs_rest_dialogues(x, cfg.task) for x in (train_d, val_d, test_d))
    variants = pretraining_variants(cfg)
    runs: list[dict[str, Any]] = []
    total, done = len(cfg.seeds) * (len(cfg.gold_fractions) * sum(map(plots.is_main, cfg.methods))
                                    + sum(not plots.is_main(n) for n, _ in variants)), 0
    for seed in cfg.seeds:
        pretrained: dict[str, Path] = {}
        pre_wall: dict[str, float] = {}
        for name, over in variants:
            records, tinfo = teacher.for_seed(seed)
            t0 = time.perf_counter()
            pcfg = _train_cfg(cfg, seed=seed, pretrain_steps=cfg.pretrain_steps, pretrain_epochs=cfg.pretrain_epochs,
                              finetune_epochs=0, **over)
            path = work / f"pre-{name}-s{seed}"
            shutil.rmtree(path, ignore_errors=True)
            res = train(pcfg, train_t, task_schema, path, teacher=records, teacher_info=tinfo, progress=_every(50))
            pretrained[name] = path
            pre_wall[name] = round(time.perf_counter() - t0, 1)
            console.log(f"seed {seed}: {name} pretrained in {pre_wall[name]} s ({res.steps} steps)")
        for frac_i, frac in enumerate(cfg.gold_fractions):
            for name in ["finetune_only", *[n for n, _ in variants]]:
                if (not plots.is_main(name) and frac_i) or (name == "finetune_only" and name not in cfg.methods):
                    continue  # ablations only at the smallest gold fraction, where pretraining matters most
                t0 = time.perf_counter()
                fcfg = _train_cfg(cfg, seed=seed, objective="none", gold_fraction=frac,
                                  init_from=str(pretrained[name]) if name in pretrained else None)
                path = work / f"ft-{name}-s{seed}-g{frac}"
                shutil.rmtree(path, ignore_errors=True)
                res = train(fcfg, train_t, task_schema, path, val_dialogues=val_t)
                report = evaluate_path(path, test_t, tasks=[cfg.task], device=cfg.device)
                m = report["tasks"][cfg.task]
                runs.append({"method": name, "seed": seed, "gold_fraction": frac, "accuracy": m["accuracy"],
                             "macro_f1": m["macro_f1"], "val_best": res.best_metric, "finetune_steps": res.steps,
                             "pretrain_wall_s": pre_wall.get(name, 0.0),
                             "finetune_wall_s": round(time.perf_counter() - t0, 1),
                             "settings": {k: v for k, v in asdict(fcfg).items() if k != "extra"}})
                done += 1
                console.log(f"[{done}/{total}] seed {seed} gold {frac:.0%} {name}: acc {m['accuracy']:.4f} "
                            f"macro-F1 {m['macro_f1']:.4f}")
                if not keep_checkpoints:
                    shutil.rmtree(path, ignore_errors=True)
        if not keep_checkpoints:
            for p in pretrained.values():
                shutil.rmtree(p, ignore_errors=True)
    result = summarise(cfg, runs, teacher.info(), wall_s=time.perf_counter() - t_start,
                       sizes={"train": len(train_d), "validation": len(val_d), "test": len(test_d)})
    result["majority"] = plots.majority(test_t, cfg.task)
    plots.write_outputs(result, out)
    if not keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    return result


def summarise(cfg: Table1Config, runs: list[dict[str, Any]], tinfo: dict[str, Any], *, wall_s: float,
              sizes: dict[str, int]) -> dict[str, Any]:
    def stats(method: str, frac: float, key: str) -> tuple[float | None, float | None]:
        vals = [r[key] for r in runs if r["method"] == method and r["gold_fraction"] == frac]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)

    methods: dict[str, Any] = {}
    for name in plots.in_paper_order({r["method"] for r in runs}):
        fracs = cfg.gold_fractions if plots.is_main(name) else cfg.gold_fractions[:1]
        acc = [stats(name, f, "accuracy") for f in fracs]
        f1 = [stats(name, f, "macro_f1") for f in fracs]
        methods[name] = {"gold_fractions": fracs, "mean": [a[0] for a in acc], "std": [a[1] for a in acc],
                         "macro_f1_mean": [a[0] for a in f1], "macro_f1_std": [a[1] for a in f1]}
    return {"dataset": cfg.dataset, "task": cfg.task, "teacher": cfg.teacher,
            "teacher_label": "simulated teacher" if cfg.teacher == "simulated" else cfg.teacher,
            "metric": "accuracy", "gold_fractions": cfg.gold_fractions, "methods": methods,
            "teacher_info": tinfo, "config": asdict(cfg), "sizes": sizes, "wall_s": round(wall_s, 1),
            "runs": runs}


def render_outputs(json_path: str | Path, data: Path | None = None) -> Path:
    """Re-render the Markdown and PNG next to a finished run's JSON; returns the Markdown path. A result
    written before the majority class was kept gets it from its test split when the corpus is at hand."""
    path = Path(json_path)
    result = plots.read_result(path)
    if "majority" not in result and "config" in result and result["dataset"] != "jsonl":
        try:
            cfg = Table1Config(**{k: v for k, v in result["config"].items() if k in Table1Config.__dataclass_fields__})
            result["majority"] = plots.majority(one_vs_rest_dialogues(load_splits(cfg, data)[2], cfg.task), cfg.task)
        except (OSError, ValueError) as err:
            console.log(f"{path}: no majority-class line ({err})")
    return plots.write_outputs(result, path.parent)


def budget_check(cfg: Table1Config, out: str | Path, *, min_accuracy: float, data: Path | None = None,
                 schema: TaskSchema | None = None) -> tuple[bool, float, dict[str, Any]]:
    """Finetune-only at 100 % gold with the run's settings (one seed): is the budget enough to learn the task?
    Returns (accuracy >= ``min_accuracy``, the accuracy, the result written to ``out``)."""
    check = replace(cfg, gold_fractions=[1.0], methods=["finetune_only"], seeds=cfg.seeds[:1], ablations=False)
    result = run_table1(check, out, data=data, schema=schema)
    acc = float(result["methods"]["finetune_only"]["mean"][0])
    return acc >= min_accuracy, acc, result
