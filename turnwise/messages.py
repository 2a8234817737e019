"""Bodies and frames of the service's HTTP and WebSocket API, as pydantic models with examples.

The service validates requests and frames with the request models and documents its answers with the
response models (OpenAPI, the AsyncAPI document of the WebSocket); :mod:`turnwise.client` parses the
answers with the same models. Responses ignore fields they do not know, so an older client keeps
working against a newer service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from turnwise.api import DIALOGUE_ID_PATTERN, MAX_SEQ, ErrorKind
from turnwise.events import CallSummary

DialogueIdStr = Annotated[
    str, StringConstraints(pattern=DIALOGUE_ID_PATTERN), Field(description="1-128 characters of [A-Za-z0-9._:-]",
                                                               examples=["call-0042"])
]
Seq = Annotated[
    int,
    Field(ge=0, le=MAX_SEQ, strict=True, examples=[0],
          description="The turn's position in the call, from 0, increasing (gaps allowed). A retry with the same "
          "seq, speaker and text returns the stored result."),
]
Speaker = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    Field(description="agent/system/assistant/bot/operator/sys/wizard are the agent's side; anything else is the "
          "customer's", examples=["customer"]),
]
# Length above the max_text_chars setting is a 413 (checked by the service), not a 422.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1),
                 Field(examples=["My internet is down again and I want a refund."])]
Scores = dict[str, dict[str, float]]
Labels = dict[str, str | list[str]]

MODEL_EXAMPLE: Any = {"name": "turnwise-demo", "version": "0.1.0"}
SCORES_EXAMPLE: Any = {
    "intent": {"no_intent": 0.08, "has_intent": 0.92},
    "act": {"inform": 0.71, "question": 0.04, "directive": 0.22, "commissive": 0.03},
    "sentiment": {"negative": 0.88, "neutral": 0.1, "positive": 0.02},
}
LABELS_EXAMPLE: Any = {"intent": "has_intent", "act": "inform", "sentiment": "negative"}
TIMINGS_EXAMPLE: Any = {"store": 0.21, "tokenize": 0.09, "queue": 0.04, "inference": 6.3, "total": 6.9}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


# --- requests ---------------------------------------------------------------------------------------
class TurnIn(BaseModel):
    model_config = _examples(
        {"seq": 3, "speaker": "customer", "text": "My internet is down again and I want a refund."}
    )

    seq: Seq
    speaker: Speaker
    text: Text


class ScoreTurn(BaseModel):
    model_config = _examples({"speaker": "customer", "text": "Can you cancel my order?"})

    speaker: Speaker
    text: Text


class ScoreIn(BaseModel):
    model_config = _examples(
        {"turns": [{"speaker": "agent", "text": "Thanks for calling, how can I help?"},
                   {"speaker": "customer", "text": "My card was charged twice."}], "all": False}
    )

    turns: list[ScoreTurn] = Field(min_length=1, description="Oldest first; the last one is scored.")
    all: bool = Field(False, description="Score every turn (each with its own window), not just the last.")


class FeedbackIn(BaseModel):
    model_config = _examples({"dialogue_id": "call-0042", "seq": 3, "task": "sentiment", "label": "negative"})

    dialogue_id: DialogueIdStr
    seq: Seq
    task: str = Field(min_length=1, max_length=64, description="A task of the served model.")
    label: str | list[str] = Field(description="One label of the task (a list for a multilabel task).")


class TurnFrame(BaseModel):
    """Client -> server: score one turn of a call."""

    model_config = _examples(
        {"type": "turn", "dialogue_id": "call-0042", "seq": 0, "speaker": "customer", "text": "Hi, my order is late."}
    )

    type: Literal["turn"]
    dialogue_id: DialogueIdStr
    seq: Seq
    speaker: Speaker
    text: Text = Field(description="The utterance (at most TURNWISE_MAX_TEXT_CHARS characters).")


class EndFrame(BaseModel):
    """Client -> server: the call is over; forget its window (after the connection's earlier frames)."""

    model_config = _examples({"type": "end", "dialogue_id": "call-0042"})

    type: Literal["end"]
    dialogue_id: DialogueIdStr = Field(description="The call to end.")


Frame = Annotated[TurnFrame | EndFrame, Field(discriminator="type")]


# --- responses ----------------------------------------------------------------------------------------
class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModelRef(_Out):
    name: str = Field(description="Model name from the bundle.")
    version: str = Field(description="Model version from the bundle.")


class TurnResult(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"dialogue_id": "call-0042", "seq": 3, "scores": SCORES_EXAMPLE, "labels": LABELS_EXAMPLE,
         "model": MODEL_EXAMPLE, "window_turns": 4, "timings_ms": TIMINGS_EXAMPLE}]})

    dialogue_id: str = Field(description="The call the turn belongs to.")
    seq: int = Field(description="The turn's seq, as sent.")
    scores: Scores = Field(description="Per task, the probability of every label.")
    labels: Labels = Field(description="Per task, the predicted label (a list for a multilabel task).")
    model: ModelRef
    window_turns: int = Field(description="Turns in the window the model saw (the scored turn included).")
    timings_ms: dict[str, float] = Field(default_factory=dict,
                                         description="store, tokenize, queue, inference, total (ms); with a "
                                         "streaming bundle also one of incremental (the turn over the call's "
                                         "cached keys/values), rebuilt (the span in one pass) or cached (a "
                                         "retry the state already held), holding the model time; a retry "
                                         "answered from the store has store and total only; absent in a "
                                         "dialogue's last_result")


class ScoreResult(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"scores": SCORES_EXAMPLE, "labels": LABELS_EXAMPLE, "model": MODEL_EXAMPLE, "window_turns": 2,
         "timings_ms": {"tokenize": 0.1, "queue": 0.03, "inference": 5.8, "total": 6.1}}]})

    scores: Scores = Field(description="Per task, the probability of every label.")
    labels: Labels = Field(description="Per task, the predicted label (a list for a multilabel task).")
    model: ModelRef | None = Field(None, description="Absent inside ScoreAllResult.turns (given once there).")
    window_turns: int = Field(description="Turns in the window the model saw (the scored turn included).")
    timings_ms: dict[str, float] | None = Field(None, description="tokenize, queue, inference, total (ms)")


class ScoreAllResult(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"turns": [{"scores": SCORES_EXAMPLE, "labels": LABELS_EXAMPLE, "window_turns": 1}],
         "model": MODEL_EXAMPLE, "timings_ms": {"tokenize": 0.1, "queue": 0.03, "inference": 5.8, "total": 6.1}}]})

    turns: list[ScoreResult]
    model: ModelRef
    timings_ms: dict[str, float]


class WindowTurn(_Out):
    seq: int
    speaker: str
    text: str


class DialogueOut(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"dialogue_id": "call-0042", "last_seq": 1,
         "window": [{"seq": 0, "speaker": "agent", "text": "How can I help?"},
                    {"seq": 1, "speaker": "customer", "text": "My card was charged twice."}],
         "last_result": None, "model": "turnwise-demo@0.1.0"}]})

    dialogue_id: str
    last_seq: int | None
    window: list[WindowTurn] = Field(description="The turns the next turn's window starts from, oldest first.")
    last_result: TurnResult | None = Field(description="The last turn's result (null until it is scored).")
    model: str | None = Field(description="name@version of the model that scored the last turn.")
    summary: CallSummary = Field(description="The call's aggregates: turns scored, label counts, sentiment "
                                 "trend, alerts so far.")


class FeedbackOut(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"status": "accepted", "id": "1733100000000-1", "context": "window"}]})

    status: Literal["accepted"]
    id: str = Field(description="Entry id in the feedback stream.")
    context: Literal["window", "missing"] = Field(description="window: the turn's window was stored with the "
                                                  "label (the sidecar can train on it); missing: it was gone")


class ReloadOut(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"reloaded": True, "model": MODEL_EXAMPLE, "previous": {"name": "turnwise-demo", "version": "0.0.9"}}]})

    reloaded: bool
    model: ModelRef
    previous: ModelRef | None = None


class ReadyOut(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"status": "ready", "model": {**MODEL_EXAMPLE, "variant": "fp32"}, "store": "memory"}]})

    status: Literal["ready"]
    model: dict[str, str] = Field(description="name, version and variant of the served bundle")
    store: str = Field(description="memory or redis")


class HealthOut(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class ErrorOut(_Out):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"error": "field 'seq': Input should be greater than or equal to 0", "error_type": "invalid"}]})

    error: str = Field(description="What went wrong, for a person (never echoes the request's text).")
    error_type: ErrorKind


# --- WebSocket replies ------------------------------------------------------------------------------
class ScoresFrame(TurnResult):
    """Server -> client: the result of a ``turn`` frame (the same fields as the REST turn result)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"type": "scores", "dialogue_id": "call-0042", "seq": 0, "scores": SCORES_EXAMPLE, "labels": LABELS_EXAMPLE,
         "model": MODEL_EXAMPLE, "window_turns": 1, "timings_ms": TIMINGS_EXAMPLE}]})

    type: Literal["scores"]


class EndedFrame(_Out):
    """Server -> client: the answer to an ``end`` frame; the window is gone."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"type": "ended", "dialogue_id": "call-0042"}]})

    type: Literal["ended"]
    dialogue_id: str = Field(description="The call that was ended.")


class ErrorFrame(_Out):
    """Server -> client: a frame failed; it takes that frame's place in the reply order."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"type": "error", "code": "conflict", "message": "dialogue 'call-0042': seq 2 is older than the last seq 5",
         "seq": 2, "dialogue_id": "call-0042"}]})

    type: Literal["error"]
    code: ErrorKind = Field(description="The error kind (the REST error_type).")
    message: str = Field(description="What went wrong, for a person.")
    seq: int | None = Field(description="The failed frame's seq when it had a readable one, else null.")
    dialogue_id: str | None = Field(None, description="The failed frame's dialogue_id when it had a readable one.")
    retry_after_s: float | None = Field(None, description="overloaded: seconds to wait before sending the frame "
                                        "again (the REST Retry-After).")


Reply = Annotated[ScoresFrame | EndedFrame | ErrorFrame, Field(discriminator="type")]
