"""Pretrain on teacher scores (pairwise or pointwise), then finetune on a fraction of gold dialogues.

One run is two phases on one global step counter: ``pretrain_steps`` steps of preference (or soft
label) pretraining, then finetuning until ``finetune_epochs`` or ``max_steps`` run out, with early
stopping on the validation split. The best validation model is the checkpoint; ``state/last.pt``
holds what a killed run needs to resume (model, optimizer, scheduler, step, best metric, RNG, config).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.checkpoint import load_training_state, save_checkpoint, save_training_state
from trainer.evaluate import compute_metrics, predict_segments
from trainer.losses import (
    multilabel_loss,
    pairwise_preference_loss,
    pointwise_soft_label_loss,
    single_label_loss,
)
from trainer.model import TurnwiseModel, build_model, model_device, resolve_device
from trainer.pairs import PairConfig, sample_pairs
from trainer.segments import SegmentSet, build_segments, collate
from turnwise.dialogue import Dialogue
from turnwise.tasks import TaskSchema, TaskType
from turnwise.window import WindowConfig

OBJECTIVES = ("pairwise", "pointwise", "none")


@dataclass
class TrainConfig:
    objective: str = "pairwise"
    alpha: float = 0.5  # margin weight of eq. 1-2; 0 = RankNet, 1 = the full teacher gap
    pair_mode: str = "intra"
    pair_budget: int = 16
    min_gap: float = 1e-6
    gap_power: float = 1.0
    gold_fraction: float = 1.0
    backbone: str = "minilm"
    pooling: str = "cls"
    max_turns: int = 12
    max_tokens: int = 128
    pretrain_steps: int = 300
    pretrain_dialogues: int = 8  # dialogues per pretraining batch: all their segments, all their pairs
    pretrain_segments: int = 12  # at most this many segments per dialogue in a batch
    pretrain_lr: float = 5e-5
    pretrain_head_lr: float | None = None  # learning rate of the heads while pretraining; None = pretrain_lr
    finetune_epochs: int = 5
    batch_size: int = 32
    # Finetuning a pretrained encoder on a handful of gold dialogues erases what pretraining taught
    # at the usual 5e-5; the heads still need a fast rate to set the per-class offsets.
    finetune_lr: float = 3e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_steps: int | None = None  # cap on finetuning steps (quick runs)
    eval_every: int = 0  # finetuning steps between validations; 0 = once per epoch
    patience: int = 3  # validations without improvement before stopping
    select_metric: str = "accuracy"
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); auto measures both and keeps the faster
    device: str = "auto"  # auto = CUDA when available, else CPU; or a torch device name ("cpu", "cuda:1")
    save_every: int = 50
    seed: int = 0
    tasks: list[str] | None = None
    init_from: str | None = None  # start from this checkpoint's weights (e.g. a pretrained student)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}")
        if not 0.0 < self.gold_fraction <= 1.0:
            raise ValueError("gold_fraction must be in (0, 1]")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError("precision must be auto, fp32 or bf16")
        PairConfig(mode=self.pair_mode, budget=self.pair_budget)  # validates

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    # Settings a resumed run may change without invalidating the saved state.
    RESUMABLE_CHANGES = ("save_every", "eval_every", "max_steps", "precision", "device")


def pick_gold_dialogues(dialogues: Sequence[Dialogue], tasks: Sequence[str], fraction: float, seed: int) -> list[int]:
    """Seeded choice of ``fraction`` of the dialogues that carry gold labels (at least one)."""
    candidates = [i for i, d in enumerate(dialogues) if any(d.labelled(t) for t in tasks)]
    if not candidates:
        return []
    k = max(1, round(fraction * len(candidates)))
    rng = np.random.default_rng([seed, 7919])
    return sorted(rng.choice(candidates, size=k, replace=False).tolist())


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
            sum(o.float().sum() for o in out).backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r:  # first run warms up kernels
                runs.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        timings[name] = float(np.median(runs))
    return timings


def _optimizer(model: TurnwiseModel, lr: float, head_lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay, heads = [], [], []
    for n, p in model.named_parameters():
        if n.startswith("heads."):
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


def _scheduler(opt: torch.optim.Optimizer, total: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total * warmup_ratio))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def pretrain_loss(model: TurnwiseModel, seg: SegmentSet, index: np.ndarray, cfg: TrainConfig,
                  rng: np.random.Generator, pad_id: int, bf16: bool) -> tuple[torch.Tensor, int]:
    """Loss of one pretraining batch (segments ``index``); returns (loss, number of pairs or targets)."""
    device = model_device(model)
    batch = collate(seg, index, pad_id, device)
    with autocast(bf16, device):
        logits = model.logits_dict(**batch)
    losses, count = [], 0
    dlg = np.asarray(seg.dialogue)[index]
    pair_cfg = PairConfig(mode=cfg.pair_mode, budget=cfg.pair_budget, min_gap=cfg.min_gap, gap_power=cfg.gap_power)
    for name, f in logits.items():
        if name not in seg.teacher:
            continue
        s = seg.teacher[name][index]
        valid = ~np.isnan(s[:, 0])
        if not valid.any():
            continue
        f = f.float()
        if cfg.objective == "pointwise":
            st = torch.from_numpy(np.nan_to_num(s, nan=0.0)).to(device)
            mask = torch.from_numpy(valid.astype(np.float32)).to(device)
            losses.append(pointwise_soft_label_loss(f, st, mask=mask))
            count += int(valid.sum())
        else:
            pairs = sample_pairs(np.nan_to_num(s, nan=0.0), dlg, pair_cfg, rng, valid=valid)
            if len(pairs) == 0:
                continue
            a, b, c = (torch.from_numpy(x).to(device) for x in (pairs.first, pairs.second, pairs.cls))
            st = torch.from_numpy(np.nan_to_num(s, nan=0.0)).to(device)
            losses.append(pairwise_preference_loss(f[a, c], f[b, c], st[a, c], st[b, c], cfg.alpha))
            count += len(pairs)
    if not losses:
        return torch.zeros((), requires_grad=True, device=device), 0
    return torch.stack(losses).mean(), count


def finetune_loss(model: TurnwiseModel, seg: SegmentSet, index: np.ndarray, pad_id: int, bf16: bool) -> torch.Tensor:
    device = model_device(model)
    batch = collate(seg, index, pad_id, device)
    with autocast(bf16, device):
        logits = model.logits_dict(**batch)
    losses = []
    for name, f in logits.items():
        f = f.float()
        gold = seg.gold[name][index]
        task = seg.schema[name]
        if task.type is TaskType.multilabel:
            keep = gold[:, 0] >= 0
            if keep.any():
                losses.append(multilabel_loss(f[torch.from_numpy(keep).to(device)],
                                              torch.from_numpy(gold[keep]).to(device)))
        else:
            keep = gold >= 0
            if keep.any():
                losses.append(single_label_loss(f[torch.from_numpy(keep).to(device)],
                                                torch.from_numpy(gold[keep]).to(device)))
    return torch.stack(losses).sum() if losses else torch.zeros((), requires_grad=True, device=device)


@dataclass
class TrainResult:
    checkpoint: Path
    best_metric: float | None
    best_step: int
    steps: int
    throughput: dict[str, float]
    precision: str
    history: list[dict[str, Any]]
    resumed_from: int | None = None


ProgressFn = Callable[[str, int, int, dict[str, float]], None]


def train(cfg: TrainConfig, train_dialogues: Sequence[Dialogue], schema: TaskSchema, out_dir: str | Path, *,
          val_dialogues: Sequence[Dialogue] | None = None, teacher: Any = None, teacher_info: dict | None = None,
          progress: ProgressFn | None = None) -> TrainResult:
    """Run pretraining (if teacher scores and an objective) and finetuning; write the checkpoint."""
    out = Path(out_dir)
    schema = schema.select(cfg.tasks)
    window = WindowConfig(max_turns=cfg.max_turns, max_tokens=cfg.max_tokens)
    built = build_model(cfg.backbone, schema, pooling=cfg.pooling, seed=cfg.seed)
    model, tokenizer = built.model, built.tokenizer
    pad_id = tokenizer.pad_token_id
    if cfg.init_from:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(cfg.init_from) / "model.safetensors")), strict=True)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)

    use_teacher = teacher if cfg.objective != "none" else None
    seg = build_segments(train_dialogues, schema, tokenizer, window, teacher=use_teacher)
    val = build_segments(val_dialogues, schema, tokenizer, window) if val_dialogues else None
    gold_dlg = pick_gold_dialogues(train_dialogues, schema.names(), cfg.gold_fraction, cfg.seed)
    gold_set = set(gold_dlg)
    ft_index = np.asarray([i for i in range(len(seg)) if seg.dialogue[i] in gold_set
                           and any(seg.has_gold(n)[i] for n in schema.names())], dtype=np.int64)
    pre_dialogues = [d for d, idx in seg.by_dialogue().items()
                     if cfg.objective != "none" and any(seg.has_teacher(n)[idx].any() for n in schema.names())]
    pretrain_steps = cfg.pretrain_steps if pre_dialogues else 0
    steps_per_epoch = max(1, math.ceil(len(ft_index) / cfg.batch_size)) if len(ft_index) else 0
    finetune_steps = steps_per_epoch * cfg.finetune_epochs
    if cfg.max_steps is not None:
        finetune_steps = min(finetune_steps, cfg.max_steps)
    eval_every = cfg.eval_every or steps_per_epoch or 1
    total = pretrain_steps + finetune_steps
    if total == 0:
        raise ValueError("nothing to train: no teacher scores for pretraining and no gold labels for finetuning")

    # Precision: bf16 autocast only where it measures faster on this CPU.
    probe = np.arange(min(len(seg), cfg.batch_size))
    timings = measure_precision(model, collate(seg, probe, pad_id, device)) if cfg.precision == "auto" else {}
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and timings["bf16"] < timings["fp32"])

    state = load_training_state(out)
    start, best, best_step, bad, history, resumed = 0, None, -1, 0, [], None
    phase_opt: tuple[str, torch.optim.Optimizer, Any] | None = None

    def make_phase(phase: str):
        if phase == "pretrain":
            head_lr = cfg.pretrain_lr if cfg.pretrain_head_lr is None else cfg.pretrain_head_lr
            opt = _optimizer(model, cfg.pretrain_lr, head_lr, cfg.weight_decay)
            return phase, opt, _scheduler(opt, pretrain_steps, cfg.warmup_ratio)
        opt = _optimizer(model, cfg.finetune_lr, cfg.head_lr, cfg.weight_decay)
        return phase, opt, _scheduler(opt, max(1, finetune_steps), cfg.warmup_ratio)

    if state is not None:
        saved = TrainConfig.from_dict(state["config"])
        same = all(getattr(saved, f.name) == getattr(cfg, f.name) for f in fields(cfg)
                   if f.name not in TrainConfig.RESUMABLE_CHANGES)
        if not same:
            raise ValueError(f"{out} holds a run with a different configuration; use another --out or delete it")
        model.load_state_dict(state["model"])
        start, best, best_step, bad = state["step"], state["best"], state["best_step"], state["bad"]
        history = state["history"]
        torch.set_rng_state(state["torch_rng"])
        resumed = start
        if state.get("finished"):
            return TrainResult(out, best, best_step, start, state.get("throughput", {}), state.get("precision", ""),
                               history, resumed)
        phase_opt = make_phase(state["phase"])
        phase_opt[1].load_state_dict(state["optimizer"])
        phase_opt[2].load_state_dict(state["scheduler"])

    meta_base = {"backbone": cfg.backbone, "train_config": asdict(cfg), "gold_dialogues": len(gold_dlg),
                 "train_dialogues": len(train_dialogues), "teacher": teacher_info or None}
    rates: dict[str, list[float]] = {"pretrain": [], "finetune": []}

    def save_best(step: int, metrics: dict[str, Any] | None) -> None:
        save_checkpoint(out, model, tokenizer, window, {**meta_base, "step": step, "metrics": metrics or {}})

    def save_state(step: int, finished: bool = False) -> None:
        assert phase_opt is not None
        save_training_state(out, {
            "config": asdict(cfg), "model": model.state_dict(), "optimizer": phase_opt[1].state_dict(),
            "scheduler": phase_opt[2].state_dict(), "phase": phase_opt[0], "step": step, "best": best,
            "best_step": best_step, "bad": bad, "history": history, "torch_rng": torch.get_rng_state(),
            "finished": finished, "precision": "bf16" if bf16 else "fp32", "throughput": throughput(),
        })

    def throughput() -> dict[str, float]:
        return {f"{k}_segments_per_s": float(np.median(v)) for k, v in rates.items() if v}

    step = start
    stop = False
    while step < total and not stop:
        phase = "pretrain" if step < pretrain_steps else "finetune"
        if phase_opt is None or phase_opt[0] != phase:
            phase_opt = make_phase(phase)
        _, opt, sched = phase_opt
        model.train()
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, step])
        if phase == "pretrain":
            chosen = rng.choice(pre_dialogues, size=min(cfg.pretrain_dialogues, len(pre_dialogues)), replace=False)
            groups = seg.by_dialogue()
            idx = np.concatenate([
                np.sort(rng.choice(groups[d], size=min(cfg.pretrain_segments, len(groups[d])), replace=False))
                for d in chosen])
            loss, n_items = pretrain_loss(model, seg, idx, cfg, rng, pad_id, bf16)
        else:
            ft_step = step - pretrain_steps
            epoch, pos = divmod(ft_step, steps_per_epoch)
            order = np.random.default_rng([cfg.seed, 104729, epoch]).permutation(ft_index)
            idx = order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
            loss = finetune_loss(model, seg, idx, pad_id, bf16)
            n_items = len(idx)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad and loss.grad_fn is not None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sched.step()
        rates[phase].append(len(idx) / (time.perf_counter() - t0))
        step += 1
        record: dict[str, Any] = {"step": step, "phase": phase, "loss": float(loss.detach()), "items": n_items}

        at_phase_end = step in (pretrain_steps, total)
        if phase == "finetune" and ((step - pretrain_steps) % eval_every == 0 or at_phase_end):
            metrics = None
            if val is not None and len(val):
                metrics = compute_metrics(schema, val, predict_segments(model, val, pad_id, bf16=bf16))
                score = metrics["score"]
                record["val"] = score
                if best is None or score > best + 1e-9:
                    best, best_step, bad = score, step, 0
                    save_best(step, metrics)
                else:
                    bad += 1
                    stop = bad >= cfg.patience
            else:
                best_step = step
                save_best(step, None)
        elif phase == "pretrain" and at_phase_end and finetune_steps == 0:
            save_best(step, None)
        history.append(record)
        if progress:
            shown = {"loss": record["loss"], **({"val": record["val"]} if "val" in record else {})}
            progress(phase, step, total, shown)
        if step % cfg.save_every == 0 or step == total or stop:
            save_state(step, finished=step == total or stop)
    if phase_opt is not None:
        save_state(step, finished=True)
    return TrainResult(out, best, best_step, step, throughput(), "bf16" if bf16 else "fp32", history, resumed)


def record_run_facts(out_dir: str | Path, result: TrainResult) -> None:
    """Add measured throughput and the chosen precision to the checkpoint's metadata."""
    import json

    p = Path(out_dir) / "turnwise.json"
    if not p.exists():
        return
    meta = json.loads(p.read_text(encoding="utf-8"))
    meta["throughput"] = result.throughput
    meta["precision"] = result.precision
    meta["best_step"] = result.best_step
    p.write_text(json.dumps(meta, indent=2), encoding="utf-8")
