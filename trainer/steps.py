"""The pieces of one optimizer step: precision, optimizer and schedule, and the losses of a batch.

The losses here read logits the model produced for a set of *rows* (one per turn, flat or streaming
alike) and the rows' teacher scores or gold labels; the maths is in :mod:`trainer.losses`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.feeds import Logits
from trainer.losses import (
    hierarchical_loss,
    multilabel_loss,
    pairwise_preference_loss,
    pointwise_soft_label_loss,
    single_label_loss,
)
from trainer.model import TurnwiseModel, model_device
from trainer.pairs import PairConfig, sample_pairs
from trainer.segments import SegmentSet
from turnwise.scoring import level_slices
from turnwise.tasks import Task, TaskType


def autocast(enabled: bool, device: torch.device | str = "cpu"):
    device_type = device.type if isinstance(device, torch.device) else device
    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def measure_precision(model: TurnwiseModel, batch: dict[str, torch.Tensor], repeats: int = 3) -> dict[str, float]:
    """Seconds per forward+backward step in fp32 and bf16 autocast on the same batch (median)."""
    timings = {}
    model.train()
    device = model_device(model)
    for name, bf16 in (("fp32", False), ("bf16", True)):
        runs = []
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            with autocast(bf16, device):
                out = model(**batch)
            sum(o.float().sum() for o in out).backward()  # works for flat and span batches alike
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r:  # first run warms up kernels
                runs.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        timings[name] = float(np.median(runs))
    return timings


def make_optimizer(model: TurnwiseModel, lr: float, head_lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay, heads = [], [], []
    for n, p in model.named_parameters():
        if n.startswith(("heads.", "ranker.")):
            heads.append(p)
        elif p.ndim < 2 or "LayerNorm" in n:
            no_decay.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW([
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": heads, "lr": head_lr, "weight_decay": 0.0},
    ])


def make_scheduler(opt: torch.optim.Optimizer, total: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total * warmup_ratio))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def pretrain_loss(logits: Logits, seg: SegmentSet, rows: np.ndarray, cfg: TrainConfig,
                  rng: np.random.Generator) -> tuple[torch.Tensor | None, int]:
    """Loss of one pretraining batch whose logits belong to ``rows``; (loss or None, pairs or targets).

    Pairs come only from rows of the same dialogue (intra-session) -- for a span batch that is every
    pair of turns the batch scored, all from the one forward pass.
    """
    device = next(iter(logits.values())).device
    losses, count = [], 0
    dlg = np.asarray(seg.dialogue)[rows]
    pair_cfg = PairConfig(mode=cfg.pair_mode, budget=cfg.pair_budget, min_gap=cfg.min_gap, gap_power=cfg.gap_power)
    for name, f in logits.items():
        if name not in seg.teacher:
            continue
        s = seg.teacher[name][rows]
        valid = ~np.isnan(s[:, 0])
        if not valid.any():
            continue
        f = f.float()
        st = torch.from_numpy(np.nan_to_num(s, nan=0.0)).to(device)
        if cfg.objective == "pointwise":
            mask = torch.from_numpy(valid.astype(np.float32)).to(device)
            losses.append(pointwise_soft_label_loss(f, st, mask=mask))
            count += int(valid.sum())
        else:
            pairs = sample_pairs(np.nan_to_num(s, nan=0.0), dlg, pair_cfg, rng, valid=valid)
            if len(pairs) == 0:
                continue
            a, b, c = (torch.from_numpy(x).to(device) for x in (pairs.first, pairs.second, pairs.cls))
            losses.append(pairwise_preference_loss(f[a, c], f[b, c], st[a, c], st[b, c], cfg.alpha))
            count += len(pairs)
    return (torch.stack(losses).mean() if losses else None), count


def finetune_loss(logits: Logits, seg: SegmentSet, rows: np.ndarray) -> tuple[torch.Tensor | None, int]:
    """Summed per-task gold loss over the ``rows`` that carry a gold label; (loss or None, gold rows)."""
    device = next(iter(logits.values())).device
    losses, count = [], 0
    for name, f in logits.items():
        f = f.float()
        gold = seg.gold[name][rows]
        task = seg.schema[name]
        keep = gold[:, 0] >= 0 if task.type is TaskType.multilabel else gold >= 0
        if not keep.any():
            continue
        count = max(count, int(keep.sum()))
        sel = torch.from_numpy(keep).to(device)
        target = torch.from_numpy(gold[keep]).to(device)
        if task.type is TaskType.hierarchical:
            losses.append(_hierarchical(task, f[sel], target))
        else:
            losses.append(multilabel_loss(f[sel], target) if task.type is TaskType.multilabel
                          else single_label_loss(f[sel], target))
    return (torch.stack(losses).sum() if losses else None), count


def path_table(task: Task) -> np.ndarray:
    """(number of paths, levels): the node index at each level of every path label."""
    return np.asarray([task.path_nodes(lab) for lab in task.labels], dtype=np.int64)


def _hierarchical(task: Task, f: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    target = torch.from_numpy(path_table(task)).to(f.device)[path]  # (N, L)
    return hierarchical_loss([f[:, sl] for sl in level_slices(task)], target)


def rank_set(cfg: TrainConfig, model: TurnwiseModel, dialogues: Any, tokenizer: Any, distributed: bool) -> Any:
    """The ranking candidates when ``cfg.rank_weight > 0`` (else None, and the unused ranker is frozen)."""
    from trainer.ranking import build_rank_set

    hier = [n for n in model.task_names if model.schema[n].type is TaskType.hierarchical]
    if cfg.rank_weight <= 0:
        if hasattr(model, "ranker"):
            model.ranker.requires_grad_(False)  # no gradient ever reaches it (and DDP must not wait for one)
        return None
    if not hier:
        raise ValueError("rank_weight > 0 needs a hierarchical task in the schema (its labels pick the negatives)")
    if distributed:
        raise ValueError("the response-ranking loss is not supported under torchrun; train on one process")
    return build_rank_set(dialogues, hier[0], tokenizer)


def add_rank_loss(loss: torch.Tensor | None, model: TurnwiseModel, ranks: Any, cfg: TrainConfig,
                  rng: np.random.Generator, tokenizer: Any, bf16: bool) -> torch.Tensor | None:
    """``L = L_task + rank_weight * L_rank`` on ``cfg.rank_batch`` pairs drawn with ``rng``."""
    from trainer.ranking import rank_batch, rank_loss

    if ranks is None or not len(ranks):
        return loss
    batch = rank_batch(ranks, cfg.rank_batch, rng, tokenizer, cfg.max_tokens, cfg.max_turns)
    device = model_device(model)
    with autocast(bf16, device):
        rank = rank_loss(model, batch, device)
    return cfg.rank_weight * rank if loss is None else loss + cfg.rank_weight * rank
