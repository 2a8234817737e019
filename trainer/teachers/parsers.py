"""Parsers of the teachers' answers: answer text -> vote(s), one parser per prompt style.

A vote is a class index, or a bitmask for multilabel (bit c = class c); ``-1`` (:data:`ABSTAIN`)
abstains. Every parser returns an abstention, never raises, on an answer it cannot read:

- ``choice``: a letter (a lone letter may be lower case; inside a sentence only capitals count), or,
  failing that, exactly one label name. Multilabel: letters or label names separated by commas, or ``NONE``.
- ``label_json``: ``{"label": ...}`` (multilabel: ``{"labels": [...]}``), also out of a fenced, chatty or
  truncated answer that still holds a readable ``"label": "..."`` pair.
- ``lines_json``: labels -> lists of 1-based line numbers. A line listed under two labels of a single-label
  task abstains; an unlisted line gets ``default_label`` when the prompt names one (e.g. "lines not listed
  are neutral"), else abstains.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from trainer.teachers.prompts import LETTERS, PromptTemplate
from trainer.teachers.scores import ABSTAIN
from turnwise.tasks import TaskType

__all__ = ["ABSTAIN", "parse_choice", "parse_label_json", "parse_lines_json", "parse_turn_answer"]


def _norm(s: str) -> str:
    return re.sub(r"[\s\-]+", "_", s.strip().lower())


def _label_index(value: Any, labels: Sequence[str]) -> int | None:
    if not isinstance(value, str):
        return None
    key = _norm(value).strip("_.\"'")
    for i, lab in enumerate(labels):
        if _norm(lab) == key:
            return i
    return None


def _labels_in_text(text: str, labels: Sequence[str]) -> list[int]:
    low = " " + re.sub(r"[^a-z0-9_]+", " ", text.lower().replace("-", "_")) + " "
    found = []
    for i, lab in enumerate(labels):
        forms = {_norm(lab), _norm(lab).replace("_", " ")}
        if any(f" {f} " in low for f in forms):
            found.append(i)
    return found


# A whole answer that is one letter may be lower case ("c"); inside a sentence only capitals count ("a" is a word).
_LETTER_ONLY = re.compile(r"^[\s*`\"'(\[]*([A-Za-z])[\s*`\"')\].:]*$")
_LETTER_LEAD = re.compile(r"^[\s*`\"'(\[]*([A-Z])\s*[).:\]-]")
_LETTER_ANSWER = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is)?\s*[:=-]?\s*\(?([A-Z])\)?(?![A-Za-z])")


def parse_choice(text: str | None, labels: Sequence[str], multilabel: bool = False) -> int:
    try:
        if not text or not text.strip():
            return ABSTAIN
        c = len(labels)
        t = text.strip()
        if multilabel:
            if _norm(t).strip("._") == "none":
                return 0
            mask = 0
            for tok in re.split(r"[,;\s]+|\band\b", t):
                tok = tok.strip(" ().*`'\"")
                if not tok:
                    continue
                if len(tok) == 1 and tok.upper() in LETTERS[:c]:
                    mask |= 1 << LETTERS.index(tok.upper())
                elif (j := _label_index(tok, labels)) is not None:
                    mask |= 1 << j
                else:
                    return ABSTAIN
            return mask
        for rx in (_LETTER_ONLY, _LETTER_LEAD, _LETTER_ANSWER):
            m = rx.search(t)
            if m and m.group(1).upper() in LETTERS[:c]:
                return LETTERS.index(m.group(1).upper())
        found = _labels_in_text(t, labels)
        return found[0] if len(found) == 1 else ABSTAIN
    except Exception:  # a parser never crashes on a model's answer: it abstains
        return ABSTAIN


def _json_object(text: str) -> Any:
    t = re.sub(r"^```(?:json)?|```$", "", text.strip(), flags=re.MULTILINE).strip()
    start, end = t.find("{"), t.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        return json.loads(t[start : end + 1])
    except json.JSONDecodeError:
        return None


def parse_label_json(text: str | None, labels: Sequence[str], multilabel: bool = False) -> int:
    try:
        if not text:
            return ABSTAIN
        obj = _json_object(text)
        value: Any = None
        if isinstance(obj, dict):
            value = obj.get("label", obj.get("labels"))
        else:  # a truncated or chatty answer may still hold a readable "label": "..." pair
            m = re.search(r'"labels?"\s*:\s*"([^"]+)"', text)
            value = m.group(1) if m else None
        if multilabel:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list):
                return ABSTAIN
            mask = 0
            for v in values:
                j = _label_index(v, labels)
                if j is None:
                    return ABSTAIN
                mask |= 1 << j
            return mask
        j = _label_index(value, labels)
        return ABSTAIN if j is None else j
    except Exception:
        return ABSTAIN


def parse_lines_json(text: str | None, labels: Sequence[str], n_lines: int, multilabel: bool = False,
                     default_label: str | None = None) -> list[int]:
    """One vote per line (1-based line k -> element k-1)."""
    abstain_all = [ABSTAIN] * n_lines
    try:
        if not text:
            return abstain_all
        obj = _json_object(text)
        if not isinstance(obj, dict):
            return abstain_all
        listed: list[set[int]] = [set() for _ in range(n_lines)]
        known = 0
        for key, value in obj.items():
            j = _label_index(key, labels)
            if j is None:
                continue
            known += 1
            if not isinstance(value, list):
                return abstain_all
            for v in value:
                try:
                    k = int(v)
                except (TypeError, ValueError):
                    continue
                if 1 <= k <= n_lines:
                    listed[k - 1].add(j)
        if known == 0:
            return abstain_all
        default = labels.index(default_label) if default_label in labels else None
        out = []
        for chosen in listed:
            if multilabel:
                out.append(sum(1 << j for j in chosen))
            elif len(chosen) == 1:
                out.append(next(iter(chosen)))
            elif not chosen and default is not None:
                out.append(default)
            else:
                out.append(ABSTAIN)
        return out
    except Exception:
        return abstain_all


def parse_turn_answer(prompt: PromptTemplate, text: str | None, labels: Sequence[str], task_type: TaskType) -> int:
    multilabel = task_type is TaskType.multilabel
    if prompt.style == "choice":
        return parse_choice(text, labels, multilabel)
    return parse_label_json(text, labels, multilabel)
