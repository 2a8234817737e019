"""The one window formatter, imported by trainer, export parity probes and service.

A window is the context up to and including the turn being scored: segment x_i = u_1..u_i. It is
rendered oldest to newest with a role tag per turn and the scored turn last::

    [CLS] [usr] my card was charged twice [sys] sorry to hear that , which card ? [usr] the visa [SEP]

Tags: ``[sys]`` for agent/system/assistant speakers, ``[usr]`` for everyone else (ToD-BERT's
convention). Only the last ``max_turns`` turns are kept, and the token sequence is truncated from the
LEFT to ``max_tokens`` (special tokens included), so the newest words always survive.

Each turn is tokenized on its own (``"[usr] text"``) and the ids are concatenated; this is exactly
what tokenizing the joined string gives for WordPiece tokenizers, and lets callers batch the work.

Two formats share this module:

- ``todbert-v1`` (flat): the window above, one encoder pass per scored turn, pooled on [CLS].
- ``turn-causal-v1`` (streaming): a dialogue is cut into *context spans* of whole turns, each turn
  ``[tag] + text`` (no [CLS]/[SEP]); a token attends to its own turn and to earlier turns of the span,
  never to a later one, and the hidden state of the turn's tag token is the turn's representation.
  One pass over a span scores every turn in it, and at serving time the keys/values of earlier turns
  can be cached exactly. :func:`span_start` is the span rule, :func:`plan_spans` applies it to a
  whole dialogue; trainer, export and service all use them, so every turn is scored with the same
  context in training and in serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

SYS_TAG = "[sys]"
USR_TAG = "[usr]"
ROLE_TAGS = (SYS_TAG, USR_TAG)
SYSTEM_SPEAKERS = frozenset({"agent", "system", "assistant", "sys", "bot", "wizard", "operator"})
FLAT_FORMAT = "todbert-v1"
STREAMING_FORMAT = "turn-causal-v1"
FORMATS = (FLAT_FORMAT, STREAMING_FORMAT)
FORMAT_NAME = FLAT_FORMAT  # the default format
MIN_REANCHOR_TOKENS = 16
_FLAT_KEYS = ("max_turns", "max_tokens", "format")
_STREAMING_KEYS = ("format", "max_context_tokens", "reanchor_tokens")


@dataclass(frozen=True)
class WindowConfig:
    max_turns: int = 12
    # 128 tokens hold ~6 short support-call turns; longer windows cost quadratic attention time on CPU.
    max_tokens: int = 128
    format: str = FORMAT_NAME
    # turn-causal-v1 only. A span holds at most max_context_tokens tokens (positions count from its
    # start, so never more than the backbone's positions); when a new turn would overflow it, the span
    # restarts with as many recent turns as fit in reanchor_tokens. Half the span means one full
    # re-encode per ~256 tokens of new speech, and never less than 256 tokens of context after it.
    max_context_tokens: int = 512
    reanchor_tokens: int = 256

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown window format '{self.format}' (supported: {', '.join(FORMATS)})")
        if self.max_turns < 1:
            raise ValueError("window.max_turns must be >= 1")
        if self.max_tokens < 8:
            raise ValueError("window.max_tokens must be >= 8")
        if self.reanchor_tokens < MIN_REANCHOR_TOKENS:
            raise ValueError(f"window.reanchor_tokens must be >= {MIN_REANCHOR_TOKENS}")
        if self.reanchor_tokens > self.max_context_tokens:
            raise ValueError("window.reanchor_tokens must be <= window.max_context_tokens")

    @property
    def streaming(self) -> bool:
        return self.format == STREAMING_FORMAT

    @property
    def store_turns(self) -> int:
        """Most turns a window store keeps: ``max_turns`` for a flat window; for a turn-causal one the
        span anchor trims the window and this is only a cap (a turn is at least its tag token, so no
        span holds more than ``max_context_tokens`` turns)."""
        return self.max_context_tokens if self.streaming else self.max_turns

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in (_STREAMING_KEYS if self.streaming else _FLAT_KEYS)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WindowConfig:
        return cls(**{k: d[k] for k in (*_FLAT_KEYS, *_STREAMING_KEYS) if k in d})

    @classmethod
    def turn_causal(cls, max_context_tokens: int = 512, reanchor_tokens: int | None = None) -> WindowConfig:
        """A streaming window; ``reanchor_tokens`` defaults to half the span."""
        reanchor = max_context_tokens // 2 if reanchor_tokens is None else reanchor_tokens
        return cls(format=STREAMING_FORMAT, max_context_tokens=max_context_tokens, reanchor_tokens=reanchor)


class Tokenizer(Protocol):  # the subset of a HF fast tokenizer we use
    cls_token_id: int | None
    sep_token_id: int | None
    pad_token_id: int | None

    def __call__(self, text: list[str], add_special_tokens: bool = ...) -> Any: ...


def role_tag(speaker: str) -> str:
    return SYS_TAG if speaker.strip().lower() in SYSTEM_SPEAKERS else USR_TAG


def _speaker_text(turn: Any) -> tuple[str, str]:
    if isinstance(turn, Mapping):
        return str(turn["speaker"]), str(turn["text"])
    return str(turn.speaker), str(turn.text)


def turn_string(turn: Any) -> str:
    speaker, text = _speaker_text(turn)
    return f"{role_tag(speaker)} {text}".rstrip()


def render_window(turns: Sequence[Any], cfg: WindowConfig) -> str:
    """Human-readable window (no token truncation): for logs, prompts and debugging."""
    return " ".join(turn_string(t) for t in list(turns)[-cfg.max_turns :])


def encode_windows(windows: Sequence[Sequence[Any]], tokenizer: Tokenizer, cfg: WindowConfig) -> list[list[int]]:
    """Token ids for each window: [CLS] + last (max_tokens - 2) ids of the tagged turns + [SEP].

    ``windows`` is a batch; each window is a sequence of turns (objects or mappings with ``speaker``
    and ``text``), oldest first, the scored turn last.
    """
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError("tokenizer needs [CLS] and [SEP] tokens")
    kept = [list(w)[-cfg.max_turns :] for w in windows]
    for i, w in enumerate(kept):
        if not w:
            raise ValueError(f"window {i} is empty: a window holds at least the scored turn")
    flat = [turn_string(t) for w in kept for t in w]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"]
    budget = cfg.max_tokens - 2
    out: list[list[int]] = []
    pos = 0
    for w in kept:
        seq: list[int] = []
        for turn_ids in ids[pos : pos + len(w)]:
            seq.extend(turn_ids)
        pos += len(w)
        out.append([tokenizer.cls_token_id, *seq[-budget:], tokenizer.sep_token_id])
    return out


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad to the longest sequence: ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T) int64."""
    length = max(len(s) for s in seqs)
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def windows_of(turns: Sequence[Any], cfg: WindowConfig) -> list[list[Any]]:
    """x_i = u_1..u_i for every turn i (limited to the last ``max_turns``): the windows a dialogue yields."""
    return [list(turns[max(0, i + 1 - cfg.max_turns) : i + 1]) for i in range(len(turns))]


# --- turn-causal-v1 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A context span of one dialogue: turns ``start .. end-1`` encoded in one pass, positions from
    ``start``. It scores turns ``first .. end-1``; turns ``start .. first-1`` are context kept from
    before a re-anchor (the previous span scored them)."""

    start: int
    first: int
    end: int


def turn_token_ids(turns: Sequence[Any], tokenizer: Tokenizer, cfg: WindowConfig) -> list[list[int]]:
    """Token ids of each turn in the turn-causal format: ``[tag] + text``, no [CLS]/[SEP].

    A turn longer than ``cfg.reanchor_tokens`` (the most a span can hold after a re-anchor) is
    truncated from the LEFT, keeping its tag: its newest words survive and it is never dropped.
    """
    if not turns:
        return []
    ids = tokenizer([turn_string(t) for t in turns], add_special_tokens=False)["input_ids"]
    cap = cfg.reanchor_tokens
    return [list(t) if len(t) <= cap else [t[0], *t[len(t) - cap + 1 :]] for t in ids]


def span_start(lengths: Sequence[int], start: int, cfg: WindowConfig) -> int:
    """The span rule: where the span that scores the newest turn begins.

    ``lengths`` are the token lengths of a dialogue's turns up to and including the new one (the
    last); ``start`` is the first turn of the current span. If the span plus the new turn fits in
    ``max_context_tokens`` it is kept (``start``). Otherwise it re-anchors at the earliest turn ``j``
    such that turns ``j ..`` new fit in ``reanchor_tokens`` (at least the new turn itself, which
    :func:`turn_token_ids` caps). The rule reads only token lengths, so every caller agrees on it.
    """
    new = len(lengths) - 1
    if new < 0 or not 0 <= start <= new:
        raise ValueError(f"span start {start} outside the {len(lengths)} turns")
    if sum(lengths[start:]) <= cfg.max_context_tokens:
        return start
    j, total = new, lengths[new]
    while j - 1 > start and total + lengths[j - 1] <= cfg.reanchor_tokens:
        j -= 1
        total += lengths[j]
    return j


def plan_spans(lengths: Sequence[int], cfg: WindowConfig) -> list[Span]:
    """All spans of a dialogue whose turns have token ``lengths``: the first starts at turn 0, and a
    new one begins wherever :func:`span_start` re-anchors. Every turn is scored by exactly one span."""
    spans: list[Span] = []
    start = first = 0
    for t in range(1, len(lengths)):
        s = span_start(lengths[: t + 1], start, cfg)
        if s != start:
            spans.append(Span(start, first, t))
            start, first = s, t
    if lengths:
        spans.append(Span(start, first, len(lengths)))
    return spans
