"""``turnwise generate``: Chain-of-Intent dialogue generation (see docs/generation.md)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.options import MaxDialogues, Source, SourceOpt, above_zero
from turnwise.jsonl import dumps_json

console = Console(stderr=True)


class Emission(str, Enum):
    llm = "llm"
    sample = "sample"


def generate_command(
    data: Annotated[Path, typer.Option("--from", help="labelled dialogues: a JSONL file, or a corpus folder with "
                                       "--source")],
    task: Annotated[str, typer.Option("--task", help="the task whose labels are the intents (binary or "
                                      "multiclass)")],
    out: Annotated[Path, typer.Option("--out", help="generated dialogues JSONL to write (the chain and a summary "
                                      "go beside it)")],
    dialogues: Annotated[int, typer.Option("--dialogues", min=1, help="dialogues to generate (N)")] = 100,
    emission: Annotated[Emission, typer.Option("--emission", help="llm: utterances from an OpenAI-compatible "
                                               "endpoint; sample: utterances drawn from the data (no endpoint)",
                                               case_sensitive=False)] = Emission.llm,
    source: SourceOpt = Source.jsonl,
    split: Annotated[str | None, typer.Option("--split", help="corpus split to estimate from (default: "
                                              "train)")] = None,
    max_dialogues: MaxDialogues = None,
    smoothing: Annotated[float, typer.Option("--smoothing", min=0, help="add-alpha smoothing of the initial "
                                             "and transition counts")] = 0.1,
    max_turns: Annotated[int | None, typer.Option("--max-turns", min=1, help="cap on a chain's turns")] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="llm: base URL of the chat-completions API "
                                                 "(e.g. http://localhost:8000/v1)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="llm: the model writing user and agent "
                                              "turns")] = None,
    second_model: Annotated[str | None, typer.Option("--second-model", help="llm: a second model answering the "
                                                     "last turn (gives ranked pairs)")] = None,
    second_endpoint: Annotated[str | None, typer.Option("--second-endpoint", help="its endpoint (default: "
                                                        "--endpoint)")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="the model rating both answers 1-10 "
                                                    "(default: --model)")] = None,
    judge_endpoint: Annotated[str | None, typer.Option("--judge-endpoint", help="its endpoint (default: "
                                                       "--endpoint)")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="generation prompt file (default: the "
                                                 "built-in one)")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="llm: response cache (default "
                                               "<out>.cache.sqlite)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="llm: requests in flight")] = 4,
    rate: Annotated[float | None, typer.Option("--rate", callback=above_zero,
                                               help="llm: max requests per second")] = None,
    temperature: Annotated[float, typer.Option(callback=above_zero, help="llm: sampling temperature")] = 0.9,
    top_p: Annotated[float, typer.Option(max=1, callback=above_zero, help="llm: nucleus")] = 0.95,
    price_table: Annotated[Path | None, typer.Option("--price-table", help="llm: YAML/JSON of USD per 1M "
                                                     "tokens per model")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="estimate calls and cost, spend nothing, write "
                                       "nothing")] = False,
    seed: Annotated[int, typer.Option("--seed", help="random seed (chains, examples, request seeds)")] = 0,
) -> None:
    """Chain-of-Intent: estimate an intent Markov chain from labelled dialogues, sample intent chains and
    write a dialogue for each (utterances from an LLM, or drawn from the data)."""
    from trainer.data import load_source
    from trainer.generate.run import LLMOptions, run_generate

    src = load_source(source.value, data, split or ("train" if source != Source.jsonl else None),
                      max_dialogues=max_dialogues)
    llm = LLMOptions(model=model, endpoint=endpoint, second_model=second_model, second_endpoint=second_endpoint,
                     judge_model=judge_model, judge_endpoint=judge_endpoint, prompts=prompts, cache=cache,
                     concurrency=concurrency, rate=rate, temperature=temperature, top_p=top_p,
                     price_table=price_table)
    summary = run_generate(src, task, out, dialogues, emission=emission.value, seed=seed, smoothing=smoothing,
                           max_turns=max_turns, llm=llm, plan=plan)
    table = Table(title="turnwise generate" + (" --plan (nothing was sent)" if plan else ""), show_header=False)
    for key in ("emission", "task", "source_dialogues", "states", "dialogues", "turns", "ranked_pairs",
                "requests_cached", "requests_to_fetch", "est_cost_usd_max", "cost_usd", "out", "wall_s"):
        if summary.get(key) is not None:
            table.add_row(key, escape(str(summary[key])))
    console.print(table)
    typer.echo(dumps_json(summary, indent=2))
