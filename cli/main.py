"""The ``turnwise`` command line: the top layer. Each command is a thin shell over a library function
of the layers below (core, trainer, export, service, sidecar); heavy imports happen inside the
command so ``turnwise --help`` stays fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from turnwise.errors import TurnwiseError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="turnwise: real-time utterance understanding.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and convert dialogue corpora.")
experiment_app = typer.Typer(no_args_is_help=True, help="Experiments that reproduce the paper's evidence.")
app.add_typer(data_app, name="data")
app.add_typer(experiment_app, name="experiment")
console = Console(stderr=True)

Source = Annotated[str, typer.Option("--source", help="dailydialog|meld|multiwoz|sgd|multidogo|jsonl")]
Split = Annotated[str | None, typer.Option("--split", help="corpus split (train, validation, test)")]


@data_app.command("stats")
def data_stats(path: Path, source: Source = "jsonl", split: Split = None) -> None:
    """Dialogues, turns and label distributions per split."""
    from trainer.data.commands import cmd_stats

    cmd_stats(source, path, split)


@data_app.command("convert")
def data_convert(path: Path, out: Annotated[Path, typer.Option("--out")], source: Source = "jsonl",
                 split: Split = None, max_dialogues: int | None = None) -> None:
    """Write a corpus split as turnwise JSONL (plus its task schema)."""
    from trainer.data.commands import cmd_convert

    cmd_convert(source, path, split, out, max_dialogues)


@app.command()
def label(
    data: Annotated[Path, typer.Option("--data")],
    out: Annotated[Path, typer.Option("--out")],
    teacher: Annotated[str, typer.Option("--teacher", help="llm|zeroshot|simulated")] = "zeroshot",
    tasks: Annotated[Path | None, typer.Option("--tasks")] = None,
    samples: Annotated[int, typer.Option("--samples", help="votes per turn (N)")] = 10,
    source: Source = "jsonl",
    split: Split = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint")] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts")] = None,
    cache: Annotated[Path | None, typer.Option("--cache")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency")] = 4,
    rate: Annotated[float | None, typer.Option("--rate", help="max requests per second")] = None,
    temperature: float = 0.7,
    top_p: float = 0.95,
    plan: Annotated[bool, typer.Option("--plan", help="estimate calls and cost, spend nothing")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="i/n: label a deterministic shard")] = None,
    seed: int = 0,
    noise: Annotated[str | None, typer.Option("--noise", help="simulated teacher noise as JSON")] = None,
    max_dialogues: int | None = None,
    price_table: Annotated[Path | None, typer.Option("--price-table")] = None,
) -> None:
    """Score every turn with a teacher: S_i^c = fraction of N votes for class c."""
    from trainer.teachers.cli import run_label

    summary = run_label(data, tasks, teacher, samples, out, endpoint=endpoint, model=model, prompts=prompts,
                        cache=cache, concurrency=concurrency, rate=rate, temperature=temperature, top_p=top_p,
                        plan=plan, shard=shard, seed=seed, noise=json.loads(noise) if noise else None,
                        max_dialogues=max_dialogues, source=source, split=split, price_table=price_table)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def calibrate(
    data: Annotated[Path, typer.Option("--data")],
    scores: Annotated[Path, typer.Option("--scores")],
    task: Annotated[str, typer.Option("--task")],
    out: Annotated[Path, typer.Option("--out")],
    source: Source = "jsonl",
    split: Split = None,
    max_n: int = 30,
    seed: int = 0,
) -> None:
    """ECE vs ensemble size, reliability diagram and the intra/inter-session check (JSON + PNG)."""
    from trainer.teachers.cli import run_calibrate

    typer.echo(json.dumps(run_calibrate(data, scores, task, out, source=source, split=split, max_n=max_n,
                                        seed=seed), indent=2))


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="JSONL file, or a corpus folder with --source")],
    out: Annotated[Path, typer.Option("--out")],
    tasks: Annotated[Path | None, typer.Option("--tasks", help="task schema YAML (default: the corpus's)")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="train only these tasks")] = None,
    scores: Annotated[Path | None, typer.Option("--scores", help="teacher scores JSONL for pretraining")] = None,
    objective: Annotated[str, typer.Option("--objective", help="pairwise|pointwise|none")] = "pairwise",
    alpha: float = 0.5,
    pairs: Annotated[str, typer.Option("--pairs", help="intra|inter (control)")] = "intra",
    pair_budget: int = 16,
    gold_fraction: Annotated[float, typer.Option("--gold-fraction")] = 1.0,
    backbone: Annotated[str, typer.Option("--backbone", help="minilm|todbert|HF id|path")] = "minilm",
    source: Source = "jsonl",
    val: Annotated[Path | None, typer.Option("--val", help="validation JSONL (default: corpus validation "
                                             "split, or 10% of --data)")] = None,
    pretrain_steps: int = 300,
    finetune_epochs: int = 5,
    batch_size: int = 32,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="cap on finetuning steps")] = None,
    max_dialogues: Annotated[int | None, typer.Option("--max-dialogues")] = None,
    encoder: Annotated[str, typer.Option("--encoder", help="streaming (turn-causal spans, one pass per span) | "
                                         "flat (one window per turn)")] = "streaming",
    max_tokens: Annotated[int, typer.Option(help="flat: window length in tokens")] = 128,
    max_turns: Annotated[int, typer.Option(help="flat: turns per window")] = 12,
    max_context_tokens: Annotated[int, typer.Option(help="streaming: tokens per context span")] = 512,
    reanchor_tokens: Annotated[int | None, typer.Option(help="streaming: context kept when a span re-anchors "
                                                        "(default: half the span)")] = None,
    token_budget: Annotated[int, typer.Option(help="streaming: padded tokens per batch")] = 2048,
    pretrain_epochs: Annotated[int | None, typer.Option(help="streaming: pretrain for whole epochs "
                                                        "(overrides --pretrain-steps)")] = None,
    lr: Annotated[float, typer.Option("--lr", help="finetuning encoder learning rate")] = 3e-5,
    precision: Annotated[str, typer.Option("--precision", help="auto|fp32|bf16")] = "auto",
    save_every: Annotated[int, typer.Option(help="steps between saves of the resumable state")] = 50,
    seed: int = 0,
) -> None:
    """Pretrain on teacher scores (if given), then finetune on a fraction of gold dialogues.

    Runs unchanged under ``torchrun --nproc-per-node N`` (PyTorch DDP, one shard of the dialogues per rank)."""
    from cli.train import run_train

    result = run_train(data=data, out=out, tasks_path=tasks, task_names=task, scores=scores, objective=objective,
                       alpha=alpha, pair_mode=pairs, pair_budget=pair_budget, gold_fraction=gold_fraction,
                       backbone=backbone, source=source, val=val, pretrain_steps=pretrain_steps,
                       finetune_epochs=finetune_epochs, batch_size=batch_size, max_steps=max_steps,
                       max_dialogues=max_dialogues, max_tokens=max_tokens, max_turns=max_turns, lr=lr,
                       precision=precision, seed=seed, encoder=encoder, max_context_tokens=max_context_tokens,
                       reanchor_tokens=reanchor_tokens, token_budget=token_budget, pretrain_epochs=pretrain_epochs,
                       save_every=save_every)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        typer.echo(json.dumps(result, indent=2))


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="checkpoint or bundle directory")],
    data: Annotated[Path, typer.Option("--data")],
    out: Annotated[Path | None, typer.Option("--out")] = None,
    source: Source = "jsonl",
    split: Split = None,
    max_dialogues: int | None = None,
    task: Annotated[list[str] | None, typer.Option("--task")] = None,
) -> None:
    """Accuracy and macro-F1 per task, confusion matrices, JSON report."""
    from cli.train import print_report
    from trainer.data import load_source
    from trainer.evaluate import evaluate_path, write_report

    report = evaluate_path(model, load_source(source, data, split or ("test" if source != "jsonl" else None),
                                              max_dialogues=max_dialogues), tasks=task)
    if out:
        write_report(report, out)
    print_report(report)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option("--checkpoint")],
    out: Annotated[Path, typer.Option("--out")],
    variants: Annotated[str, typer.Option("--variants", help="comma-separated: fp32,int8,fp16")] = "fp32,int8",
    name: str | None = None,
    version: str | None = None,
    probe_data: Annotated[Path | None, typer.Option("--probe-data")] = None,
) -> None:
    """Checkpoint -> verified ONNX model bundle."""
    from export.cli import run_export

    path = run_export(checkpoint, out, [v.strip() for v in variants.split(",") if v.strip()], name=name,
                      version=version, probe_data=probe_data)
    typer.echo(str(path))


@app.command()
def serve(
    bundle: Annotated[Path | None, typer.Option("--bundle", help="model bundle (or TURNWISE_BUNDLE)")] = None,
    host: Annotated[str | None, typer.Option(help="default: TURNWISE_HOST, else 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default: TURNWISE_PORT, else 8080")] = None,
) -> None:
    """Serve a bundle over REST and WebSocket (settings from TURNWISE_* env vars)."""
    from service.cli import run_serve

    run_serve(bundle, host, port)


@app.command()
def replay(
    url: Annotated[str, typer.Option("--url")],
    data: Annotated[Path, typer.Option("--data")],
    ws: Annotated[bool, typer.Option("--ws/--rest")] = True,
    rate: Annotated[float, typer.Option("--rate", help="turns/s per dialogue (0 = as fast as possible)")] = 0.0,
    max_dialogues: int | None = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="TURNWISE_API_KEY")] = None,
    source: Source = "jsonl",
    split: Split = None,
) -> None:
    """Stream dialogues into a running service and print per-turn labels and latency.

    Exits 1 when any turn was answered with an error (or not at all), so scripts can rely on it."""
    from cli.replay import run_replay

    summary = run_replay(url, data, ws, rate, max_dialogues, api_key, source=source, split=split)
    if summary["errors"]:
        raise typer.Exit(1)


@app.command()
def sidecar(
    once: Annotated[bool, typer.Option("--once", help="one cycle, print its JSON report, exit")] = False,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="served bundle symlink (or TURNWISE_BUNDLE)")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="ledger + checkpoints "
                                                   "(default <bundle root>/.sidecar)")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="checkpoint of the seed bundle")] = None,
    heldout: Annotated[Path | None, typer.Option("--heldout", help="held-out gold dialogues JSONL")] = None,
    min_new_labels: Annotated[int | None, typer.Option("--min-new-labels")] = None,
) -> None:
    """Training sidecar: feedback stream -> finetune -> publish a new bundle version if not worse.

    Settings from TURNWISE_REDIS_URL, TURNWISE_KEY_PREFIX, TURNWISE_BUNDLE and TURNWISE_SIDECAR_*."""
    from sidecar.cli import run_sidecar

    raise typer.Exit(run_sidecar(once=once, bundle=bundle, state_dir=state_dir, checkpoint=checkpoint,
                                 heldout=heldout, min_new_labels=min_new_labels))


def main() -> None:
    try:
        app()
    except TurnwiseError as err:
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)




@experiment_app.command("render")
def experiment_render(results: Annotated[list[Path], typer.Argument(help="table1-*.json files")]) -> None:
    """Rewrite the Markdown table and PNG of finished Table 1 runs from their JSON (no training)."""
    from trainer.experiment import render_outputs

    for path in results:
        typer.echo(render_outputs(path))


@experiment_app.command("table1")
def experiment_table1(
    out: Annotated[Path, typer.Option("--out")] = Path("benchmarks/results"),
    dataset: Annotated[str, typer.Option("--dataset", help="dailydialog|meld|jsonl")] = "dailydialog",
    task: Annotated[str, typer.Option("--task")] = "act",
    teacher: Annotated[str, typer.Option("--teacher", help="simulated|zeroshot")] = "simulated",
    preset: Annotated[str, typer.Option("--preset", help="cpu (2-core scale) | full (whole splits, for a GPU); "
                                        "the options below override it")] = "cpu",
    data: Annotated[Path | None, typer.Option("--data", help="corpus folder or JSONL (default: shared data)")] = None,
    tasks: Annotated[Path | None, typer.Option("--tasks", help="task schema (for --dataset jsonl)")] = None,
    gold_fractions: Annotated[str, typer.Option("--gold-fractions")] = "0.01,0.05,0.10,0.25",
    seeds: Annotated[str, typer.Option("--seeds")] = "0,1,2",
    methods: Annotated[str, typer.Option("--methods")] = "finetune_only,pointwise,pairwise",
    ablations: Annotated[bool, typer.Option("--ablations/--no-ablations")] = True,
    train_dialogues: Annotated[int | None, typer.Option(help="training dialogues (0 = all)")] = None,
    val_dialogues: Annotated[int | None, typer.Option(help="validation dialogues for early stopping (0 = all)")] = None,
    test_dialogues: Annotated[int | None, typer.Option(help="test dialogues (0 = all)")] = None,
    pretrain_steps: int | None = None,
    pretrain_segments: Annotated[int | None, typer.Option(help="segments per dialogue in a pretraining batch")] = None,
    max_finetune_steps: int | None = None,
    pretrain_head_lr: Annotated[float | None, typer.Option(help="heads' learning rate while pretraining "
                                                          "(default: the encoder's)")] = None,
    backbone: str | None = None,
    encoder: Annotated[str | None, typer.Option("--encoder", help="streaming|flat (default: the preset's)")] = None,
    max_tokens: int | None = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA when available) | cpu | cuda[:N]")] = None,
    noise: Annotated[str | None, typer.Option("--noise", help="simulated teacher noise as JSON")] = None,
) -> None:
    """The paper's Table 1 (finetune-only vs pointwise vs pairwise) with alpha and pair-mode ablations."""
    from trainer.data import resolve_schema
    from trainer.experiment import markdown, preset_config, run_table1

    cfg = preset_config(preset, dataset=dataset, task=task, teacher=teacher,
                        gold_fractions=[float(x) for x in gold_fractions.split(",")],
                        seeds=[int(x) for x in seeds.split(",")], methods=[m.strip() for m in methods.split(",")],
                        ablations=ablations, train_dialogues=train_dialogues,
                        val_dialogues=val_dialogues, test_dialogues=test_dialogues,
                        pretrain_steps=pretrain_steps, pretrain_segments=pretrain_segments,
                        max_finetune_steps=max_finetune_steps, pretrain_head_lr=pretrain_head_lr, backbone=backbone,
                        max_tokens=max_tokens, encoder=encoder,
                        device=device, noise=json.loads(noise) if noise else None)
    result = run_table1(cfg, out, data=data, schema=resolve_schema(tasks, dataset) if tasks else None)
    typer.echo(markdown(result))
