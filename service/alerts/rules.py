"""Alert rules: a YAML file (``TURNWISE_RULES``) read and checked once, at start.

```yaml
rules:
  - name: angry_customer            # letters, digits, _ and -; unique
    severity: critical              # info | warning | critical
    speaker: customer               # optional: only this speaker's turns count
    when:                           # every condition must hold on the turn (a list, or one string)
      - sentiment.negative >= 0.8   # a probability: <task>.<label> <op> <number>, op in >= > <= <
      - act != question             # a label: <task> == <label> or <task> != <label>
    for: 2                          # optional: that many consecutive counted turns (default 1)
    cooldown: {turns: 5, seconds: 60}   # optional: no second alert of this rule sooner in the call
  - name: sentiment_falling
    severity: warning
    speaker: customer
    when: "mean(sentiment.negative, 4) >= 0.6"   # a rolling mean over the last 4 counted turns
```

Every mistake is a :class:`RuleError` naming the file, the rule and the field.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml

from turnwise.tasks import TaskSchema

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NUMBER = r"(-?\d+(?:\.\d+)?)"
IDENT = r"([A-Za-z0-9_-]+)"
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}
PROB_RE = re.compile(rf"^{IDENT}\.{IDENT}\s*(>=|<=|>|<)\s*{NUMBER}$")
LABEL_RE = re.compile(rf"^{IDENT}\s*(==|!=)\s*{IDENT}$")
MEAN_RE = re.compile(rf"^mean\(\s*{IDENT}\.{IDENT}\s*,\s*(\d+)\s*\)\s*(>=|<=|>|<)\s*{NUMBER}$")
MAX_MEAN_TURNS = 50
RULE_KEYS = {"name", "severity", "speaker", "when", "for", "cooldown"}


class Severity(IntEnum):
    info = 1
    warning = 2
    critical = 3

    @classmethod
    def parse(cls, value: object) -> Severity:
        try:
            return cls[str(value)]
        except KeyError:
            raise ValueError(f"'{value}' is not one of info, warning, critical") from None


class RuleError(ValueError):
    """A rules file that cannot be used; the message names the file, the rule and the field."""


@dataclass(frozen=True)
class Condition:
    """One condition on a turn: ``kind`` is ``probability``, ``label`` or ``mean``."""

    kind: str
    task: str
    label: str
    op: str
    value: float = 0.0
    turns: int = 1  # mean: how many counted turns the mean runs over
    text: str = ""

    def holds_on(self, labels: Mapping[str, Any], scores: Mapping[str, Mapping[str, float]]) -> bool:
        """The condition on one turn (a ``mean`` condition is checked by the evaluator)."""
        if self.kind == "label":
            got = labels.get(self.task)
            has = self.label in got if isinstance(got, list) else got == self.label
            return has if self.op == "==" else not has
        return OPS[self.op](self.probability(scores), self.value)

    def probability(self, scores: Mapping[str, Mapping[str, float]]) -> float:
        return float(scores.get(self.task, {}).get(self.label, 0.0))


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    conditions: tuple[Condition, ...]
    speaker: str | None = None
    run: int = 1  # consecutive counted turns on which the conditions hold
    cooldown_turns: int = 0
    cooldown_s: float = 0.0

    def counts(self, speaker: str) -> bool:
        return self.speaker is None or self.speaker == speaker


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    source: str = ""
    names: frozenset[str] = field(default_factory=frozenset)

    def __len__(self) -> int:
        return len(self.rules)

    def check_tasks(self, schema: TaskSchema) -> None:
        """Every task and label a rule names exists in the model's schema (at start and on reload)."""
        for i, rule in enumerate(self.rules):
            for j, cond in enumerate(rule.conditions):
                where = _where(self.source, i, rule.name, f"when[{j}]")
                task = schema.tasks.get(cond.task)
                if task is None:
                    raise RuleError(f"{where}: unknown task '{cond.task}' (the model has {schema.names()})")
                if cond.label not in task.labels:
                    raise RuleError(f"{where}: task '{cond.task}' has no label '{cond.label}' "
                                    f"(expected one of {task.labels})")


def _where(source: str, index: int, name: str | None, fld: str) -> str:
    rule = f"rule '{name}'" if name else f"rule #{index + 1}"
    return f"{source}: {rule}, field '{fld}'"


def parse_condition(text: str) -> Condition:
    """One condition string; ``ValueError`` with what was expected when it matches no form."""
    s = " ".join(str(text).split())
    if m := MEAN_RE.match(s):
        task, label, turns, op, value = m.groups()
        if not 1 <= int(turns) <= MAX_MEAN_TURNS:
            raise ValueError(f"mean over {turns} turns: use 1 to {MAX_MEAN_TURNS}")
        return Condition("mean", task, label, op, float(value), int(turns), s)
    if m := PROB_RE.match(s):
        task, label, op, value = m.groups()
        return Condition("probability", task, label, op, float(value), 1, s)
    if m := LABEL_RE.match(s):
        task, op, label = m.groups()
        return Condition("label", task, label, op, 0.0, 1, s)
    raise ValueError(
        f"cannot read condition '{s}': expected '<task>.<label> >= 0.8', '<task> == <label>' "
        "or 'mean(<task>.<label>, <turns>) >= 0.6'"
    )


def _positive_int(value: object, fld: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{fld}' must be a whole number >= 0, got {value!r}")
    return value


def parse_rule(raw: object, index: int, source: str) -> Rule:
    name = raw.get("name") if isinstance(raw, dict) else None

    def fail(fld: str, why: str) -> RuleError:
        return RuleError(f"{_where(source, index, name if isinstance(name, str) else None, fld)}: {why}")

    if not isinstance(raw, dict):
        raise fail("-", f"a rule is a mapping with name, severity and when; got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - RULE_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown field (a rule has {sorted(RULE_KEYS)})")
    if not isinstance(name, str) or not NAME.match(name):
        raise fail("name", "required: 1-64 letters, digits, '_' or '-'")
    try:
        severity = Severity.parse(raw.get("severity", "warning"))
    except ValueError as err:
        raise fail("severity", str(err)) from None
    when = raw.get("when")
    if isinstance(when, str):
        when = [when]
    if not isinstance(when, list) or not when:
        raise fail("when", "required: one condition string or a list of them")
    conditions = []
    for j, text in enumerate(when):
        try:
            conditions.append(parse_condition(text))
        except ValueError as err:
            raise fail(f"when[{j}]", str(err)) from None
    speaker = raw.get("speaker")
    if speaker is not None and (not isinstance(speaker, str) or not speaker.strip()):
        raise fail("speaker", "a speaker name such as 'customer'")
    try:
        run = _positive_int(raw.get("for", 1), "for")
        if run < 1:
            raise ValueError("'for' must be at least 1")
    except ValueError as err:
        raise fail("for", str(err)) from None
    cooldown = raw.get("cooldown") or {}
    if not isinstance(cooldown, dict) or set(cooldown) - {"turns", "seconds"}:
        raise fail("cooldown", "a mapping with 'turns' and/or 'seconds'")
    try:
        turns = _positive_int(cooldown.get("turns", 0), "turns")
        seconds = cooldown.get("seconds", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"'seconds' must be a number >= 0, got {seconds!r}")
    except ValueError as err:
        raise fail("cooldown", str(err)) from None
    return Rule(name, severity, tuple(conditions), speaker, run, turns, float(seconds))


def parse_rules(doc: object, source: str) -> RuleSet:
    if doc is None:
        return RuleSet(source=source)
    if not isinstance(doc, dict) or set(doc) - {"rules"}:
        raise RuleError(f"{source}: the file holds one key, 'rules', with a list of rules")
    raw_rules = doc.get("rules") or []
    if not isinstance(raw_rules, list):
        raise RuleError(f"{source}: 'rules' must be a list")
    rules = [parse_rule(raw, i, source) for i, raw in enumerate(raw_rules)]
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.name in seen:
            raise RuleError(f"{_where(source, i, rule.name, 'name')}: a second rule with this name")
        seen.add(rule.name)
    return RuleSet(tuple(rules), source, frozenset(seen))


def load_rules(path: str | Path | None) -> RuleSet:
    """The rules in ``path`` (an empty set for None); :class:`RuleError` for anything wrong."""
    if path is None:
        return RuleSet()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise RuleError(f"{p}: cannot read the rules file ({err.strerror or err})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RuleError(f"{p}: not valid YAML ({err})") from None
    return parse_rules(doc, str(p))
