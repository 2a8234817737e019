"""Parity of a turn-causal (streaming) bundle: the step graph run turn by turn, as the service runs it,
against the PyTorch full pass over each span.

Probes are whole dialogues (the probe file, the project sample, or built-in ones) plus *long calls*
made by chaining consecutive probe dialogues until each is over 2.5 spans long, so every variant is
also measured across re-anchors. Each dialogue is played turn by turn through
:func:`bundle.streaming.plan_turn` / :func:`~bundle.streaming.advance` -- the service's own
decisions: an incremental step while the span holds, a one-pass rebuild at each re-anchor. The
reference is :class:`trainer.model.TurnwiseModel`'s streaming forward over the spans of
:func:`turnwise.window.plan_spans`, i.e. what training computed for every turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bundle.streaming import NEW_KV, advance, plan_turn, split_outputs, step_feed
from export.errors import ExportError
from export.parity import probe_dialogues
from trainer.model import TurnwiseModel
from trainer.spans import turn_causal_mask
from turnwise.names import logits_output
from turnwise.window import WindowConfig, plan_spans, turn_token_ids

MAX_PROBE_DIALOGUES = 160
LONG_CALLS = 4

StepRunner = Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], np.ndarray]]


@dataclass
class DialogueProbes:
    dialogues: list[list[list[int]]]  # per dialogue, each turn's token ids
    source: str
    window: WindowConfig

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for d in self.dialogues:
            for t in d:
                h.update(np.asarray(t, dtype=np.int64).tobytes())
                h.update(b"|")
            h.update(b"#")
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        spans = [plan_spans([len(t) for t in d], self.window) for d in self.dialogues]
        return {"source": self.source, "dialogues": len(self.dialogues),
                "turns": sum(len(d) for d in self.dialogues), "reanchors": sum(len(s) - 1 for s in spans),
                "max_dialogue_tokens": max(sum(len(t) for t in d) for d in self.dialogues),
                "digest": self.digest, "replay": "turn by turn through the step graph, rebuild at re-anchors"}


def build_dialogue_probes(tokenizer: Any, window: WindowConfig, probe_data: Path | None = None,
                          max_dialogues: int = MAX_PROBE_DIALOGUES) -> DialogueProbes:
    raw, source = probe_dialogues(probe_data)
    dialogues = [turn_token_ids(list(turns), tokenizer, window) for turns in raw[:max_dialogues] if turns]
    if not dialogues:
        raise ExportError(f"the probe set from {source} is empty")
    target = int(2.5 * window.max_context_tokens)
    long_calls, i = [], 0
    for _ in range(LONG_CALLS):  # chained dialogues, so every variant is measured across re-anchors
        call: list[list[int]] = []
        while sum(len(t) for t in call) <= target:
            call.extend(dialogues[i % len(dialogues)])
            i += 1
        long_calls.append(call)
    return DialogueProbes(dialogues + long_calls, source, window)


def torch_reference(model: TurnwiseModel, probes: DialogueProbes) -> dict[str, np.ndarray]:
    """Every turn's logits from the full pass over its span: {output name: (turns, C)} float64."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for turns in probes.dialogues:
        lengths = [len(t) for t in turns]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for span in plan_spans(lengths, probes.window):
            ids = torch.tensor([[tok for t in turns[span.start : span.end] for tok in t]])
            local = torch.from_numpy(np.repeat(np.arange(span.end - span.start), lengths[span.start : span.end]))
            tags = offsets[span.first : span.end] - offsets[span.start]
            pool = torch.from_numpy(np.stack([np.zeros_like(tags), tags], axis=1))
            with torch.no_grad():
                out = model(ids, turn_causal_mask(local[None]), torch.zeros_like(ids), pool)
            for task, logits in zip(model.task_names, out, strict=True):
                parts.setdefault(logits_output(task), []).append(logits.double().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def ort_step_runner(session: Any, tasks: Sequence[str]) -> StepRunner:
    outputs = [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        got = dict(zip(outputs, session.run(None, feed), strict=True))
        return {t: got[logits_output(t)] for t in tasks}, got[NEW_KV]

    return run


def replay(run: StepRunner, probes: DialogueProbes, tasks: Sequence[str], kv_shape: tuple[int, int, int],
           pad: int) -> dict[str, np.ndarray]:
    """Every turn's logits as the service computes them: {output name: (turns, C)} float64."""
    parts: dict[str, list[np.ndarray]] = {logits_output(t): [] for t in tasks}
    for turns in probes.dialogues:
        state, anchor = None, 0
        for t in range(len(turns)):
            seqs = list(range(t + 1))
            request, start, mode = plan_turn(state, seqs, turns[: t + 1], anchor, probes.window, kv_shape)
            assert request is not None  # every turn is new here
            logits, new_kv = split_outputs([request], *run(step_feed([request], kv_shape, pad)))[0]
            state = advance(state, mode, seqs, start, start, logits, new_kv, probes.window.max_context_tokens)
            anchor = start
            for task in tasks:
                parts[logits_output(task)].append(np.asarray(logits[task][-1:], dtype=np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}

