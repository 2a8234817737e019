"""``turnwise experiment table1``: the paper's Table 1 on public data, with its ablations.

For one dataset/task/teacher: teacher scores on the training dialogues; for every seed, one
pointwise and one pairwise pretraining (shared by all gold fractions — pretraining never sees gold),
then for every gold fraction a finetuning from (a) the backbone = finetune-only, (b) the pointwise
student, (c) the pairwise student; evaluation on the official test split. Ablations (pairwise only):
alpha in {0, 0.5, 1} and inter-session pairs instead of intra-session ones.

Outputs in ``out``: ``table1-<dataset>-<teacher>.json`` (every run with its seed and settings, means
and stds aligned with ``gold_fractions``), a Markdown table, and a PNG of accuracy vs gold fraction.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from trainer.evaluate import evaluate_path
from trainer.train import TrainConfig, train
from turnwise.dialogue import Dialogue
from turnwise.jsonl import dumps_json
from turnwise.tasks import TaskSchema

console = Console(stderr=True)
METHODS = ("finetune_only", "pointwise", "pairwise")


@dataclass
class Table1Config:
    """One Table 1 run. The defaults are the ``cpu`` preset (see :data:`PRESETS` and docs/evidence.md)."""

    dataset: str = "dailydialog"
    task: str = "act"
    teacher: str = "simulated"
    gold_fractions: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.10, 0.25])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
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
    pretrain_dialogues: int = 8
    pretrain_segments: int = 6
    pretrain_lr: float = 5e-5
    pretrain_head_lr: float | None = None  # None = pretrain_lr (see TrainConfig)
    finetune_epochs: int = 4
    max_finetune_steps: int = 60
    batch_size: int = 32
    finetune_lr: float = 5e-5
    alpha: float = 0.5
    samples: int = 10  # teacher votes per turn
    noise: dict[str, Any] = field(default_factory=lambda: {"accuracy": 0.70, "drift": 1.0})
    precision: str = "auto"
    device: str = "auto"  # CUDA when available


# ``cpu``: fits a 2-core CPU (the four dataset x teacher runs in about two hours, two at a time with one
# thread each); ``full``: whole splits, longer windows and training, for a GPU (``device`` auto-selects it).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "full": {"encoder": "streaming", "train_dialogues": None, "val_dialogues": None, "test_dialogues": None,
             "max_tokens": 128, "max_turns": 6, "pretrain_steps": 3000, "pretrain_segments": 12, "finetune_epochs": 10,
             "max_finetune_steps": 3000, "samples": 30},
}


def preset_config(preset: str, **overrides: Any) -> Table1Config:
    """A :class:`Table1Config` from a preset, with explicit settings (those not None) winning."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return Table1Config(**{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})


def teacher_scores(kind: str, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int, seed: int,
                   noise: dict[str, Any]) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    if kind == "simulated":
        from trainer.teachers.simulated import SimulatedTeacher

        sim = SimulatedTeacher(noise, seed=seed)
        records = sim.label(dialogues, schema, samples)
        summary = sim.summary()
    elif kind == "zeroshot":
        from trainer.teachers.prompts import PromptBank
        from trainer.teachers.zeroshot import ZeroshotTeacher

        zs = ZeroshotTeacher(PromptBank.load())
        records = zs.label(dialogues, schema, samples)
        summary = zs.summary()
    else:
        raise ValueError(f"teacher must be simulated or zeroshot for experiments, got {kind!r}")
    by_key = {(r.dialogue_id, r.task): r for r in records}
    return by_key, {"kind": kind, **summary}


def teacher_accuracy(records: dict[tuple[str, str], Any], dialogues: Sequence[Dialogue], schema: TaskSchema,
                     task: str) -> float:
    hits = total = 0
    labels = schema[task].labels
    for d in dialogues:
        rec = records.get((d.dialogue_id, task))
        if rec is None:
            continue
        s = np.asarray(rec.scores)
        for i, t in enumerate(d.turns):
            if task in t.labels and s[i].sum() > 0:
                total += 1
                hits += labels[int(s[i].argmax())] == t.labels[task]
    return hits / max(1, total)


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
                precision=cfg.precision, device=cfg.device, save_every=10_000, patience=2)
    base.update(kw)
    return TrainConfig(**base)


def _every(n: int):
    """A training progress callback that logs one line every ``n`` steps (runs last minutes to hours)."""
    def progress(phase: str, step: int, total: int, shown: dict[str, float]) -> None:
        if step % n == 0 or step == total:
            console.log(f"  {phase} step {step}/{total} loss {shown.get('loss', float('nan')):.4f}")
    return progress


def run_table1(cfg: Table1Config, out: str | Path, *, data: Path | None = None, schema: TaskSchema | None = None,
               keep_checkpoints: bool = False) -> dict[str, Any]:
    from trainer.data import source_tasks

    out = Path(out)
    work = out / f"work-{cfg.dataset}-{cfg.teacher}"  # runs of other datasets/teachers may share ``out``
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    schema = (schema or source_tasks(cfg.dataset)).select([cfg.task])
    train_d, val_d, test_d = load_splits(cfg, data)
    console.log(f"table1 {cfg.dataset}/{cfg.task} teacher={cfg.teacher}: train {len(train_d)}, "
                f"val {len(val_d)}, test {len(test_d)} dialogues")
    t0 = time.perf_counter()
    records, tinfo = teacher_scores(cfg.teacher, train_d, schema, cfg.samples, 0, cfg.noise)
    t_acc = teacher_accuracy(records, train_d, schema, cfg.task)
    tinfo.update({"accuracy_on_train": t_acc, "wall_s": round(time.perf_counter() - t0, 1)})
    console.log(f"teacher {cfg.teacher}: accuracy {t_acc:.4f} on the training dialogues")

    variants: list[tuple[str, dict[str, Any]]] = []  # (method name, pretraining overrides)
    for m in cfg.methods:
        if m == "pointwise":
            variants.append(("pointwise", {"objective": "pointwise"}))
        elif m == "pairwise":
            variants.append(("pairwise", {"objective": "pairwise"}))
    if cfg.ablations and "pairwise" in cfg.methods:
        variants += [("pairwise_alpha0", {"objective": "pairwise", "alpha": 0.0}),
                     ("pairwise_alpha1", {"objective": "pairwise", "alpha": 1.0}),
                     ("pairwise_inter", {"objective": "pairwise", "pair_mode": "inter"})]
    runs: list[dict[str, Any]] = []
    total = len(cfg.seeds) * (len(cfg.gold_fractions) * len(cfg.methods)
                              + (3 if cfg.ablations and "pairwise" in cfg.methods else 0))
    done = 0
    for seed in cfg.seeds:
        pretrained: dict[str, Path] = {}
        pre_wall: dict[str, float] = {}
        for name, over in variants:
            t0 = time.perf_counter()
            pcfg = _train_cfg(cfg, seed=seed, pretrain_steps=cfg.pretrain_steps, finetune_epochs=0, **over)
            path = work / f"pre-{name}-s{seed}"
            shutil.rmtree(path, ignore_errors=True)
            console.log(f"seed {seed}: {name} pretraining, {cfg.pretrain_steps} steps")
            train(pcfg, train_d, schema, path, teacher=records, teacher_info=tinfo, progress=_every(50))
            pretrained[name] = path
            pre_wall[name] = round(time.perf_counter() - t0, 1)
        for frac_i, frac in enumerate(cfg.gold_fractions):
            for name in ["finetune_only", *[n for n, _ in variants]]:
                is_ablation = name not in METHODS
                if is_ablation and frac_i != 0:
                    continue  # ablations at the smallest gold fraction, where pretraining matters most
                if name == "finetune_only" and "finetune_only" not in cfg.methods:
                    continue
                t0 = time.perf_counter()
                fcfg = _train_cfg(cfg, seed=seed, objective="none", gold_fraction=frac,
                                  init_from=str(pretrained[name]) if name in pretrained else None)
                path = work / f"ft-{name}-s{seed}-g{frac}"
                shutil.rmtree(path, ignore_errors=True)
                res = train(fcfg, train_d, schema, path, val_dialogues=val_d)
                report = evaluate_path(path, test_d, tasks=[cfg.task], device=cfg.device)
                m = report["tasks"][cfg.task]
                runs.append({"method": name, "seed": seed, "gold_fraction": frac, "accuracy": m["accuracy"],
                             "macro_f1": m["macro_f1"], "val_best": res.best_metric, "finetune_steps": res.steps,
                             "pretrain_wall_s": pre_wall.get(name, 0.0),
                             "finetune_wall_s": round(time.perf_counter() - t0, 1),
                             "settings": {k: v for k, v in asdict(fcfg).items() if k not in ("extra",)}})
                done += 1
                console.log(f"[{done}/{total}] seed {seed} gold {frac:.0%} {name}: acc {m['accuracy']:.4f} "
                            f"macro-F1 {m['macro_f1']:.4f}")
                if not keep_checkpoints:
                    shutil.rmtree(path, ignore_errors=True)
        if not keep_checkpoints:
            for p in pretrained.values():
                shutil.rmtree(p, ignore_errors=True)
    result = summarise(cfg, runs, tinfo, wall_s=time.perf_counter() - t_start,
                       sizes={"train": len(train_d), "validation": len(val_d), "test": len(test_d)})
    write_outputs(result, out)
    if not keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    return result


def summarise(cfg: Table1Config, runs: list[dict[str, Any]], tinfo: dict[str, Any], *, wall_s: float,
              sizes: dict[str, int]) -> dict[str, Any]:
    def stats(method: str, frac: float, key: str) -> tuple[float | None, float | None]:
        vals = [r[key] for r in runs if r["method"] == method and r["gold_fraction"] == frac]
        if not vals:
            return None, None
        return float(np.mean(vals)), float(np.std(vals))

    methods: dict[str, Any] = {}
    for name in _in_paper_order({r["method"] for r in runs}):
        fracs = cfg.gold_fractions if name in METHODS else cfg.gold_fractions[:1]
        acc = [stats(name, f, "accuracy") for f in fracs]
        f1 = [stats(name, f, "macro_f1") for f in fracs]
        methods[name] = {"gold_fractions": fracs, "mean": [a[0] for a in acc], "std": [a[1] for a in acc],
                         "macro_f1_mean": [a[0] for a in f1], "macro_f1_std": [a[1] for a in f1]}
    teacher_label = "simulated teacher" if cfg.teacher == "simulated" else cfg.teacher
    return {"dataset": cfg.dataset, "task": cfg.task, "teacher": cfg.teacher, "teacher_label": teacher_label,
            "metric": "accuracy", "gold_fractions": cfg.gold_fractions, "methods": methods,
            "teacher_info": tinfo, "config": asdict(cfg), "sizes": sizes, "wall_s": round(wall_s, 1),
            "runs": runs}


def _in_paper_order(names: Any) -> list[str]:
    """Table 1's methods in the paper's order, then the ablations alphabetically."""
    present = set(names)
    return [n for n in METHODS if n in present] + sorted(present - set(METHODS))


def _table(result: dict[str, Any], mean_key: str, std_key: str) -> list[str]:
    fr = result["gold_fractions"]
    lines = [f"| method | {' | '.join(f'{f:.0%} gold' for f in fr)} |", "|---" * (len(fr) + 1) + "|"]
    for name in _in_paper_order(result["methods"]):
        m = result["methods"][name]
        cells = []
        for f in fr:
            if f in m["gold_fractions"]:
                k = m["gold_fractions"].index(f)
                cells.append(f"{100 * m[mean_key][k]:.1f} ± {100 * m[std_key][k]:.1f}")
            else:
                cells.append("")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """Accuracy and macro-F1 tables (mean ± std over seeds), as Markdown."""
    teacher_acc = result["teacher_info"].get("accuracy_on_train", float("nan"))
    lines = [f"### {result['dataset']} {result['task']} — teacher: {result['teacher_label']} "
             f"(accuracy on train {teacher_acc:.3f})", "", "Accuracy (%)", "",
             *_table(result, "mean", "std"), "", "Macro-F1 (%)", "",
             *_table(result, "macro_f1_mean", "macro_f1_std"), "",
             f"On {result['sizes']['test']} test dialogues, mean ± std over seeds {result['config']['seeds']}; "
             f"wall time {result['wall_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (key, std_key, label) in zip(axes, [("mean", "std", "test accuracy (%)"),
                                                ("macro_f1_mean", "macro_f1_std", "test macro-F1 (%)")], strict=True):
        for name in METHODS:
            m = result["methods"].get(name)
            if not m:
                continue
            x = [100 * f for f in m["gold_fractions"]]
            mean, std = np.array(m[key], float), np.array(m[std_key], float)
            ax.errorbar(x, 100 * mean, yerr=100 * std, marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ticks = [100 * f for f in result["gold_fractions"]]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("gold dialogues (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result['dataset']} {result['task']} — {result['teacher_label']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: dict[str, Any], out: Path) -> Path:
    """JSON, Markdown and PNG of a run; returns the Markdown path."""
    stem = f"table1-{result['dataset']}-{result['teacher']}"
    (out / f"{stem}.json").write_text(dumps_json(result, indent=2), encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown(result), encoding="utf-8")
    plot(result, out / f"{stem}.png")
    return out / f"{stem}.md"


def render_outputs(json_path: str | Path) -> Path:
    """Re-render the Markdown and PNG next to a finished run's JSON; returns the Markdown path."""
    path = Path(json_path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable table1 result ({err})") from None
    if not {"dataset", "teacher", "methods", "gold_fractions"} <= set(result):
        raise ValueError(f"{path}: not a table1 result (missing dataset/teacher/methods/gold_fractions)")
    return write_outputs(result, path.parent)
