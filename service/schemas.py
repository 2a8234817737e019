"""Request, frame and response bodies of the HTTP and WebSocket API.

Responses are built as plain dicts (no response-model validation on the hot path); the models below
document them in OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# dialogue_id becomes part of Redis keys; braces (hash tags), spaces and slashes are excluded.
DIALOGUE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_SEQ = 2**53 - 1  # exact in a Lua number (double) and in JavaScript

DialogueIdStr = Annotated[str, StringConstraints(pattern=DIALOGUE_ID_PATTERN)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ, strict=True)]
Speaker = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
# Length above settings.max_text_chars is a 413 (checked by the pipeline), not a 422.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TurnIn(_Body):
    seq: Seq
    speaker: Speaker
    text: Text


class ScoreTurn(_Body):
    speaker: Speaker
    text: Text


class ScoreIn(_Body):
    turns: list[ScoreTurn] = Field(min_length=1)
    all: bool = Field(False, description="Score every turn (each with its own window), not just the last.")


class FeedbackIn(_Body):
    dialogue_id: DialogueIdStr
    seq: Seq
    task: str = Field(min_length=1, max_length=64)
    label: str | list[str]


class TurnFrame(_Body):
    type: Literal["turn"]
    dialogue_id: DialogueIdStr
    seq: Seq
    speaker: Speaker
    text: Text


class EndFrame(_Body):
    type: Literal["end"]
    dialogue_id: DialogueIdStr


Frame = Annotated[TurnFrame | EndFrame, Field(discriminator="type")]


# --- responses (documentation) -----------------------------------------------------------------
class ModelRef(BaseModel):
    name: str
    version: str


class TurnResult(BaseModel):
    dialogue_id: str
    seq: int
    scores: dict[str, dict[str, float]]
    labels: dict[str, str | list[str]]
    model: ModelRef
    window_turns: int
    timings_ms: dict[str, float] = Field(description="store, tokenize, queue, inference, total (ms)")


class ScoreResult(BaseModel):
    scores: dict[str, dict[str, float]]
    labels: dict[str, str | list[str]]
    model: ModelRef
    window_turns: int
    timings_ms: dict[str, float]


class ScoreAllResult(BaseModel):
    turns: list[ScoreResult]
    model: ModelRef
    timings_ms: dict[str, float]


class WindowTurn(BaseModel):
    seq: int
    speaker: str
    text: str


class DialogueOut(BaseModel):
    dialogue_id: str
    last_seq: int | None
    window: list[WindowTurn]
    last_result: TurnResult | None
    model: str | None


class ErrorOut(BaseModel):
    error: str
    error_type: str


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorOut} for status in (401, 409, 413, 422, 429, 503, 504)
}
