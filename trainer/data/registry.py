"""One entry point over the corpus adapters: ``load_source``, ``source_tasks``, ``source_splits``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainer.data import dailydialog, meld, multidogo, multiwoz, sgd
from trainer.data.common import LoadReport, normalise_split
from turnwise.dialogue import Dialogue, read_jsonl
from turnwise.errors import DataError
from turnwise.tasks import TaskSchema

SOURCES = ("dailydialog", "meld", "multiwoz", "sgd", "multidogo", "jsonl")

_CORPORA = {
    "dailydialog": dailydialog,
    "meld": meld,
    "multiwoz": multiwoz,
    "sgd": sgd,
    "multidogo": multidogo,
}


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise DataError(f"unknown source '{source}' (expected one of {', '.join(SOURCES)})")
    return source


def source_tasks(source: str) -> TaskSchema:
    """The task schema a corpus provides (a fixed label list per task, independent of the split)."""
    if _check_source(source) == "jsonl":
        raise DataError("a JSONL file carries no task schema: pass --tasks TASKS.yaml")
    return _CORPORA[source].TASKS.model_copy(deep=True)


def resolve_schema(tasks: str | Path | None, source: str) -> TaskSchema:
    """The task schema a command works with: ``tasks`` (a YAML file) when given, else the corpus's own."""
    if tasks is not None:
        from turnwise.tasks import load_tasks

        return load_tasks(tasks)
    return source_tasks(source)


def source_splits(source: str, path: str | Path, *, domains: Sequence[str] | None = None) -> list[str]:
    """The canonical splits (train / validation / test) present under ``path``; ``[]`` for jsonl."""
    if _check_source(source) == "jsonl":
        return []
    if source == "multidogo":
        return multidogo.available_splits(path, domains)
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{source} folder not found", path=str(root))
    return _CORPORA[source].available_splits(root)


def load_source(
    source: str,
    path: str | Path,
    split: str | None = None,
    *,
    max_dialogues: int | None = None,
    report: LoadReport | None = None,
    domains: Sequence[str] | None = None,
) -> list[Dialogue]:
    """Read a corpus in its original format (or a turnwise JSONL file) as :class:`Dialogue` objects.

    ``path`` is the corpus folder (e.g. ``<data root>/dailydialog``); for ``jsonl`` it is the file and
    ``split`` is ignored. ``split`` is train / validation / test (``dev``, ``val`` accepted); ``None``
    loads every split present, in that order. ``max_dialogues`` keeps the first N dialogues. Defects
    that were skipped or repaired are counted in ``report``. ``domains`` selects MultiDoGO domains
    (``path`` may also be a single MultiDoGO domain folder); other sources reject it.
    """
    _check_source(source)
    if max_dialogues is not None and max_dialogues < 0:
        raise DataError(f"max_dialogues must be >= 0, got {max_dialogues}")
    if domains is not None and source != "multidogo":
        raise DataError(f"'domains' applies to multidogo only, not to {source}")
    report = report if report is not None else LoadReport()
    if source == "jsonl":
        if Path(path).is_dir():
            corpora = ", ".join(s for s in SOURCES if s != "jsonl")
            raise DataError(f"a folder, not a JSONL file: pass --source with the corpus it holds ({corpora})",
                            path=str(path))
        dialogues = read_jsonl(path)
        return dialogues if max_dialogues is None else dialogues[:max_dialogues]

    if split is None:
        splits = source_splits(source, path, domains=domains)
        if not splits:
            raise DataError(f"no {source} splits found", path=str(path))
    else:
        splits = [normalise_split(split)]
    out: list[Dialogue] = []
    for s in splits:
        left = None if max_dialogues is None else max_dialogues - len(out)
        if left is not None and left <= 0:
            break
        if source == "multidogo":
            out += multidogo.load(path, s, max_dialogues=left, report=report, domains=domains)
        else:
            out += _CORPORA[source].load(path, s, max_dialogues=left, report=report)
    return out
