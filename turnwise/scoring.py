"""Logits -> probabilities and labels, per task type. Shared by evaluation, export parity and serving.

binary / multiclass: softmax over the task's labels, label = argmax.
multilabel: independent sigmoids, labels = every label with p >= threshold (possibly none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from turnwise.tasks import TaskSchema, TaskType

MULTILABEL_THRESHOLD = 0.5


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large |x| never overflows exp.
    out = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def probabilities(task_type: TaskType, logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return sigmoid(logits) if task_type is TaskType.multilabel else softmax(logits)


def predict_indices(task_type: TaskType, probs: np.ndarray) -> np.ndarray:
    """(B, C) probs -> (B,) argmax for single-label tasks, (B, C) 0/1 for multilabel."""
    if task_type is TaskType.multilabel:
        return (probs >= MULTILABEL_THRESHOLD).astype(np.int64)
    return probs.argmax(axis=-1)


def decode(schema: TaskSchema, logits: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per-row ``{"scores": {task: {label: p}}, "labels": {task: label | [labels]}}`` for a batch."""
    names = schema.names()
    batch = len(next(iter(logits.values())))
    rows: list[dict[str, Any]] = [{"scores": {}, "labels": {}} for _ in range(batch)]
    for name in names:
        task = schema[name]
        probs = probabilities(task.type, logits[name])
        pred = predict_indices(task.type, probs)
        for i in range(batch):
            rows[i]["scores"][name] = {lab: round(float(p), 6) for lab, p in zip(task.labels, probs[i], strict=True)}
            if task.type is TaskType.multilabel:
                rows[i]["labels"][name] = [lab for lab, on in zip(task.labels, pred[i], strict=True) if on]
            else:
                rows[i]["labels"][name] = task.labels[int(pred[i])]
    return rows
