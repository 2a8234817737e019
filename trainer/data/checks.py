"""Checks of a task schema against the data a command is about to spend time on."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.tasks import TaskSchema


def gold_tasks(dialogues: Sequence[Dialogue]) -> set[str]:
    """Every task name some turn of ``dialogues`` has a gold label for."""
    return {name for d in dialogues for t in d.turns for name in t.labels}


def check_task_coverage(schema: TaskSchema, dialogues: Sequence[Dialogue], *, teacher_tasks: Iterable[str] = (),
                        allow_unlabelled: bool = False, allow_no_gold: bool = False) -> list[str]:
    """Tasks of ``schema`` that no dialogue has a gold label (nor, in ``teacher_tasks``, teacher scores) for.

    Usually a misspelt task name in the YAML: an error naming the task and the closest name the data
    has. With ``allow_unlabelled`` the same text comes back as a warning instead. ``allow_no_gold``:
    data without any gold label at all is fine (a teacher labelling raw transcripts).
    """
    gold = gold_tasks(dialogues)
    if allow_no_gold and not gold:
        return []
    teacher = set(teacher_tasks)
    missing = [n for n in schema.names() if n not in gold and n not in teacher]
    if not missing:
        return []
    known = sorted(gold | teacher)
    named = []
    for name in missing:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        named.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    what = "a gold label or teacher scores" if teacher else "a gold label"
    message = (f"no dialogue has {what} for task {', '.join(named)} of the task schema "
               f"(the data has {', '.join(known) if known else 'no labels at all'})")
    if allow_unlabelled:
        return [message]
    raise DataError(message + "; fix the schema, or pass --allow-unlabelled to go on without it")
