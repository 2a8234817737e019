"""``turnwise experiment``: the paper's evidence (Table 1) and re-rendering finished runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.options import Dataset, Encoder, Preset, Table1Teacher, above_zero, check_backbone

experiment_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                             help="Experiments that reproduce the paper's evidence.")


@experiment_app.command("render")
def experiment_render(results: Annotated[list[Path], typer.Argument(help="table1-*.json files")]) -> None:
    """Rewrite the Markdown table and PNG of finished Table 1 runs from their JSON (no training)."""
    from trainer.experiment import render_outputs

    for path in results:
        typer.echo(render_outputs(path))


@experiment_app.command("table1")
def experiment_table1(
    out: Annotated[Path, typer.Option("--out", help="folder for the JSON, Markdown and PNG results")] = Path(
        "benchmarks/results"),
    dataset: Annotated[Dataset, typer.Option("--dataset", help="corpus of the experiment", case_sensitive=False)] = (
        Dataset.dailydialog),
    task: Annotated[str, typer.Option("--task", help="task of the corpus to run (e.g. act, sentiment)")] = "act",
    teacher: Annotated[Table1Teacher, typer.Option("--teacher", help="offline teacher for pretraining",
                                                   case_sensitive=False)] = Table1Teacher.simulated,
    preset: Annotated[Preset, typer.Option("--preset", help="cpu (2-core scale) | round2 (a budget where the methods "
                                           "can differ) | full (whole splits, for a GPU); the options below "
                                           "override it", case_sensitive=False)] = Preset.cpu,
    data: Annotated[Path | None, typer.Option("--data", help="corpus folder or JSONL (default: shared data)")] = None,
    tasks: Annotated[Path | None, typer.Option("--tasks", help="task schema (for --dataset jsonl)")] = None,
    gold_fractions: Annotated[str | None, typer.Option("--gold-fractions", help="comma-separated fractions of "
                                                       "gold dialogues, each in (0, 1]: the first for "
                                                       "every seed and method first, then the others seed by "
                                                       "seed (default: the preset's)")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="comma-separated seeds")] = "0,1,2",
    methods: Annotated[str | None, typer.Option("--methods", help="comma-separated: finetune_only, pointwise, "
                                                "pairwise, pairwise+pointwise (w = --pointwise-weight), "
                                                "pairwise+pointwise@W (default: the preset's)")] = None,
    ablations: Annotated[bool | None, typer.Option("--ablations/--no-ablations", help="also run the alpha and "
                                                   "pair-mode ablations (default: the preset's)")] = None,
    pointwise_weight: Annotated[float | None, typer.Option(min=0, help="w of pairwise+pointwise")] = None,
    pretrain_epochs: Annotated[int | None, typer.Option(min=1, help="streaming: pretraining epochs (overrides "
                                                        "--pretrain-steps)")] = None,
    samples: Annotated[int | None, typer.Option(min=1, help="teacher votes per turn")] = None,
    fewshot: Annotated[str | None, typer.Option("--fewshot", help="fewshot teacher settings as JSON (shots, "
                                                "method, temperature, ...)")] = None,
    train_dialogues: Annotated[int | None, typer.Option(min=0, help="training dialogues (0 = all)")] = None,
    val_dialogues: Annotated[int | None, typer.Option(min=0, help="validation dialogues for early stopping "
                                                      "(0 = all)")] = None,
    test_dialogues: Annotated[int | None, typer.Option(min=0, help="test dialogues (0 = all)")] = None,
    pretrain_steps: Annotated[int | None, typer.Option(min=0, help="pretraining steps per run")] = None,
    pretrain_segments: Annotated[int | None, typer.Option(min=1, help="segments per dialogue in a pretraining "
                                                          "batch")] = None,
    max_finetune_steps: Annotated[int | None, typer.Option(min=1, help="cap on finetuning steps per run")] = None,
    min_finetune_steps: Annotated[int | None, typer.Option(min=0, help="finetuning steps each run takes at least "
                                                           "(more epochs over a small gold set)")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(min=1, help="finetuning epochs: the learning-rate schedule's "
                                                        "length (early stopping may end a run sooner)")] = None,
    finetune_lr: Annotated[float | None, typer.Option(callback=above_zero, help="encoder's learning rate while "
                                                      "finetuning")] = None,
    pretrain_head_lr: Annotated[float | None, typer.Option(callback=above_zero, help="heads' learning rate while "
                                                          "pretraining (default: the encoder's)")] = None,
    backbone: Annotated[str | None, typer.Option(callback=check_backbone, help="minilm | todbert | a Hugging Face "
                                                 "id | a local model folder")] = None,
    encoder: Annotated[Encoder | None, typer.Option("--encoder", help="default: the preset's",
                                                    case_sensitive=False)] = None,
    max_tokens: Annotated[int | None, typer.Option(min=8, help="flat window length in tokens")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA when available) | cpu | cuda[:N]")] = None,
    noise: Annotated[str | None, typer.Option("--noise", help="simulated teacher noise as JSON")] = None,
    report_only: Annotated[bool, typer.Option("--report-only", help="train nothing: write the (partial) table "
                                              "of the runs a stopped run with these settings finished")] = False,
    budget_check: Annotated[float | None, typer.Option("--budget-check", min=0, max=1, help="instead of the table: "
                                                       "finetune-only at 100%% gold (first seed) with these settings; "
                                                       "exit 1 if its test accuracy is below this")] = None,
) -> None:
    """The paper's Table 1 (finetune-only vs pointwise vs pairwise [vs pairwise+pointwise]) with ablations."""
    from trainer.data import resolve_schema
    from trainer.experiment import budget_check as check_budget
    from trainer.experiment import preset_config, run_table1
    from trainer.experiment_plots import markdown

    try:
        fractions = [float(x) for x in gold_fractions.split(",")] if gold_fractions else None
        seed_list = [int(x) for x in seeds.split(",")]
    except ValueError:
        raise typer.BadParameter("--gold-fractions takes numbers and --seeds integers, comma-separated") from None
    if fractions is not None and not all(0 < f <= 1 for f in fractions):
        raise typer.BadParameter(f"every gold fraction must be in (0, 1], got {gold_fractions}",
                                 param_hint="--gold-fractions")
    try:
        extra = {"noise": json.loads(noise) if noise else None, "fewshot": json.loads(fewshot) if fewshot else None}
    except ValueError:
        raise typer.BadParameter("--noise and --fewshot take JSON objects") from None
    cfg = preset_config(preset.value, dataset=dataset.value, task=task, teacher=teacher.value,
                        gold_fractions=fractions, seeds=seed_list,
                        methods=[m.strip() for m in methods.split(",")] if methods else None,
                        ablations=ablations, train_dialogues=train_dialogues, pointwise_weight=pointwise_weight,
                        pretrain_epochs=pretrain_epochs, samples=samples,
                        val_dialogues=val_dialogues, test_dialogues=test_dialogues,
                        pretrain_steps=pretrain_steps, pretrain_segments=pretrain_segments,
                        max_finetune_steps=max_finetune_steps, min_finetune_steps=min_finetune_steps,
                        finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
                        pretrain_head_lr=pretrain_head_lr, backbone=backbone,
                        max_tokens=max_tokens, encoder=encoder.value if encoder else None,
                        device=device, **extra)
    schema = resolve_schema(tasks, dataset.value) if tasks else None
    if budget_check is not None:
        ok, acc, _ = check_budget(cfg, out, min_accuracy=budget_check, data=data, schema=schema)
        verdict = "enough" if ok else "NOT enough: raise it (epochs, context, dialogues) before running the table"
        typer.echo(f"budget check, {cfg.dataset} {cfg.task}, finetune-only at 100% gold: test accuracy {acc:.4f} "
                   f"(needed {budget_check:.4f}) -- the budget is {verdict}")
        raise typer.Exit(0 if ok else 1)
    result = run_table1(cfg, out, data=data, schema=schema, report_only=report_only)
    typer.echo(markdown(result))
