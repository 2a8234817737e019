"""Pretrain on teacher scores (pairwise or pointwise), then finetune on a fraction of gold dialogues.

One run is two phases on one global step counter: ``pretrain_steps`` steps of preference (or soft
label) pretraining, then finetuning until ``finetune_epochs`` or ``max_steps`` run out, with early
stopping on the validation split. The best validation model is the checkpoint; ``state/last.pt``
holds what a killed run needs to resume (model, optimizer, scheduler, step, best metric, RNG, config).

Two encoders (``TrainConfig.encoder``): ``streaming`` (the default: turn-causal spans, one forward
pass per span gives every turn's logits, batches cut by a token budget) and ``flat`` (one window per
scored turn, the paper's setting). Which batch each step sees is planned in :mod:`trainer.feeds`.
Under ``torchrun`` the same function trains with PyTorch DDP (:mod:`trainer.distributed`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import distributed
from trainer.checkpoint import load_training_state, save_checkpoint, save_training_state
from trainer.evaluate import compute_metrics, predict_rows
from trainer.feeds import FlatFeed, Logits, SpanFeed
from trainer.losses import (
    multilabel_loss,
    pairwise_preference_loss,
    pointwise_soft_label_loss,
    single_label_loss,
)
from trainer.model import TurnwiseModel, build_model, model_device, resolve_device
from trainer.pairs import PairConfig, sample_pairs
from trainer.segments import SegmentSet, build_segments
from trainer.spans import build_spans
from turnwise.dialogue import Dialogue
from turnwise.tasks import TaskSchema, TaskType
from turnwise.window import WindowConfig

OBJECTIVES = ("pairwise", "pointwise", "none")
ENCODERS = ("streaming", "flat")


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
    encoder: str = "streaming"  # streaming (turn-causal spans) | flat (one window per turn)
    pooling: str = "cls"  # flat only; streaming pools each turn's role-tag token
    max_turns: int = 12  # flat window
    max_tokens: int = 128  # flat window
    max_context_tokens: int = 512  # streaming span (<= the backbone's positions)
    reanchor_tokens: int | None = None  # streaming: context kept at a re-anchor; None = half the span
    # Streaming batches hold at most this many padded tokens (B x T_max): ~15 DailyDialog dialogues,
    # ~130 scored turns, as many tokens as a flat batch of 16-32 windows; on 2 CPU cores it measured
    # ~1.7x more turns/s than 4096 (fewer long spans padded together) and gives 4x the optimizer steps.
    token_budget: int = 2048
    pretrain_steps: int = 300
    pretrain_epochs: int | None = None  # streaming: pretrain for whole epochs over the spans (overrides steps)
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
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}")
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

    def window(self) -> WindowConfig:
        if self.encoder == "flat":
            return WindowConfig(max_turns=self.max_turns, max_tokens=self.max_tokens)
        return WindowConfig.turn_causal(self.max_context_tokens, self.reanchor_tokens)


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
            sum(o.float().sum() for o in out).backward()  # works for flat and span batches alike
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
        losses.append(multilabel_loss(f[sel], target) if task.type is TaskType.multilabel
                      else single_label_loss(f[sel], target))
    return (torch.stack(losses).sum() if losses else None), count


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


def _prepare(cfg: TrainConfig, train_dialogues: Sequence[Dialogue], val_dialogues: Sequence[Dialogue] | None,
             schema: TaskSchema, tokenizer: Any, teacher: Any, world: distributed.World) -> tuple[Any, Any]:
    """(feed, validation rows) for the configured encoder."""
    window = cfg.window()
    build = build_spans if window.streaming else build_segments
    use_teacher = teacher if cfg.objective != "none" else None
    val = build(val_dialogues, schema, tokenizer, window) if val_dialogues else None
    gold = set(pick_gold_dialogues(train_dialogues, schema.names(), cfg.gold_fraction, cfg.seed))
    args = (cfg, gold, cfg.objective != "none", tokenizer.pad_token_id)
    feed: FlatFeed | SpanFeed
    if window.streaming:
        feed = SpanFeed(build_spans(train_dialogues, schema, tokenizer, window, teacher=use_teacher), *args,
                        rank=world.rank, world=world.size)
    else:
        feed = FlatFeed(build_segments(train_dialogues, schema, tokenizer, window, teacher=use_teacher), *args,
                        rank=world.rank, world=world.size)
    return feed, val


def _check_positions(cfg: TrainConfig, model: TurnwiseModel) -> None:
    positions = int(getattr(model.encoder.config, "max_position_embeddings", 512))
    if cfg.encoder == "streaming" and cfg.max_context_tokens > positions:
        raise ValueError(f"max_context_tokens {cfg.max_context_tokens} exceeds the backbone's {positions} positions")
    if cfg.encoder == "flat" and cfg.max_tokens > positions:
        raise ValueError(f"max_tokens {cfg.max_tokens} exceeds the backbone's {positions} positions")


def train(cfg: TrainConfig, train_dialogues: Sequence[Dialogue], schema: TaskSchema, out_dir: str | Path, *,
          val_dialogues: Sequence[Dialogue] | None = None, teacher: Any = None, teacher_info: dict | None = None,
          progress: ProgressFn | None = None) -> TrainResult:
    """Run pretraining (if teacher scores and an objective) and finetuning; write the checkpoint.

    Under ``torchrun`` every rank calls this with the same arguments; rank 0 writes the checkpoint.
    """
    out = Path(out_dir)
    schema = schema.select(cfg.tasks)
    window = cfg.window()
    built = build_model(cfg.backbone, schema, pooling=cfg.pooling, seed=cfg.seed)
    model, tokenizer = built.model, built.tokenizer
    _check_positions(cfg, model)
    if cfg.init_from:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(cfg.init_from) / "model.safetensors")), strict=True)
    device = resolve_device(cfg.device)
    world = distributed.join(device)
    device = distributed.rank_device(device, world)
    torch.manual_seed(cfg.seed + world.rank)  # dropout differs per rank; weights stay equal (DDP)
    model.to(device)

    feed, val = _prepare(cfg, train_dialogues, val_dialogues, schema, tokenizer, teacher, world)
    pretrain_steps = feed.pretrain_steps()
    finetune_steps = feed.finetune_steps() if feed.n_finetune_items else 0
    if cfg.max_steps is not None:
        finetune_steps = min(finetune_steps, cfg.max_steps)
    per_epoch = max(1, finetune_steps // max(1, cfg.finetune_epochs)) if finetune_steps else 1
    eval_every = cfg.eval_every or per_epoch
    total = pretrain_steps + finetune_steps
    if total == 0:
        raise ValueError("nothing to train: no teacher scores for pretraining and no gold labels for finetuning")

    # Precision: bf16 autocast only where it measures faster on this machine (rank 0 decides).
    timings = measure_precision(model, feed.probe_batch(device)) if cfg.precision == "auto" else {}
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and timings["bf16"] < timings["fp32"])
    bf16 = bool(world.broadcast(float(bf16)))
    net = distributed.wrap(model, world)

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
        state["config"].setdefault("encoder", "flat")  # states written before the streaming encoder
        saved = TrainConfig.from_dict(state["config"])
        same = all(getattr(saved, f.name) == getattr(cfg, f.name) for f in fields(cfg)
                   if f.name not in TrainConfig.RESUMABLE_CHANGES)
        if not same:
            raise ValueError(f"{out} holds a run with a different configuration; use another --out or delete it")
        model.load_state_dict(state["model"])
        start, best, best_step, bad = state["step"], state["best"], state["best_step"], state["bad"]
        history = state["history"]
        ranks = state.get("torch_rng_ranks") or []
        torch.set_rng_state(ranks[world.rank] if len(ranks) == world.size else state["torch_rng"])
        resumed = start
        if state.get("finished"):
            distributed.leave(world)
            return TrainResult(out, best, best_step, start, state.get("throughput", {}), state.get("precision", ""),
                               history, resumed)
        phase_opt = make_phase(state["phase"])
        phase_opt[1].load_state_dict(state["optimizer"])
        phase_opt[2].load_state_dict(state["scheduler"])

    meta_base = {"backbone": cfg.backbone, "encoder": cfg.encoder, "train_config": asdict(cfg),
                 "gold_dialogues": len(pick_gold_dialogues(train_dialogues, schema.names(), cfg.gold_fraction,
                                                           cfg.seed)),
                 "train_dialogues": len(train_dialogues), "teacher": teacher_info or None}
    rates: dict[str, list[float]] = {"pretrain": [], "finetune": []}

    def save_best(step: int, metrics: dict[str, Any] | None) -> None:
        if world.main:
            save_checkpoint(out, model, tokenizer, window, {**meta_base, "step": step, "metrics": metrics or {}})

    def throughput() -> dict[str, float]:
        return {f"{k}_turns_per_s": float(np.median(v)) for k, v in rates.items() if v}

    def save_state(step: int, finished: bool = False) -> None:
        assert phase_opt is not None
        rng_ranks = world.gather(torch.get_rng_state())  # each rank's dropout stream, for an exact resume
        if world.main:
            save_training_state(out, {
                "config": asdict(cfg), "model": model.state_dict(), "optimizer": phase_opt[1].state_dict(),
                "scheduler": phase_opt[2].state_dict(), "phase": phase_opt[0], "step": step, "best": best,
                "best_step": best_step, "bad": bad, "history": history, "torch_rng": rng_ranks[0],
                "torch_rng_ranks": rng_ranks,
                "finished": finished, "precision": "bf16" if bf16 else "fp32", "throughput": throughput(),
            })
        world.barrier()

    def validate() -> tuple[float, dict[str, Any] | None]:
        metrics = None
        if world.main:
            metrics = compute_metrics(schema, val, predict_rows(model, val, tokenizer.pad_token_id, bf16=bf16))
        return world.broadcast(metrics["score"] if metrics else 0.0), metrics

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
        batch = feed.pretrain_batch(step, rng) if phase == "pretrain" else feed.finetune_batch(step - pretrain_steps)
        with autocast(bf16, device):
            logits, rows = feed.forward(net, model.task_names, batch, device)
        if phase == "pretrain":
            loss, n_items = pretrain_loss(logits, feed.data, rows, cfg, rng)
        else:
            loss, n_items = finetune_loss(logits, feed.data, rows)
        if world.distributed:
            # Every rank must run backward (the gradient all-reduce) even where its batch gave no loss,
            # and every head must take part: a zero-weighted sum of all logits does both.
            tie = sum(v.float().sum() for v in logits.values()) * 0.0
            loss = tie if loss is None else loss + tie
        opt.zero_grad(set_to_none=True)
        if loss is not None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sched.step()
        rates[phase].append(len(rows) / (time.perf_counter() - t0))
        step += 1
        record: dict[str, Any] = {"step": step, "phase": phase, "loss": float(loss.detach()) if loss is not None
                                  else 0.0, "items": n_items}

        at_phase_end = step in (pretrain_steps, total)
        if phase == "finetune" and ((step - pretrain_steps) % eval_every == 0 or at_phase_end):
            if val is not None and len(val):
                score, metrics = validate()
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
        if progress and world.main:
            shown = {"loss": record["loss"], **({"val": record["val"]} if "val" in record else {})}
            progress(phase, step, total, shown)
        if step % cfg.save_every == 0 or step == total or stop:
            save_state(step, finished=step == total or stop)
    if phase_opt is not None:
        save_state(step, finished=True)
    if world.distributed:
        digests = world.gather(distributed.weights_digest(model))
        if world.main:
            _record_world(out, world, digests)
    distributed.leave(world)
    return TrainResult(out, best, best_step, step, throughput(), "bf16" if bf16 else "fp32", history, resumed)


def _record_world(out: Path, world: distributed.World, digests: list[str]) -> None:
    """Rank 0: the world the run trained in and every rank's final weight digest, in the checkpoint meta."""
    import json

    p = out / "turnwise.json"
    meta = json.loads(p.read_text(encoding="utf-8"))
    meta["distributed"] = {"world_size": world.size, "backend": world.backend, "weight_sha256": digests}
    p.write_text(json.dumps(meta, indent=2), encoding="utf-8")


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
