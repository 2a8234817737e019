"""The one window formatter (DESIGN §1, §3), imported by trainer, export parity probes and service.

A window is the context up to and including the turn being scored: segment x_i = u_1..u_i. It is
rendered oldest to newest with a role tag per turn and the scored turn last::

    [CLS] [usr] my card was charged twice [sys] sorry to hear that , which card ? [usr] the visa [SEP]

Tags: ``[sys]`` for agent/system/assistant speakers, ``[usr]`` for everyone else (ToD-BERT's
convention). Only the last ``max_turns`` turns are kept, and the token sequence is truncated from the
LEFT to ``max_tokens`` (special tokens included), so the newest words always survive.

Each turn is tokenized on its own (``"[usr] text"``) and the ids are concatenated; this is exactly
what tokenizing the joined string gives for WordPiece tokenizers, and lets callers batch the work.
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
FORMAT_NAME = "todbert-v1"


@dataclass(frozen=True)
class WindowConfig:
    max_turns: int = 12
    # 128 tokens hold ~6 short support-call turns; longer windows cost quadratic attention time on CPU.
    max_tokens: int = 128
    format: str = FORMAT_NAME

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError("window.max_turns must be >= 1")
        if self.max_tokens < 8:
            raise ValueError("window.max_tokens must be >= 8")
        if self.format != FORMAT_NAME:
            raise ValueError(f"unknown window format '{self.format}' (supported: {FORMAT_NAME})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WindowConfig:
        return cls(**{k: d[k] for k in ("max_turns", "max_tokens", "format") if k in d})


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


def segments(turns: Sequence[Any], cfg: WindowConfig) -> list[list[Any]]:
    """x_i = u_1..u_i for every turn i (limited to the last ``max_turns``): the windows a dialogue yields."""
    return [list(turns[max(0, i + 1 - cfg.max_turns) : i + 1]) for i in range(len(turns))]
