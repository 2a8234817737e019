"""Corpus statistics: counts of dialogues, turns and gold labels per task, and a rich table of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.table import Table

from turnwise.dialogue import Dialogue
from turnwise.tasks import TaskSchema, TaskType

NO_LABEL = "(none)"  # a labelled multilabel turn whose label list is empty


def _infer_types(dialogues: list[Dialogue]) -> dict[str, str]:
    """Task -> type for data without a schema: a list value means multilabel, else multiclass."""
    types: dict[str, str] = {}
    for d in dialogues:
        for t in d.turns:
            for task, value in t.labels.items():
                if isinstance(value, list):
                    types[task] = TaskType.multilabel.value
                else:
                    types.setdefault(task, TaskType.multiclass.value)
    return types


def dataset_stats(dialogues: Iterable[Dialogue], schema: TaskSchema | None = None) -> dict[str, Any]:
    """Counts for one set of dialogues, as a JSON-ready dict::

        {"dialogues": int, "turns": int, "max_turns": int, "speakers": {speaker: turns},
         "tasks": {task: {"type", "labelled_turns", "labels": {label: count}, "unknown": {label: count}}},
         "unlisted_tasks": {task: labelled turns}}

    ``labels`` lists every schema label (zeros included) in schema order; a multilabel task counts each
    label once per turn that has it, plus ``"(none)"`` for labelled turns with an empty list. Labels the
    schema does not know go to ``unknown``; tasks it does not know to ``unlisted_tasks``. Without a
    schema, the tasks and labels found in the data are reported, labels by decreasing count.
    """
    dialogues = list(dialogues)
    if schema is not None:
        types = {name: task.type.value for name, task in schema.tasks.items()}
        known = {name: list(task.labels) for name, task in schema.tasks.items()}
    else:
        types = _infer_types(dialogues)
        known = {}
    labelled: Counter[str] = Counter()
    counts: dict[str, Counter[str]] = {task: Counter() for task in types}
    unlisted: Counter[str] = Counter()
    speakers: Counter[str] = Counter()
    n_turns = 0
    max_turns = 0
    for d in dialogues:
        n_turns += len(d.turns)
        max_turns = max(max_turns, len(d.turns))
        for t in d.turns:
            speakers[t.speaker] += 1
            for task, value in t.labels.items():
                if task not in types:
                    unlisted[task] += 1
                    continue
                labelled[task] += 1
                values = value if isinstance(value, list) else [value]
                if types[task] == TaskType.multilabel.value and not values:
                    counts[task][NO_LABEL] += 1
                counts[task].update(values)

    tasks: dict[str, Any] = {}
    for task, kind in types.items():
        c = counts[task]
        if task in known:
            labels = {lab: c.get(lab, 0) for lab in known[task]}
            unknown = {lab: n for lab, n in c.most_common() if lab not in labels and lab != NO_LABEL}
        else:
            labels = {lab: n for lab, n in c.most_common() if lab != NO_LABEL}
            unknown = {}
        if kind == TaskType.multilabel.value:
            labels[NO_LABEL] = c.get(NO_LABEL, 0)
        tasks[task] = {"type": kind, "labelled_turns": labelled[task], "labels": labels, "unknown": unknown}
    return {
        "dialogues": len(dialogues),
        "turns": n_turns,
        "max_turns": max_turns,
        "speakers": dict(speakers.most_common()),
        "tasks": tasks,
        "unlisted_tasks": dict(unlisted),
    }


def render_stats(stats: dict[str, Any], title: str | None = None, *, max_labels: int | None = 40) -> Table:
    """One rich table: a header row per task (labelled turns), then its labels with count and share.

    Shares are of the task's labelled turns. A label list longer than ``max_labels`` is shown without
    its unused labels and cut to the ``max_labels`` most frequent, with rows saying how many were left
    out; ``None`` shows all.
    """
    head = f"{stats['dialogues']:,} dialogues · {stats['turns']:,} turns"
    table = Table(title=f"{title} — {head}" if title else head, title_justify="left")
    table.add_column("task / label")
    table.add_column("type")
    table.add_column("turns", justify="right")
    table.add_column("share", justify="right")
    for name, task in stats["tasks"].items():
        n = task["labelled_turns"]
        table.add_section()
        table.add_row(f"[bold]{name}[/bold]", task["type"], f"{n:,}", f"{n / max(stats['turns'], 1):.1%}")
        items = list(task["labels"].items())
        hidden = zeros = 0
        if max_labels is not None and len(items) > max_labels:
            # long label lists (SGD and MultiDoGO slots): drop unused labels first, then the rarest
            zeros = sum(1 for _, count in items if count == 0)
            items = [kv for kv in items if kv[1] > 0]
            keep = {k for k, _ in sorted(items, key=lambda kv: -kv[1])[:max_labels]}
            hidden = len(items) - len(keep)
            items = [kv for kv in items if kv[0] in keep]
        for label, count in items:
            table.add_row(f"  {label}", "", f"{count:,}", f"{count / max(n, 1):.1%}")
        if hidden:
            table.add_row(f"  ... {hidden} more labels", "", "", "")
        if zeros:
            table.add_row(f"  ({zeros} labels with no turns)", "", "", "")
        for label, count in task["unknown"].items():
            table.add_row(
                f"  [red]{label} (not in schema)[/red]", "", f"{count:,}", f"{count / max(n, 1):.1%}"
            )
    for name, count in stats.get("unlisted_tasks", {}).items():
        table.add_section()
        table.add_row(f"[red]{name} (not in schema)[/red]", "", f"{count:,}", "")
    return table
