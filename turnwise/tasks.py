"""The task schema, shipped with every model.

```yaml
tasks:
  intent:    {type: binary,     labels: [no_intent, has_intent]}
  act:       {type: multiclass, labels: [inform, question, directive, commissive]}
  slots:     {type: multilabel, labels: [date, city]}
```

Every task is also seen as C one-vs-rest binary problems for teacher scores and the pairwise loss.
A binary task has exactly two labels; its model head has one logit per label like a multiclass head
(softmax over two), which keeps export and serving uniform.
"""

from __future__ import annotations

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


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: TaskType
    labels: list[str] = Field(min_length=1)
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Task:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.type is TaskType.binary and len(self.labels) != 2:
            raise ValueError("a binary task has exactly two labels: [negative, positive]")
        if self.type is TaskType.multiclass and len(self.labels) < 2:
            raise ValueError("a multiclass task needs at least two labels")
        return self

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise DataError(f"unknown label '{label}' (expected one of {self.labels})") from None

    def encode(self, value: str | list[str]) -> list[float]:
        """Gold label -> target vector of length C (one-hot, or multi-hot for multilabel)."""
        target = [0.0] * self.num_labels
        if self.type is TaskType.multilabel:
            values = [value] if isinstance(value, str) else list(value)
            for v in values:
                target[self.index(v)] = 1.0
        else:
            if not isinstance(value, str):
                raise DataError(f"task of type {self.type.value} takes one label, got {value!r}")
            target[self.index(value)] = 1.0
        return target


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
