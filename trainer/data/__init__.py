"""Dataset adapters: the public corpora in their original formats -> turnwise :class:`Dialogue` objects.

``load_source(source, path, split)`` reads DailyDialog, MELD, MultiWOZ 2.1, SGD or MultiDoGO from the
corpus folder (or a turnwise JSONL file), ``source_tasks(source)`` gives the task schema the corpus
labels, and a :class:`LoadReport` counts what was skipped or repaired. Each adapter module's docstring
states its label mapping. ``stats`` and ``commands`` back ``turnwise data stats|convert``.
"""

from trainer.data.commands import cmd_convert, cmd_stats
from trainer.data.common import CANONICAL_SPLITS, LoadReport, default_data_root, normalise_split
from trainer.data.registry import SOURCES, load_source, resolve_schema, source_splits, source_tasks
from trainer.data.stats import dataset_stats, render_stats

__all__ = [
    "CANONICAL_SPLITS",
    "SOURCES",
    "LoadReport",
    "cmd_convert",
    "cmd_stats",
    "dataset_stats",
    "default_data_root",
    "load_source",
    "normalise_split",
    "render_stats",
    "resolve_schema",
    "source_splits",
    "source_tasks",
]
