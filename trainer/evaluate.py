"""Evaluation: accuracy and macro-F1 per task, confusion matrices, a JSON report.

Works on a PyTorch checkpoint or an exported model bundle: both are turned into
per-task logits for every gold-labelled turn of the dialogues, windows formatted by the shared
formatter, then scored by the same code. A streaming (turn-causal) checkpoint is run span by span
with the spans of the shared span rule, so every turn is scored with exactly the context the service
will give it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from trainer.model import model_device, resolve_device
from trainer.segments import SegmentSet, build_segments, collate
from trainer.spans import SpanSet, build_spans, collate_spans, pack_by_tokens
from turnwise.dialogue import Dialogue
from turnwise.jsonl import dumps_json
from turnwise.names import BUNDLE_MANIFEST
from turnwise.scoring import decode_paths, predict_indices, probabilities
from turnwise.tasks import TaskSchema, TaskType

EVAL_BATCH = 64
EVAL_TOKENS = 8192  # padded tokens per streaming evaluation batch


@torch.no_grad()
def predict_segments(model: Any, seg: SegmentSet, pad_id: int, *, bf16: bool = False,
                     index: np.ndarray | None = None, batch_size: int = EVAL_BATCH) -> dict[str, np.ndarray]:
    """Logits (N, C) per task for the segments ``index`` (default: all), sorted by length for speed."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    idx = np.arange(len(seg)) if index is None else np.asarray(index)
    order = idx[np.argsort([len(seg.ids[i]) for i in idx], kind="stable")]
    out: dict[str, np.ndarray] = {n: np.zeros((len(seg), seg.schema[n].num_labels), dtype=np.float32)
                                  for n in seg.schema.names()}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.logits_dict(**collate(seg, chunk, pad_id, device))
        for n, v in logits.items():
            out[n][chunk] = v.float().cpu().numpy()
    model.train(was_training)
    return out


@torch.no_grad()
def predict_spans(model: Any, spans: SpanSet, pad_id: int, *, bf16: bool = False, index: np.ndarray | None = None,
                  token_budget: int = EVAL_TOKENS) -> dict[str, np.ndarray]:
    """Logits (N, C) per task for every row scored by the spans ``index`` (default: all spans)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    idx = np.arange(len(spans.span_ids)) if index is None else np.asarray(index, dtype=np.int64)
    out: dict[str, np.ndarray] = {n: np.zeros((len(spans), spans.schema[n].num_labels), dtype=np.float32)
                                  for n in spans.schema.names()}
    lengths = spans.span_lengths()
    for chunk in pack_by_tokens(lengths, idx, token_budget, np.random.default_rng(0), sort_window=len(idx) or 1):
        batch, rows = collate_spans(spans, chunk, pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.logits_dict(**batch)
        for n, v in logits.items():
            out[n][rows] = v.float().cpu().numpy()
    model.train(was_training)
    return out


def predict_rows(model: Any, data: SegmentSet, pad_id: int, *, bf16: bool = False,
                 rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Logits for the rows ``rows`` (default: all) of flat segments or turn-causal spans."""
    if isinstance(data, SpanSet):
        index = None if rows is None else data.spans_with(np.isin(np.arange(len(data)), rows))
        return predict_spans(model, data, pad_id, bf16=bf16, index=index)
    return predict_segments(model, data, pad_id, bf16=bf16, index=rows)


def single_label_metrics(labels: list[str], gold: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1 over the classes that occur in the gold labels, per-class F1, confusion."""
    idx = list(range(len(labels)))
    conf = confusion_matrix(gold, pred, labels=idx) if len(gold) else np.zeros((len(labels),) * 2, dtype=np.int64)
    _, _, f1, support = precision_recall_fscore_support(gold, pred, labels=idx, zero_division=0.0)
    present = support > 0
    return {
        "n": len(gold),
        "accuracy": float(accuracy_score(gold, pred)) if len(gold) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": {lab: float(v) for lab, v in zip(labels, f1, strict=True)},
        "labels": labels,
        "confusion": conf.tolist(),  # rows: gold, columns: predicted
    }


def multilabel_metrics(labels: list[str], gold: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Exact-match accuracy, micro- and macro-F1 (macro over labels that occur), per-label F1."""
    _, _, f1, support = precision_recall_fscore_support(gold, pred, zero_division=0.0)
    _, _, micro, _ = precision_recall_fscore_support(gold, pred, average="micro", zero_division=0.0)
    present = support > 0
    return {
        "n": len(gold),
        "accuracy": float((gold == pred).all(1).mean()) if len(gold) else 0.0,  # exact match
        "micro_f1": float(micro),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": {lab: float(v) for lab, v in zip(labels, f1, strict=True)},
        "labels": labels,
    }


def hierarchical_metrics(task: Any, gold: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """A hierarchical task: the full path's metrics (as a single-label task over the path labels, the
    path found by beam search) plus ``levels``: accuracy, macro-F1 and confusion at each level."""
    paths, _ = decode_paths(task, logits)
    nodes = task.level_nodes()
    table = np.asarray([task.path_nodes(lab) for lab in task.labels], dtype=np.int64)  # path -> node per level
    leaf = {int(n): i for i, n in enumerate(table[:, -1])}  # last-level node -> its path label
    pred_path = np.asarray([leaf[int(p)] for p in paths[:, -1]], dtype=np.int64)
    out = single_label_metrics(task.labels, gold, pred_path)
    out["levels"] = {name: single_label_metrics(nodes[lv], table[gold, lv], paths[:, lv])
                     for lv, name in enumerate(task.level_names())}
    return out


def compute_metrics(schema: TaskSchema, seg: SegmentSet, logits: dict[str, np.ndarray],
                    select: str = "accuracy") -> dict[str, Any]:
    """Per-task metrics on gold-labelled segments; ``score`` = mean of ``select`` over tasks with gold."""
    tasks: dict[str, Any] = {}
    for name in schema.names():
        task = schema[name]
        keep = seg.has_gold(name)
        if not keep.any():
            continue
        if task.type is TaskType.hierarchical:
            tasks[name] = hierarchical_metrics(task, seg.gold[name][keep], logits[name][keep])
            continue
        probs = probabilities(task.type, logits[name][keep])
        pred = predict_indices(task.type, probs)
        gold = seg.gold[name][keep]
        if task.type is TaskType.multilabel:
            tasks[name] = multilabel_metrics(task.labels, gold.astype(np.int64), pred)
        else:
            tasks[name] = single_label_metrics(task.labels, gold, pred)
    score = float(np.mean([m[select] for m in tasks.values()])) if tasks else 0.0
    return {"score": score, "select": select, "tasks": tasks}


class _BundleAdapter:
    """Makes a loaded ONNX bundle look like the student for :func:`predict_segments`."""

    def __init__(self, bundle: Any):
        self.bundle = bundle
        self.training = False

    def eval(self) -> None:
        return None

    def train(self, mode: bool = True) -> None:
        return None

    def logits_dict(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    pool_index: torch.Tensor | None = None, **_: Any) -> dict[str, torch.Tensor]:
        if pool_index is not None:  # turn-causal spans: one pass of the step graph, pooled on the tags
            per_token = self.bundle.span_logits(input_ids.numpy(), attention_mask.numpy())
            rows, pos = pool_index[:, 0].numpy(), pool_index[:, 1].numpy()
            return {k: torch.from_numpy(np.asarray(v[rows, pos], dtype=np.float32)) for k, v in per_token.items()}
        seqs = [row[: int(m.sum())].tolist() for row, m in zip(input_ids, attention_mask, strict=True)]
        return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in self.bundle.infer(seqs).items()}


def evaluate_path(model_path: str | Path, dialogues: Sequence[Dialogue], *, tasks: list[str] | None = None,
                  variant: str = "auto", device: str = "auto") -> dict[str, Any]:
    """Evaluate a checkpoint directory (on ``device``) or a model bundle directory on gold-labelled dialogues."""
    p = Path(model_path)
    if (p / BUNDLE_MANIFEST).exists():
        from bundle.loader import load_bundle

        bundle = load_bundle(p, variant=variant)
        schema, window, tokenizer = bundle.schema, bundle.window, bundle.tokenizer
        model: Any = _BundleAdapter(bundle)
        kind = f"bundle:{bundle.variant}"
    else:
        from trainer.checkpoint import load_checkpoint

        ckpt = load_checkpoint(p)
        schema, window, tokenizer, model = ckpt.schema, ckpt.window, ckpt.tokenizer, ckpt.model
        model.to(resolve_device(device))
        kind = "checkpoint"
    schema = schema.select(tasks)
    seg = (build_spans if window.streaming else build_segments)(dialogues, schema, tokenizer, window)
    gold_any = np.zeros(len(seg), dtype=bool)
    for n in schema.names():
        gold_any |= seg.has_gold(n)
    logits = predict_rows(model, seg, tokenizer.pad_token_id, rows=np.flatnonzero(gold_any))
    report = compute_metrics(schema, seg, logits)
    report.update({"model": str(p), "kind": kind, "window_format": window.format, "dialogues": len(dialogues),
                   "segments": int(gold_any.sum())})
    return report


def write_report(report: dict[str, Any], out: str | Path) -> Path:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dumps_json(report, indent=2), encoding="utf-8")
    return p
