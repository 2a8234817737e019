"""The task schema, shipped with every model.

```yaml
tasks:
  intent:    {type: binary,     labels: [no_intent, has_intent]}
  act:       {type: multiclass, labels: [inform, question, directive, commissive]}
  slots:     {type: multilabel, labels: [date, city]}
  route:     {type: hierarchical, levels: [domain, intent],
              labels: [airline/bookflight, airline/getboardingpass, bank/checkbalance]}
```

Every task is also seen as C one-vs-rest binary problems for teacher scores and the pairwise loss.
A binary task has exactly two labels; its model head has one logit per label like a multiclass head
(softmax over two), which keeps export and serving uniform.

A hierarchical task's labels are paths in a taxonomy (``domain/intent``, 2 or 3 levels, every path
of the same depth); ``levels`` optionally names the levels. Its nodes are the distinct path prefixes
of each level (``airline``, then ``airline/bookflight``): a child is known by its full prefix, so the
same name under two parents is two nodes. The model gives one logit per node of every level, level
after level, so ``num_labels`` (the width of the task's logits) is the number of nodes; the decode
picks a consistent path by beam search (:mod:`turnwise.scoring`).
"""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from turnwise.errors import DataError
from turnwise.jsonl import validation_message


class TaskType(str, Enum):
    binary = "binary"
    multiclass = "multiclass"
    multilabel = "multilabel"
    hierarchical = "hierarchical"


PATH_SEP = "/"
MAX_LEVELS = 3


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: TaskType
    labels: list[str] = Field(min_length=1)
    levels: list[str] | None = None  # hierarchical only: the names of the levels, root first
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Task:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.type is TaskType.binary and len(self.labels) != 2:
            raise ValueError("a binary task has exactly two labels: [negative, positive]")
        if self.type is TaskType.multiclass and len(self.labels) < 2:
            raise ValueError("a multiclass task needs at least two labels")
        if self.type is TaskType.hierarchical:
            _check_paths(self.labels, self.levels)
        elif self.levels is not None:
            raise ValueError(f"'levels' is for hierarchical tasks only, this task is {self.type.value}")
        return self

    @property
    def num_labels(self) -> int:
        """Width of the task's logits: the labels, or for a hierarchical task the nodes of every level."""
        if self.type is TaskType.hierarchical:
            return sum(len(n) for n in self.level_nodes())
        return len(self.labels)

    @property
    def depth(self) -> int:
        return len(self.labels[0].split(PATH_SEP)) if self.type is TaskType.hierarchical else 1

    def level_names(self) -> list[str]:
        return list(self.levels) if self.levels else [f"level{i + 1}" for i in range(self.depth)]

    def level_nodes(self) -> list[list[str]]:
        """Per level, its nodes (path prefixes) in order of first appearance in ``labels``."""
        return [list(n) for n in _level_nodes(tuple(self.labels))]

    def path_nodes(self, label: str) -> list[int]:
        """A path label -> the index of its node within each level."""
        parts = self.labels[self.index(label)].split(PATH_SEP)
        nodes = self.level_nodes()
        return [nodes[lv].index(PATH_SEP.join(parts[: lv + 1])) for lv in range(len(parts))]

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise DataError(f"unknown label '{label}' (expected one of {self.labels})") from None

    def encode(self, value: str | list[str]) -> list[float]:
        """Gold label -> target vector over ``labels`` (one-hot, or multi-hot for multilabel; one-hot over
        the paths for a hierarchical task)."""
        target = [0.0] * len(self.labels)
        if self.type is TaskType.multilabel:
            values = [value] if isinstance(value, str) else list(value)
            for v in values:
                target[self.index(v)] = 1.0
        else:
            if not isinstance(value, str):
                raise DataError(f"task of type {self.type.value} takes one label, got {value!r}")
            target[self.index(value)] = 1.0
        return target


def _check_paths(labels: list[str], levels: list[str] | None) -> None:
    depths = set()
    for label in labels:
        parts = label.split(PATH_SEP)
        if any(not p.strip() or p != p.strip() for p in parts):
            raise ValueError(f"hierarchical label {label!r} is not a path of non-empty names joined by "
                             f"'{PATH_SEP}' (e.g. 'domain{PATH_SEP}intent')")
        if len(parts) > MAX_LEVELS:
            raise ValueError(f"hierarchical label {label!r} has {len(parts)} levels; at most {MAX_LEVELS}")
        depths.add(len(parts))
    if depths == {1}:
        raise ValueError(f"a hierarchical task needs paths of 2 or {MAX_LEVELS} levels joined by '{PATH_SEP}' "
                         "(a single level is a multiclass task)")
    if len(depths) > 1:
        raise ValueError(f"every path of a hierarchical task has the same number of levels, found {sorted(depths)}")
    if levels is not None and len(levels) != depths.pop():
        raise ValueError(f"'levels' names {len(levels)} levels, the paths have {len(labels[0].split(PATH_SEP))}")
    if levels is not None and len(set(levels)) != len(levels):
        raise ValueError("level names must be unique")


@functools.lru_cache(maxsize=64)
def _level_nodes(labels: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    depth = len(labels[0].split(PATH_SEP))
    nodes: list[dict[str, None]] = [{} for _ in range(depth)]
    for label in labels:
        parts = label.split(PATH_SEP)
        for lv in range(depth):
            nodes[lv].setdefault(PATH_SEP.join(parts[: lv + 1]), None)
    return tuple(tuple(n) for n in nodes)


class TaskSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: dict[str, Task] = Field(min_length=1)

    def __getitem__(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise DataError(f"unknown task '{name}' (schema has {sorted(self.tasks)})") from None

    def names(self) -> list[str]:
        return list(self.tasks)

    def select(self, names: list[str] | None) -> TaskSchema:
        if not names:
            return self
        return TaskSchema(tasks={n: self[n] for n in names})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def load_tasks(path: str | Path) -> TaskSchema:
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", path=str(p))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DataError(f"invalid YAML: {err}", path=str(p)) from None
    return parse_tasks(raw, path=str(p))


def parse_tasks(raw: Any, *, path: str | None = None) -> TaskSchema:
    try:
        return TaskSchema.model_validate(raw)
    except ValidationError as err:
        msg = validation_message(err)
        raise DataError(msg, path=path) from None


def save_tasks(schema: TaskSchema, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(schema.to_dict(), sort_keys=False), encoding="utf-8")
