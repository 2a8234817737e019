"""The work behind ``turnwise data stats`` and ``turnwise data convert`` (the typer CLI wires these)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from trainer.data.common import LoadReport, normalise_split
from trainer.data.registry import load_source, source_splits, source_tasks
from trainer.data.stats import dataset_stats, render_stats
from turnwise.dialogue import Dialogue, write_jsonl
from turnwise.errors import DataError
from turnwise.tasks import TaskSchema, load_tasks, save_tasks


def tasks_path_for(out: str | Path) -> Path:
    """Where ``cmd_convert`` puts the task schema: ``dd.jsonl`` -> ``dd.tasks.yaml`` (same folder)."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix == ".jsonl" else out
    return base.with_name(base.name + ".tasks.yaml")


def _schema(source: str, tasks: str | Path | None) -> TaskSchema | None:
    if tasks is not None:
        return load_tasks(tasks)
    return None if source == "jsonl" else source_tasks(source)


def _load(
    source: str, path: str | Path, split: str | None, console: Console, **kwargs: Any
) -> list[Dialogue]:
    label = f"{source} {split}" if split else source
    with console.status(f"reading {label} from {path} ..."):
        return load_source(source, path, split, **kwargs)


def cmd_stats(
    source: str,
    path: str | Path,
    split: str | None = None,
    *,
    tasks: str | Path | None = None,
    domains: Sequence[str] | None = None,
    console: Console | None = None,
) -> dict[str, dict[str, Any]]:
    """Print a statistics table and the load report for ``split``, or for every split present.

    ``tasks`` (a task YAML) replaces the corpus schema; for ``jsonl`` without it the tasks and labels
    found in the file are shown. Returns ``{split: dataset_stats(...)}`` (key ``"all"`` for jsonl).
    """
    console = console or Console()
    schema = _schema(source, tasks)
    kwargs: dict[str, Any] = {"domains": domains} if domains else {}
    if source == "jsonl":
        splits: list[str | None] = [None]
    elif split is not None:
        splits = [normalise_split(split)]
    else:
        splits = list(source_splits(source, path, domains=domains))
        if not splits:
            raise DataError(f"no {source} splits found", path=str(path))
    result: dict[str, dict[str, Any]] = {}
    for s in splits:
        report = LoadReport()
        dialogues = _load(source, path, s, console, report=report, **kwargs)
        stats = dataset_stats(dialogues, schema)
        key = s or "all"
        result[key] = stats
        console.print(render_stats(stats, title=f"{source} {key}"))
        console.print(f"[dim]load report ({source} {key}):[/dim] {report.summary()}")
        console.print()
    return result


def _check_labels(dialogues: list[Dialogue], schema: TaskSchema) -> None:
    for d in dialogues:
        for i, turn in enumerate(d.turns):
            for task, value in turn.labels.items():
                try:
                    schema[task].encode(value)
                except DataError as err:
                    raise DataError(f"dialogue '{d.dialogue_id}' turn {i} task '{task}': {err}") from None


def cmd_convert(
    source: str,
    path: str | Path,
    split: str | None,
    out: str | Path,
    max_dialogues: int | None = None,
    *,
    tasks: str | Path | None = None,
    domains: Sequence[str] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Write ``split`` of a corpus (every split when ``None``) as turnwise JSONL to ``out`` and its task
    schema next to it (:func:`tasks_path_for`). Labels are checked against the schema first.

    ``tasks`` replaces the corpus schema (required for ``jsonl``). Prints counts and the load report;
    returns ``{"dialogues", "turns", "out", "tasks", "report"}``.
    """
    console = console or Console()
    schema = load_tasks(tasks) if tasks is not None else source_tasks(source)
    report = LoadReport()
    kwargs: dict[str, Any] = {"domains": domains} if domains else {}
    dialogues = _load(source, path, split, console, max_dialogues=max_dialogues, report=report, **kwargs)
    _check_labels(dialogues, schema)
    n = write_jsonl(dialogues, out)
    tasks_out = tasks_path_for(out)
    save_tasks(schema, tasks_out)
    n_turns = sum(len(d.turns) for d in dialogues)
    console.print(f"wrote {n:,} dialogues ({n_turns:,} turns) to {out}")
    console.print(f"wrote task schema ({', '.join(schema.names())}) to {tasks_out}")
    console.print(f"load report: {report.summary()}")
    return {"dialogues": n, "turns": n_turns, "out": Path(out), "tasks": tasks_out, "report": report}
