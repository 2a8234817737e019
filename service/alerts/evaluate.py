"""Rules and call aggregates over one scored turn: a pure function of (rules, call state, turn).

The call state is a JSON-able dict kept with the call's window in the store, so whichever replica
scores the next turn, or a restarted one, continues from it::

    {"seq": last evaluated seq, "turns_scored": n, "updated_at": unix s,
     "latest": {task: {"label", "probability"}}, "label_counts": {task: {label: n}},
     "trend": [[seq, P(positive) - P(negative)], ...], "alerts": [last alert events],
     "turns": [{"seq", "labels", "scores": {task: {label: p}}} of the last turns],
     "alerts_total": n, "last_alert": {"rule", "severity"} | None, "max_severity": str | None,
     "rules": {rule: {"run": n, "values": {condition: [...]}, "fired_seq": s, "fired_at": t, "turns": n}}}

A turn whose seq is not past ``state["seq"]`` is not evaluated again (a retry or a replay), so an
alert is neither lost by a replica hop nor repeated by a retry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.alerts.rules import OPS, Rule, RuleSet

KEEP_TREND = 200  # turns of sentiment trend kept per call
KEEP_ALERTS = 50  # alert events kept per call (all are counted in alerts_total)
KEEP_TURNS = 50  # per-turn labels kept per call (with the probability of each predicted label)
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class ScoredTurn:
    dialogue_id: str
    seq: int
    speaker: str
    text: str
    labels: Mapping[str, Any]
    scores: Mapping[str, Mapping[str, float]]
    at: float


def new_state() -> dict[str, Any]:
    return {"seq": -1, "turns_scored": 0, "updated_at": 0.0, "latest": {}, "label_counts": {}, "trend": [],
            "alerts": [], "alerts_total": 0, "last_alert": None, "rules": {}}


def trend_value(scores: Mapping[str, Mapping[str, float]], task: str) -> float | None:
    """P(positive) - P(negative) of ``task``, in [-1, 1]; None when it has no such labels."""
    probs = scores.get(task)
    if not probs or "positive" not in probs or "negative" not in probs:
        return None
    return round(float(probs["positive"]) - float(probs["negative"]), 4)


def _latest(turn: ScoredTurn) -> dict[str, dict[str, Any]]:
    out = {}
    for task, label in turn.labels.items():
        probs = turn.scores.get(task, {})
        if isinstance(label, list):
            out[task] = {"label": ",".join(label), "probability": min((probs.get(x, 0.0) for x in label), default=0.0)}
        else:
            out[task] = {"label": label, "probability": float(probs.get(label, 0.0))}
    return out


def _labelled(turn: ScoredTurn) -> dict[str, Any]:
    """A turn's labels with the probability of each predicted label only (compact, for the monitor)."""
    scores = {}
    for task, label in turn.labels.items():
        probs = turn.scores.get(task, {})
        scores[task] = {lab: round(float(probs.get(lab, 0.0)), 4) for lab in (label if isinstance(label, list)
                                                                             else [label])}
    return {"seq": turn.seq, "labels": dict(turn.labels), "scores": scores}


def _rule_matches(rule: Rule, slot: dict[str, Any], turn: ScoredTurn) -> bool:
    """Whether the turn meets every condition; rolling means are updated in ``slot`` as a side effect."""
    ok = True
    values = slot.setdefault("values", {})
    for cond in rule.conditions:
        if cond.kind == "mean":
            window = values.setdefault(cond.text, [])
            window.append(round(cond.probability(turn.scores), 6))
            del window[:-cond.turns]
            ok &= len(window) == cond.turns and OPS[cond.op](sum(window) / cond.turns, cond.value)
        else:
            ok &= cond.holds_on(turn.labels, turn.scores)
    return ok


def _cooling(rule: Rule, slot: dict[str, Any], turn: ScoredTurn) -> bool:
    if slot.get("fired_seq") is None:
        return False
    turns_since = slot.get("turns", 0)
    if turns_since <= rule.cooldown_turns:
        return True
    # Without a cool-down in seconds, never cooling: turns of one call can be scored within a millisecond.
    return rule.cooldown_s > 0 and turn.at - float(slot.get("fired_at", 0.0)) < rule.cooldown_s


def alert_event(rule: Rule, turn: ScoredTurn) -> dict[str, Any]:
    return {"type": "alert", "rule": rule.name, "severity": rule.severity.name, "dialogue_id": turn.dialogue_id,
            "seq": turn.seq, "speaker": turn.speaker, "labels": dict(turn.labels),
            "scores": {t: dict(p) for t, p in turn.scores.items()}, "at": round(turn.at, 3)}


def turn_event(turn: ScoredTurn) -> dict[str, Any]:
    return {"type": "turn", "dialogue_id": turn.dialogue_id, "seq": turn.seq, "speaker": turn.speaker,
            "text": turn.text, "labels": dict(turn.labels), "scores": {t: dict(p) for t, p in turn.scores.items()},
            "at": round(turn.at, 3)}


def evaluate(rules: RuleSet, state: Mapping[str, Any] | None, turn: ScoredTurn,
             trend_task: str = "sentiment") -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The call state after ``turn`` and the alerts it fires; None when the turn was evaluated before."""
    out = copy.deepcopy(dict(state)) if state else new_state()
    if turn.seq <= int(out.get("seq", -1)):
        return None
    out["seq"], out["updated_at"] = turn.seq, round(turn.at, 3)
    out["turns_scored"] = int(out.get("turns_scored", 0)) + 1
    out["latest"] = _latest(turn)
    counts = out.setdefault("label_counts", {})
    for task, label in turn.labels.items():
        per = counts.setdefault(task, {})
        for lab in label if isinstance(label, list) else [label]:
            per[lab] = per.get(lab, 0) + 1
    out["turns"] = [*out.get("turns", []), _labelled(turn)][-KEEP_TURNS:]
    value = trend_value(turn.scores, trend_task)
    if value is not None:
        out["trend"] = [*out.get("trend", []), [turn.seq, value]][-KEEP_TREND:]
    fired: list[dict[str, Any]] = []
    slots = out.setdefault("rules", {})
    for name in [n for n in slots if n not in rules.names]:  # a rule removed from the file
        del slots[name]
    for rule in rules.rules:
        slot = slots.setdefault(rule.name, {"run": 0})
        if slot.get("fired_seq") is not None:
            slot["turns"] = int(slot.get("turns", 0)) + 1
        if not rule.counts(turn.speaker):
            continue
        if not _rule_matches(rule, slot, turn):
            slot["run"] = 0
            continue
        slot["run"] = int(slot.get("run", 0)) + 1
        if slot["run"] < rule.run or _cooling(rule, slot, turn):
            continue
        event = alert_event(rule, turn)
        fired.append(event)
        slot.update(run=0, fired_seq=turn.seq, fired_at=turn.at, turns=0)
    if fired:
        out["alerts"] = [*out.get("alerts", []), *fired][-KEEP_ALERTS:]
        out["alerts_total"] = int(out.get("alerts_total", 0)) + len(fired)
        worst = max(fired, key=lambda e: SEVERITIES.index(e["severity"]))
        out["last_alert"] = {"rule": fired[-1]["rule"], "severity": fired[-1]["severity"]}
        before = out.get("max_severity") or "info"
        out["max_severity"] = max(before, worst["severity"], key=SEVERITIES.index)
    return out, fired


def summary(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The call aggregates of ``GET /v1/dialogues/{id}``."""
    s = state or new_state()
    return {
        "turns_scored": int(s.get("turns_scored", 0)),
        "label_counts": s.get("label_counts", {}),
        "sentiment_trend": [{"seq": int(q), "value": float(v)} for q, v in s.get("trend", [])],
        "alerts": list(s.get("alerts", [])),
        "alerts_total": int(s.get("alerts_total", 0)),
        "turns": list(s.get("turns", [])),
    }


def listing(dialogue_id: str, state: Mapping[str, Any], last_seq: int | None) -> dict[str, Any]:
    """One live call in ``GET /v1/dialogues``."""
    return {
        "dialogue_id": dialogue_id,
        "last_seq": last_seq if last_seq is not None else int(state.get("seq", -1)),
        "updated_at": float(state.get("updated_at", 0.0)),
        "turns_scored": int(state.get("turns_scored", 0)),
        "latest": state.get("latest", {}),
        "alerts": int(state.get("alerts_total", 0)),
        "last_alert": state.get("last_alert"),
        "max_severity": state.get("max_severity"),
    }
