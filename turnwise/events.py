"""Bodies of the call monitor: alert events, call aggregates and the live-call list.

Documented in OpenAPI (``GET /v1/dialogues``, ``GET /v1/dialogues/{id}``) and shared with clients;
the ``WS /v1/events`` frames are the same :class:`AlertEvent` and :class:`TurnEvent` objects.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["info", "warning", "critical"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


ALERT_EXAMPLE: dict[str, Any] = {
                 "type": "alert", "rule": "upset_customer", "severity": "critical", "dialogue_id": "call-0042",
                 "seq": 5, "speaker": "customer", "labels": {"sentiment": "negative", "act": "inform"},
                 "scores": {"sentiment": {"negative": 0.91, "neutral": 0.07, "positive": 0.02},
                            "act": {"inform": 0.8, "question": 0.1, "directive": 0.06, "commissive": 0.04}},
                 "at": 1764662400.512}


class AlertEvent(_Out):
    """An alert: a rule of TURNWISE_RULES held on a scored turn."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [ALERT_EXAMPLE]})

    type: Literal["alert"]
    rule: str = Field(description="Name of the rule that fired.")
    severity: Severity
    dialogue_id: str
    seq: int = Field(description="The turn that fired it.")
    speaker: str
    labels: dict[str, str | list[str]]
    scores: dict[str, dict[str, float]]
    at: float = Field(description="Unix time (s) the turn was scored.")


class TurnEvent(_Out):
    """A scored turn, with its text (WS /v1/events with ``types=turn``: the live transcript)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {**{k: v for k, v in ALERT_EXAMPLE.items() if k not in ("rule", "severity")}, "type": "turn",
         "text": "This is the third time I am calling about it."}]})

    type: Literal["turn"]
    dialogue_id: str
    seq: int
    speaker: str
    text: str
    labels: dict[str, str | list[str]]
    scores: dict[str, dict[str, float]]
    at: float


class EndedEvent(_Out):
    """A call ended (``end`` frame or DELETE /v1/dialogues/{id})."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"type": "ended", "dialogue_id": "call-0042", "at": 1764662460.1}]})

    type: Literal["ended"]
    dialogue_id: str
    at: float


class TrendPoint(_Out):
    seq: int
    value: float = Field(description="P(positive) - P(negative) of the trend task, in [-1, 1].")


class TurnLabels(_Out):
    seq: int
    labels: dict[str, str | list[str]]
    scores: dict[str, dict[str, float]] = Field(description="The probability of each predicted label.")


class CallSummary(_Out):
    turns_scored: int
    label_counts: dict[str, dict[str, int]] = Field(description="Per task, how often each label was predicted.")
    sentiment_trend: list[TrendPoint] = Field(description="Per scored turn (the last 200), oldest first.")
    alerts: list[AlertEvent] = Field(description="The call's alerts (the last 50), oldest first.")
    alerts_total: int
    turns: list[TurnLabels] = Field(description="The last 50 scored turns' labels, oldest first.")


class LatestLabel(_Out):
    label: str
    probability: float


class AlertRef(_Out):
    rule: str
    severity: Severity


class LiveCall(_Out):
    dialogue_id: str
    last_seq: int
    updated_at: float = Field(description="Unix time (s) of the last scored turn.")
    turns_scored: int
    latest: dict[str, LatestLabel] = Field(description="The last scored turn's label per task.")
    alerts: int = Field(description="Alerts fired in this call so far.")
    last_alert: AlertRef | None
    max_severity: Severity | None = Field(description="The most severe alert of the call so far.")


class DialogueList(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"dialogues": [
        {"dialogue_id": "call-0042", "last_seq": 7, "updated_at": 1764662400.5, "turns_scored": 8,
         "latest": {"sentiment": {"label": "negative", "probability": 0.91}}, "alerts": 1,
         "last_alert": {"rule": "angry_customer", "severity": "critical"}, "max_severity": "critical"}]}]})

    dialogues: list[LiveCall]
