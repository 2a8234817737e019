"""Logits -> probabilities and labels, per task type. Shared by evaluation, export parity and serving.

binary / multiclass: softmax over the task's labels, label = argmax.
multilabel: independent sigmoids, labels = every label with p >= threshold (possibly none).
hierarchical: a softmax per level over that level's nodes; the label is the path found by beam
search over the levels (:func:`beam_search`): a path extends only to children of its last node, its
score is the sum of the levels' log-probabilities, so the answer is always a path of the taxonomy.
The decoded row then also carries ``levels``: ``{task: [{"level", "label", "p"}, ...]}``, the chosen
path's node and probability at each level (rows of schemas without a hierarchical task have no
``levels`` key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from turnwise.tasks import PATH_SEP, Task, TaskSchema, TaskType

MULTILABEL_THRESHOLD = 0.5
BEAM_WIDTH = 5


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
    """Per-label probabilities. A hierarchical task's logits by type alone are treated as one softmax
    (its argmax is the highest-scoring node of any level); :func:`level_probabilities` is per level."""
    logits = np.asarray(logits, dtype=np.float64)
    return sigmoid(logits) if task_type is TaskType.multilabel else softmax(logits)


def level_slices(task: Task) -> list[slice]:
    """Where each level's logits lie in a hierarchical task's logits (levels one after another)."""
    out, start = [], 0
    for nodes in task.level_nodes():
        out.append(slice(start, start + len(nodes)))
        start += len(nodes)
    return out


def level_parents(task: Task) -> list[np.ndarray]:
    """Per level below the root, the index of each node's parent in the level above."""
    nodes = task.level_nodes()
    return [np.asarray([nodes[lv - 1].index(n.rsplit(PATH_SEP, 1)[0]) for n in nodes[lv]], dtype=np.int64)
            for lv in range(1, len(nodes))]


def level_probabilities(task: Task, logits: np.ndarray) -> list[np.ndarray]:
    """(B, W) logits of a hierarchical task -> per level (B, C_level) softmax probabilities."""
    logits = np.asarray(logits, dtype=np.float64)
    return [softmax(logits[:, sl]) for sl in level_slices(task)]


def beam_search(level_logp: list[np.ndarray], parents: list[np.ndarray],
                width: int = BEAM_WIDTH) -> list[tuple[list[int], float]]:
    """Best consistent paths through the levels, best first: ``[(node index per level, score)]``.

    ``level_logp[l]`` (C_l,) log-probabilities of level l's nodes; ``parents[l - 1]`` (C_l,) the parent
    of each node of level l. A path's score is the sum of its nodes' log-probabilities; at each level
    only the ``width`` best partial paths are kept (ties: the lower node index first).
    """
    if width < 1:
        raise ValueError("beam width must be >= 1")
    first = np.argsort(-level_logp[0], kind="stable")[:width]
    beam = [([int(i)], float(level_logp[0][i])) for i in first]
    for lv in range(1, len(level_logp)):
        children: dict[int, np.ndarray] = {}
        grown: list[tuple[list[int], float]] = []
        for path, score in beam:
            kids = children.setdefault(path[-1], np.flatnonzero(parents[lv - 1] == path[-1]))
            grown.extend(([*path, int(k)], score + float(level_logp[lv][k])) for k in kids)
        grown.sort(key=lambda ps: (-ps[1], ps[0]))
        beam = grown[:width]
    return beam


def decode_paths(task: Task, logits: np.ndarray, width: int = BEAM_WIDTH) -> tuple[np.ndarray, list[np.ndarray]]:
    """Hierarchical logits (B, W) -> (paths (B, L) node index per level, per-level probabilities)."""
    probs = level_probabilities(task, logits)
    parents = level_parents(task)
    paths = np.zeros((len(probs[0]), len(probs)), dtype=np.int64)
    with np.errstate(divide="ignore"):
        logp = [np.log(p) for p in probs]
    for i in range(len(paths)):
        best = beam_search([lp[i] for lp in logp], parents, width)
        paths[i] = best[0][0]
    return paths, probs


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
        if task.type is TaskType.hierarchical:
            _decode_hierarchical(name, task, logits[name], rows)
            continue
        probs = probabilities(task.type, logits[name])
        pred = predict_indices(task.type, probs)
        for i in range(batch):
            rows[i]["scores"][name] = {lab: round(float(p), 6) for lab, p in zip(task.labels, probs[i], strict=True)}
            if task.type is TaskType.multilabel:
                rows[i]["labels"][name] = [lab for lab, on in zip(task.labels, pred[i], strict=True) if on]
            else:
                rows[i]["labels"][name] = task.labels[int(pred[i])]
    return rows


def _decode_hierarchical(name: str, task: Task, logits: np.ndarray, rows: list[dict[str, Any]]) -> None:
    paths, probs = decode_paths(task, logits)
    nodes, level_names = task.level_nodes(), task.level_names()
    for i, row in enumerate(rows):
        row["scores"][name] = {node: round(float(p), 6) for lv, level in enumerate(nodes)
                               for node, p in zip(level, probs[lv][i], strict=True)}
        chosen = [nodes[lv][int(k)] for lv, k in enumerate(paths[i])]
        row["labels"][name] = chosen[-1]
        row.setdefault("levels", {})[name] = [
            {"level": level_names[lv], "label": node, "p": round(float(probs[lv][i, int(paths[i, lv])]), 6)}
            for lv, node in enumerate(chosen)]
