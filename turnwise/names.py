"""Names every part of turnwise must agree on, with one owner each.

File names of checkpoints and bundles, the ONNX graph's input names, the Redis key layout and the
stored-turn format. The trainer, the exporter, the bundle reader, the service and the training
sidecar import them from here instead of spelling them again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# --- files -----------------------------------------------------------------------------------------
CHECKPOINT_META = "turnwise.json"  # a checkpoint's metadata (tasks, window, backbone, train config, metrics)
WEIGHTS_FILE = "model.safetensors"  # a checkpoint's TurnwiseModel state dict
TRAINING_STATE = "state/last.pt"  # what a killed training run resumes from
BUNDLE_MANIFEST = "bundle.json"  # a model bundle's manifest
TOKENIZER_JSON = "tokenizer.json"  # the fast tokenizer inside a bundle

# --- ONNX ------------------------------------------------------------------------------------------
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # TurnwiseModel.forward's positional order


def logits_output(task: str) -> str:
    """The ONNX output holding a task's logits."""
    return f"logits_{task}"


# --- Redis -----------------------------------------------------------------------------------------
DEFAULT_KEY_PREFIX = "tw:"


def turns_key(prefix: str, dialogue_id: str) -> str:
    """LIST of stored turns (JSON, oldest first); hash-tagged so a dialogue's keys share a cluster slot."""
    return f"{prefix}{{{dialogue_id}}}:turns"


def meta_key(prefix: str, dialogue_id: str) -> str:
    """HASH last_seq, last_hash, result (JSON), model; anchor (streaming bundles: the span's first seq)."""
    return f"{prefix}{{{dialogue_id}}}:meta"


def feedback_stream(prefix: str) -> str:
    """STREAM of feedback records the training sidecar consumes."""
    return f"{prefix}feedback"


def events_stream(prefix: str) -> str:
    """STREAM of call events for other systems: alerts and call ends, one JSON ``event`` field each."""
    return f"{prefix}events"


def turn_events_stream(prefix: str) -> str:
    """STREAM of scored-turn events (the live monitor's transcript), one JSON ``event`` field each."""
    return f"{prefix}turn-events"


def live_key(prefix: str) -> str:
    """ZSET of live dialogue ids, scored by the unix time of their last scored turn."""
    return f"{prefix}live"


@dataclass(frozen=True)
class StoredTurn:
    """One turn as the window store keeps it (a JSON string in the turns LIST)."""

    seq: int
    speaker: str
    text: str

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "speaker": self.speaker, "text": self.text}, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredTurn:
        d = json.loads(raw)
        return cls(seq=int(d["seq"]), speaker=str(d["speaker"]), text=str(d["text"]))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StoredTurn:
        """A turn from its :meth:`as_dict` form (e.g. one element of a JSON window snapshot)."""
        return cls(seq=int(d["seq"]), speaker=str(d["speaker"]), text=str(d["text"]))

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "speaker": self.speaker, "text": self.text}


def turn_digest(speaker: str, text: str) -> str:
    """What makes a retry the same turn: speaker and text (the text as received, after stripping).
    Stored as ``last_hash`` in the meta HASH."""
    return hashlib.sha256(f"{speaker}\x1f{text}".encode()).hexdigest()[:32]
