"""``turnwise train`` and ``turnwise evaluate``: resolve data, splits and teacher scores, show progress."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from trainer.train import TrainConfig, record_run_facts, train
from turnwise.dialogue import Dialogue, read_jsonl
from turnwise.errors import DataError
from turnwise.names import TRAINING_STATE

console = Console(stderr=True)
VAL_FRACTION = 0.1


def split_off(dialogues: list[Dialogue], fraction: float, seed: int) -> tuple[list[Dialogue], list[Dialogue]]:
    """Deterministic dialogue-level split: (rest, held_out) with ``fraction`` held out (at least 1)."""
    rng = np.random.default_rng([seed, 31337])
    order = rng.permutation(len(dialogues))
    k = max(1, round(fraction * len(dialogues)))
    held = set(order[:k].tolist())
    return ([d for i, d in enumerate(dialogues) if i not in held], [d for i, d in enumerate(dialogues) if i in held])


def resolve_train_data(data: Path, source: str, val: Path | None, max_dialogues: int | None,
                       seed: int) -> tuple[list[Dialogue], list[Dialogue]]:
    from trainer.data import load_source

    if source == "jsonl":
        train_d = read_jsonl(data)
        if max_dialogues:
            train_d = train_d[:max_dialogues]
        if val is not None:
            return train_d, read_jsonl(val)
        return split_off(train_d, VAL_FRACTION, seed)
    train_d = load_source(source, data, "train", max_dialogues=max_dialogues)
    if val is not None:
        return train_d, read_jsonl(val)
    val_cap = max(50, max_dialogues // 5) if max_dialogues else None
    try:
        return train_d, load_source(source, data, "validation", max_dialogues=val_cap)
    except DataError:
        return split_off(train_d, VAL_FRACTION, seed)


def run_train(*, data: Path, out: Path, tasks_path: Path | None, task_names: list[str] | None, scores: Path | None,
              objective: str, alpha: float, pair_mode: str, pair_budget: int, gold_fraction: float, backbone: str,
              source: str, val: Path | None, pretrain_steps: int, finetune_epochs: int, batch_size: int,
              max_steps: int | None, max_dialogues: int | None, max_tokens: int, max_turns: int, lr: float,
              precision: str, seed: int, encoder: str = "streaming", max_context_tokens: int = 512,
              reanchor_tokens: int | None = None, token_budget: int = 2048,
              pretrain_epochs: int | None = None, save_every: int = 50,
              select_metric: str = "accuracy", head_lr: float = 1e-3,
              allow_unlabelled: bool = False, rank_weight: float = 0.0,
              rank_batch: int = 16, pointwise_weight: float = 0.1) -> dict[str, Any]:
    from trainer.data import resolve_schema
    from trainer.data.checks import check_task_coverage

    schema = resolve_schema(tasks_path, source)
    train_d, val_d = resolve_train_data(data, source, val, max_dialogues, seed)
    teacher, teacher_info = None, None
    if scores is not None and objective != "none":
        from trainer.teachers.scores import read_scores

        teacher = read_scores(scores)
        first = next(iter(teacher.values()), None)
        teacher_info = first.teacher.model_dump(mode="json") if first is not None else None
    elif objective != "none":
        console.print(f"[yellow]no --scores given: skipping {objective} pretraining, finetuning only[/]")
        objective = "none"
    teacher_tasks = {task for _, task in teacher} if teacher else set()
    for warning in check_task_coverage(schema.select(task_names), train_d, teacher_tasks=teacher_tasks,
                                       allow_unlabelled=allow_unlabelled):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    cfg = TrainConfig(objective=objective, alpha=alpha, pair_mode=pair_mode, pair_budget=pair_budget,
                      gold_fraction=gold_fraction, backbone=backbone, max_tokens=max_tokens, max_turns=max_turns,
                      pretrain_steps=pretrain_steps, finetune_epochs=finetune_epochs, batch_size=batch_size,
                      max_steps=max_steps, finetune_lr=lr, precision=precision, seed=seed, tasks=task_names,
                      encoder=encoder, max_context_tokens=max_context_tokens, reanchor_tokens=reanchor_tokens,
                      token_budget=token_budget, pretrain_epochs=pretrain_epochs, save_every=save_every,
                      select_metric=select_metric, head_lr=head_lr, rank_weight=rank_weight,
                      rank_batch=rank_batch, pointwise_weight=pointwise_weight)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks
    if main_rank:
        console.print(f"train: {len(train_d)} dialogues, validation: {len(val_d)}, tasks: "
                      f"{schema.select(task_names).names()}, objective: {objective}, encoder: {encoder}, "
                      f"gold fraction: {gold_fraction}")
    t0 = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    # Under torchrun only rank 0 draws progress (the other ranks' bars would stay empty).
    with Progress(*columns, console=console, transient=False, disable=not main_rank) as bar:
        job = bar.add_task("training", total=None, info="")

        every = 0

        def progress(phase: str, step: int, total: int, info: dict[str, float]) -> None:
            nonlocal every
            text = " ".join(f"{k}={v:.4f}" for k, v in info.items())
            bar.update(job, completed=step, total=total, description=phase, info=text)
            # Without a terminal (CI, nohup) rich draws nothing until the end: log plain lines instead.
            every = every or max(1, total // 20)
            if not console.is_terminal and (step % every == 0 or step == total or "val" in info):
                console.log(f"{phase} step {step}/{total} {text}")

        try:
            result = train(cfg, train_d, schema, out, val_dialogues=val_d, teacher=teacher,
                           teacher_info=teacher_info, progress=progress)
        except KeyboardInterrupt:
            bar.stop()
            console.print(f"interrupted: {out / TRAINING_STATE} holds the run as of its last save (every "
                          f"{save_every} steps); run the same command again to resume from there", highlight=False)
            raise typer.Exit(130) from None
    if main_rank:
        record_run_facts(out, result)
    return {"checkpoint": str(result.checkpoint), "best_val": result.best_metric, "best_step": result.best_step,
            "steps": result.steps, "resumed_from": result.resumed_from, "precision": result.precision,
            "throughput": result.throughput, "wall_s": round(time.perf_counter() - t0, 1)}


def print_report(report: dict[str, Any]) -> None:
    out = Console()
    table = Table(title=escape(f"evaluation of {report.get('model', '')} ({report.get('segments', 0)} turns)"))
    for col in ("task", "n", "accuracy", "macro-F1"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for name, m in report["tasks"].items():
        table.add_row(escape(name), str(m["n"]), f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}")
    out.print(table)
    for name, m in report["tasks"].items():
        if "confusion" not in m:
            continue
        conf = Table(title=escape(f"{name}: confusion (rows gold, columns predicted)"))
        conf.add_column("")
        for lab in m["labels"]:
            conf.add_column(escape(lab[:10]), justify="right")
        for lab, row in zip(m["labels"], m["confusion"], strict=True):
            conf.add_row(escape(lab), *[str(x) for x in row])
        out.print(conf)
