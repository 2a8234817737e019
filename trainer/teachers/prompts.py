"""The prompt bank: per-task prompt templates and label descriptions (data files), and their rendering.

A bank is a folder of YAML files (default: ``trainer/prompts/``), one per task and label set::

    task: act
    labels: [inform, question, directive, commissive]
    description: "..."
    label_descriptions: {inform: ["definition", "paraphrase", ...], ...}
    prompts:
      - {id: act.choice.v1, style: choice, unit: turn, max_tokens: 4, system: "...", user: "..."}

Templates are plain text with ``$name`` placeholders (:class:`string.Template`; ``$$`` is a dollar
sign), so JSON examples need no escaping. A task of a schema finds its file by name and label list:
``emotion`` of DailyDialog and ``emotion`` of MELD are two files.

Styles (the answers each asks for are read by :mod:`trainer.teachers.parsers`):

- ``choice`` (unit ``turn``): lettered options; the answer is a letter (or, failing that, exactly one
  label name). Multilabel: letters separated by commas, or ``NONE``.
- ``label_json`` (unit ``turn``): ``{"reason": "...", "label": "<label>"}`` (multilabel: a list).
- ``lines_json`` (unit ``dialogue``): the whole dialogue with numbered lines; the answer maps labels
  to lists of line numbers.

Windows: a turn prompt sees the window that the student sees (``turnwise.window.segments``), one
``[usr]``/``[sys]``-tagged turn per line (``turnwise.window.turn_string``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from turnwise.errors import DataError
from turnwise.jsonl import validation_message
from turnwise.tasks import Task, TaskType
from turnwise.window import WindowConfig, turn_string, windows_of

DEFAULT_BANK = Path(__file__).resolve().parents[1] / "prompts"
STYLES = ("choice", "label_json", "lines_json")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
NO_CONTEXT = "(start of the conversation)"


class PromptTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    style: Literal["choice", "label_json", "lines_json"]
    unit: Literal["turn", "dialogue"]
    system: str = ""
    user: str = Field(min_length=1)
    max_tokens: int = Field(default=64, ge=1)
    default_label: str | None = None

    @model_validator(mode="after")
    def _check(self) -> PromptTemplate:
        expected = "dialogue" if self.style == "lines_json" else "turn"
        if self.unit != expected:
            raise ValueError(f"style {self.style} works on unit '{expected}', not '{self.unit}'")
        return self


class TaskPrompts(BaseModel):
    """One bank file: the prompts and label descriptions of one task."""

    model_config = ConfigDict(extra="forbid")

    task: str
    labels: list[str] = Field(min_length=2)
    description: str = ""
    label_descriptions: dict[str, list[str]]
    prompts: list[PromptTemplate] = Field(min_length=1)
    path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskPrompts:
        if set(self.label_descriptions) != set(self.labels):
            raise ValueError(f"label_descriptions must cover exactly the labels {self.labels}")
        for lab, descs in self.label_descriptions.items():
            if not descs or not all(isinstance(d, str) and d.strip() for d in descs):
                raise ValueError(f"label '{lab}' needs at least one non-empty description")
        ids = [p.id for p in self.prompts]
        if len(set(ids)) != len(ids):
            raise ValueError("prompt ids must be unique")
        for p in self.prompts:
            if p.style == "choice" and len(self.labels) > len(LETTERS):
                raise ValueError(f"prompt {p.id}: a lettered choice prompt takes at most {len(LETTERS)} labels")
            if p.default_label is not None and p.default_label not in self.labels:
                raise ValueError(f"prompt {p.id}: default_label '{p.default_label}' is not a label")
            for text in (p.system, p.user):
                try:
                    Template(text).substitute(_dummy_vars())
                except (KeyError, ValueError) as err:
                    raise ValueError(f"prompt {p.id}: bad placeholder {err}") from None
        return self

    def definition(self, label: str) -> str:
        return self.label_descriptions[label][0]

    def prompt_ids(self) -> list[str]:
        return [p.id for p in self.prompts]


def _dummy_vars() -> dict[str, str]:
    keys = ("task_description", "label_list", "options", "definitions", "context", "utterance", "lines",
            "n_lines", "json_keys")
    return dict.fromkeys(keys, "x")


class PromptBank:
    """All bank files of a folder, looked up by task name and label list."""

    def __init__(self, entries: Sequence[TaskPrompts], root: Path | None = None, fallback: bool = True):
        self.entries = list(entries)
        self.root = root
        self.fallback = fallback  # tasks without a file get generic_prompts(); False = refuse them

    @classmethod
    def load(cls, root: str | Path | None = None, fallback: bool = True) -> PromptBank:
        folder = Path(root) if root is not None else DEFAULT_BANK
        if not folder.is_dir():
            raise DataError("prompt bank folder not found", path=str(folder))
        entries = []
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            try:
                raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                raise DataError(f"invalid YAML: {err}", path=str(path)) from None
            if not isinstance(raw, dict):
                raise DataError("a prompt bank file holds one mapping", path=str(path))
            try:
                entries.append(TaskPrompts.model_validate({**raw, "path": str(path)}))
            except ValidationError as err:
                raise DataError(validation_message(err), path=str(path)) from None
        if not entries:
            raise DataError("no prompt files (*.yaml) in the prompt bank", path=str(folder))
        return cls(entries, folder, fallback=fallback)

    def for_task(self, name: str, task: Task) -> TaskPrompts:
        """The entry with this task name and exactly these labels (in any order); else the only entry with
        these labels; else generic prompts built from the task's labels (a DataError listing what the bank has
        when ``fallback`` is off)."""
        same = [e for e in self.entries if set(e.labels) == set(task.labels)]
        named = [e for e in same if e.task == name]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise DataError(f"prompt bank has {len(named)} files for task '{name}' with labels {task.labels}")
        if len(same) == 1:
            return same[0]
        if self.fallback:
            return generic_prompts(name, task)
        have = ", ".join(f"{e.task} {e.labels}" for e in self.entries)
        raise DataError(f"no prompts for task '{name}' with labels {task.labels} in {self.root} (bank has: {have})")


# Prompts for a task without a bank file (e.g. MultiWOZ/SGD/MultiDoGO intents and slots): the same three
# styles, worded for any label set, with definitions made from the label names. A task-specific file with
# real definitions labels better; these make every task of every adapter labelable by an LLM.
_GENERIC_SYSTEM = "You annotate utterances of task-oriented conversations. You reply with JSON only."
_GENERIC_MULTI = "every label that applies (an empty list if none)"


def _label_words(label: str) -> str:
    words = re.sub(r"[_\-.:/]+", " ", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)).strip().lower()
    return words or label


def generic_prompts(name: str, task: Task) -> TaskPrompts:
    """Label-json, whole-dialogue and (up to 26 labels) multiple-choice prompts for any task."""
    multi = task.type is TaskType.multilabel
    what = (task.description or "").strip() or f"the {_label_words(name)} of an utterance"
    answer = f'{{"labels": [{_GENERIC_MULTI}]}}' if multi else '{"label": "<one of $label_list>"}'
    lines_rule = ("List each line number under every label that applies to it (a line may have several or none)."
                  if multi else "Put every line number from 1 to $n_lines under exactly one label.")
    prompts = [
        {"id": f"{name}.generic.label_json.v1", "style": "label_json", "unit": "turn", "max_tokens": 120,
         "system": _GENERIC_SYSTEM,
         "user": "Task: $task_description\n\nLabels:\n$definitions\n\nEarlier in the conversation:\n$context\n\n"
                 f"Utterance to label:\n$utterance\n\nReply as {answer}."},
        {"id": f"{name}.generic.lines_json.v1", "style": "lines_json", "unit": "dialogue", "max_tokens": 600,
         "system": _GENERIC_SYSTEM,
         "user": "Task: $task_description\n\nA whole conversation, one numbered line per utterance ([usr] and [sys] "
                 "mark the two speakers):\n\n$lines\n\nLabels:\n$definitions\n\n"
                 f"{lines_rule} Reply with a JSON object with the keys $json_keys whose values are lists of "
                 "line numbers."},
    ]
    if len(task.labels) <= len(LETTERS):
        prompts.append(
            {"id": f"{name}.generic.choice.v1", "style": "choice", "unit": "turn", "max_tokens": 24,
             "system": "You label utterances of conversations. You answer with letters only.",
             "user": "Conversation so far:\n$context\n\nUtterance:\n$utterance\n\nTask: $task_description\n"
                     "$options\n\n" + ("Answer with the letters of all options that apply, separated by commas, "
                                         "or NONE." if multi else "Answer with the letter of the best option only.")})
    else:  # too many labels for lettered options: a second, differently worded label prompt
        prompts.append(
            {"id": f"{name}.generic.label_json_reasoned.v1", "style": "label_json", "unit": "turn",
             "max_tokens": 160, "system": _GENERIC_SYSTEM,
             "user": "Earlier in the conversation:\n$context\n\nNew utterance:\n$utterance\n\n"
                     "Possible labels: $label_list\n\nTask: $task_description. First say in a few words what the "
                     'speaker wants, then decide. Reply as {"reason": "<short>", '
                     + (f'"labels": [{_GENERIC_MULTI}]}}.' if multi else '"label": "<one of the labels>"}.')})
    return TaskPrompts(
        task=name, labels=list(task.labels), description=what, prompts=prompts, path=None,
        label_descriptions={lab: [f"The utterance is about '{_label_words(lab)}'.", _label_words(lab)]
                            for lab in task.labels})


# --------------------------------------------------------------------------------------------------
# Rendering


def _common_vars(tp: TaskPrompts, prompt: PromptTemplate) -> dict[str, str]:
    keys = [lab for lab in tp.labels if lab != prompt.default_label]
    return {
        "task_description": tp.description.strip(),
        "label_list": ", ".join(tp.labels),
        "options": "\n".join(f"{LETTERS[i]}) {lab}: {tp.definition(lab)}"
                             for i, lab in enumerate(tp.labels[: len(LETTERS)])),  # choice: <= 26 (validated)
        "definitions": "\n".join(f"- {lab}: {tp.definition(lab)}" for lab in tp.labels),
        "json_keys": ", ".join(f'"{k}"' for k in keys),
    }


def render_turn(tp: TaskPrompts, prompt: PromptTemplate, turns: Sequence[Any], index: int,
                window: WindowConfig) -> list[dict[str, str]]:
    """Chat messages asking about turn ``index`` given its window (the turns the student sees)."""
    seg = windows_of(turns[: index + 1], window)[index]
    context = "\n".join(turn_string(t) for t in seg[:-1]) or NO_CONTEXT
    values = {**_common_vars(tp, prompt), "context": context, "utterance": turn_string(seg[-1]),
              "lines": "", "n_lines": "0"}
    return _messages(prompt, values)


def render_dialogue(tp: TaskPrompts, prompt: PromptTemplate, turns: Sequence[Any]) -> list[dict[str, str]]:
    """Chat messages showing the whole dialogue as numbered lines (``lines_json``)."""
    lines = "\n".join(f"{i + 1}. {turn_string(t)}" for i, t in enumerate(turns))
    values = {**_common_vars(tp, prompt), "context": "", "utterance": "", "lines": lines,
              "n_lines": str(len(turns))}
    return _messages(prompt, values)


def _messages(prompt: PromptTemplate, values: dict[str, str]) -> list[dict[str, str]]:
    msgs = []
    if prompt.system.strip():
        msgs.append({"role": "system", "content": Template(prompt.system).substitute(values).strip()})
    msgs.append({"role": "user", "content": Template(prompt.user).substitute(values).strip()})
    return msgs
