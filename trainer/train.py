"""Pretrain on teacher scores (pairwise or pointwise), then finetune on a fraction of gold dialogues.

One run is two phases on one global step counter: pretraining steps (preference pairs or soft
labels), then finetuning until ``finetune_epochs`` or ``max_steps`` run out, with early stopping on
the validation split. The best validation model is the checkpoint; ``state/last.pt`` holds what a
killed run needs to resume (model, optimizer, scheduler, step, best metric, every rank's RNG, config).

Two encoders (``TrainConfig.encoder``): ``streaming`` (the default: turn-causal spans, one forward
pass per span gives every turn's logits, batches cut by a token budget) and ``flat`` (one window per
scored turn, the paper's setting). Which batch each step sees is planned in :mod:`trainer.feeds`; the
losses of a batch are in :mod:`trainer.steps`. Under ``torchrun`` the same function trains with
PyTorch DDP (:mod:`trainer.distributed`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import distributed
from trainer.checkpoint import load_training_state, save_checkpoint, save_training_state
from trainer.config import ENCODERS, OBJECTIVES, TrainConfig
from trainer.evaluate import compute_metrics, predict_rows
from trainer.feeds import FlatFeed, SpanFeed
from trainer.losses import combine_pairwise_pointwise
from trainer.model import TurnwiseModel, build_model, resolve_device
from trainer.segments import build_segments
from trainer.spans import build_spans
from trainer.steps import (
    add_rank_loss,
    autocast,
    finetune_loss,
    make_optimizer,
    make_scheduler,
    measure_precision,
    pretrain_loss,
    rank_set,
)
from turnwise.dialogue import Dialogue
from turnwise.jsonl import dumps_json
from turnwise.names import CHECKPOINT_META, WEIGHTS_FILE
from turnwise.tasks import TaskSchema

__all__ = ["ENCODERS", "OBJECTIVES", "TrainConfig", "TrainResult", "pick_gold_dialogues", "record_run_facts",
           "train"]


def pick_gold_dialogues(dialogues: Sequence[Dialogue], tasks: Sequence[str], fraction: float, seed: int) -> list[int]:
    """Seeded choice of ``fraction`` of the dialogues that carry gold labels (at least one)."""
    candidates = [i for i, d in enumerate(dialogues) if any(d.labelled(t) for t in tasks)]
    if not candidates:
        return []
    k = max(1, round(fraction * len(candidates)))
    rng = np.random.default_rng([seed, 7919])
    return sorted(rng.choice(candidates, size=k, replace=False).tolist())


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


@dataclass
class Phase:
    name: str  # pretrain | finetune
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


@dataclass
class Progress:
    """What early stopping and resuming need to know about the run so far."""

    step: int = 0
    best: float | None = None
    best_step: int = -1
    bad: int = 0  # validations without improvement
    history: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, score: float, step: int) -> bool:
        """Record a validation score; True if it is the best so far."""
        if self.best is None or score > self.best + 1e-9:
            self.best, self.best_step, self.bad = score, step, 0
            return True
        self.bad += 1
        return False


def _check_positions(cfg: TrainConfig, model: TurnwiseModel) -> None:
    positions = int(getattr(model.encoder.config, "max_position_embeddings", 512))
    if cfg.encoder == "streaming" and cfg.max_context_tokens > positions:
        raise ValueError(f"max_context_tokens {cfg.max_context_tokens} exceeds the backbone's {positions} positions")
    if cfg.encoder == "flat" and cfg.max_tokens > positions:
        raise ValueError(f"max_tokens {cfg.max_tokens} exceeds the backbone's {positions} positions")


class _Run:
    """One training run: the model, its feed, the two phases and the checkpoints it writes."""

    def __init__(self, cfg: TrainConfig, train_dialogues: Sequence[Dialogue], schema: TaskSchema, out: Path,
                 val_dialogues: Sequence[Dialogue] | None, teacher: Any, teacher_info: dict | None):
        self.cfg, self.out, self.schema = cfg, out, schema
        self.window = cfg.window()
        built = build_model(cfg.backbone, schema, pooling=cfg.pooling, seed=cfg.seed)
        self.model, self.tokenizer = built.model, built.tokenizer
        _check_positions(cfg, self.model)
        if cfg.init_from:
            from safetensors.torch import load_file

            self.model.load_state_dict(load_file(str(Path(cfg.init_from) / WEIGHTS_FILE)), strict=True)
        device = resolve_device(cfg.device)
        self.world = distributed.join(device)
        self.device = distributed.rank_device(device, self.world)
        torch.manual_seed(cfg.seed + self.world.rank)  # dropout differs per rank; weights stay equal (DDP)
        self.model.to(self.device)

        gold = pick_gold_dialogues(train_dialogues, schema.names(), cfg.gold_fraction, cfg.seed)
        self.feed = self._feed(train_dialogues, set(gold), teacher)
        self.ranks = rank_set(cfg, self.model, train_dialogues, self.tokenizer, self.world.distributed)
        build = build_spans if self.window.streaming else build_segments
        self.val = build(val_dialogues, schema, self.tokenizer, self.window) if val_dialogues else None
        self.pretrain_steps = self.feed.pretrain_steps()
        epochs = cfg.finetune_epochs
        finetune = self.feed.finetune_steps(epochs) if self.feed.n_finetune_items else 0
        while 0 < finetune < cfg.min_steps:  # a small gold set: more epochs, up to the floor
            epochs += 1
            finetune = self.feed.finetune_steps(epochs)
        self.finetune_steps = finetune if cfg.max_steps is None else min(finetune, cfg.max_steps)
        self.total = self.pretrain_steps + self.finetune_steps
        if self.total == 0:
            raise ValueError("nothing to train: no teacher scores for pretraining and no gold labels for finetuning")
        per_epoch = max(1, finetune // max(1, epochs))  # an epoch's steps, before max_steps cuts
        self.eval_every = cfg.eval_every or per_epoch
        self.meta = {"backbone": cfg.backbone, "encoder": cfg.encoder, "train_config": asdict(cfg),
                     "gold_dialogues": len(gold), "train_dialogues": len(train_dialogues),
                     "teacher": teacher_info or None}
        self.rates: dict[str, list[float]] = {"pretrain": [], "finetune": []}
        self.progress = Progress()
        self.phase: Phase | None = None
        self.bf16 = False

    def _feed(self, dialogues: Sequence[Dialogue], gold: set[int], teacher: Any) -> FlatFeed | SpanFeed:
        cfg, world = self.cfg, self.world
        use_teacher = teacher if cfg.objective != "none" else None
        args = (cfg, gold, cfg.objective != "none", self.tokenizer.pad_token_id)
        if self.window.streaming:
            spans = build_spans(dialogues, self.schema, self.tokenizer, self.window, teacher=use_teacher)
            return SpanFeed(spans, *args, rank=world.rank, world=world.size)
        seg = build_segments(dialogues, self.schema, self.tokenizer, self.window, teacher=use_teacher)
        return FlatFeed(seg, *args, rank=world.rank, world=world.size)

    # --- precision, phases, state -----------------------------------------------------------------
    def choose_precision(self) -> None:
        """bf16 autocast only where it measures faster on this machine (rank 0 decides for all)."""
        cfg = self.cfg
        timings = measure_precision(self.model, self.feed.probe_batch(self.device)) if cfg.precision == "auto" else {}
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and timings["bf16"] < timings["fp32"])
        self.bf16 = bool(self.world.broadcast(float(bf16)))

    def make_phase(self, name: str) -> Phase:
        cfg = self.cfg
        if name == "pretrain":
            head_lr = cfg.pretrain_lr if cfg.pretrain_head_lr is None else cfg.pretrain_head_lr
            opt = make_optimizer(self.model, cfg.pretrain_lr, head_lr, cfg.weight_decay)
            return Phase(name, opt, make_scheduler(opt, self.pretrain_steps, cfg.warmup_ratio))
        opt = make_optimizer(self.model, cfg.finetune_lr, cfg.head_lr, cfg.weight_decay)
        return Phase(name, opt, make_scheduler(opt, max(1, self.finetune_steps), cfg.warmup_ratio))

    def saved_state(self) -> dict[str, Any] | None:
        """``state/last.pt`` of an earlier run with the same configuration, if there is one."""
        state = load_training_state(self.out)
        if state is None:
            return None
        state["config"].setdefault("encoder", "flat")  # states written before the streaming encoder
        saved = TrainConfig.from_dict(state["config"])
        same = all(getattr(saved, f.name) == getattr(self.cfg, f.name) for f in fields(self.cfg)
                   if f.name not in TrainConfig.RESUMABLE_CHANGES)
        if not same:
            raise ValueError(f"{self.out} holds a run with a different configuration; use another --out or delete it")
        return state

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from a saved state: weights, progress, every rank's RNG, the phase's optimizer."""
        self.model.load_state_dict(state["model"])
        self.progress = Progress(state["step"], state["best"], state["best_step"], state["bad"], state["history"])
        ranks = state.get("torch_rng_ranks") or []
        torch.set_rng_state(ranks[self.world.rank] if len(ranks) == self.world.size else state["torch_rng"])
        cuda = state.get("cuda_rng_ranks") or []
        if self.device.type == "cuda" and len(cuda) == self.world.size and cuda[self.world.rank] is not None:
            torch.cuda.set_rng_state(cuda[self.world.rank], self.device)
        if not state.get("finished"):
            self.phase = self.make_phase(state["phase"])
            self.phase.optimizer.load_state_dict(state["optimizer"])
            self.phase.scheduler.load_state_dict(state["scheduler"])

    def throughput(self) -> dict[str, float]:
        return {f"{k}_turns_per_s": float(np.median(v)) for k, v in self.rates.items() if v}

    def save_state(self, finished: bool = False) -> None:
        assert self.phase is not None
        rng_ranks = self.world.gather(torch.get_rng_state())  # each rank's dropout stream, for an exact resume
        cuda_ranks = self.world.gather(torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        if self.world.main:
            p = self.progress
            save_training_state(self.out, {
                "config": asdict(self.cfg), "model": self.model.state_dict(),
                "optimizer": self.phase.optimizer.state_dict(), "scheduler": self.phase.scheduler.state_dict(),
                "phase": self.phase.name, "step": p.step, "best": p.best, "best_step": p.best_step, "bad": p.bad,
                "history": p.history, "torch_rng": rng_ranks[0], "torch_rng_ranks": rng_ranks,
                "cuda_rng_ranks": cuda_ranks,
                "finished": finished, "precision": "bf16" if self.bf16 else "fp32", "throughput": self.throughput(),
            })
        self.world.barrier()

    def save_best(self, metrics: dict[str, Any] | None) -> None:
        if self.world.main:
            save_checkpoint(self.out, self.model, self.tokenizer, self.window,
                            {**self.meta, "step": self.progress.step, "metrics": metrics or {}})

    def validate(self) -> tuple[float, dict[str, Any] | None]:
        metrics = None
        if self.world.main:
            assert self.val is not None
            logits = predict_rows(self.model, self.val, self.tokenizer.pad_token_id, bf16=self.bf16)
            metrics = compute_metrics(self.schema, self.val, logits, select=self.cfg.select_metric)
        return self.world.broadcast(metrics["score"] if metrics else 0.0), metrics

    # --- the loop ---------------------------------------------------------------------------------
    def step(self, net: torch.nn.Module) -> dict[str, Any]:
        """One optimizer step of the current phase; returns its history record."""
        assert self.phase is not None
        cfg, feed, step = self.cfg, self.feed, self.progress.step
        self.model.train()
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, step])
        if self.phase.name == "pretrain":
            batch = feed.pretrain_batch(step, rng)
        else:
            batch = feed.finetune_batch(step - self.pretrain_steps)
        with autocast(self.bf16, self.device):
            logits, rows = feed.forward(net, self.model.task_names, batch, self.device)
        if self.phase.name == "pretrain":
            loss, n_items = objective_loss(logits, feed.data, rows, cfg, rng)
        else:
            loss, n_items = finetune_loss(logits, feed.data, rows)
            loss = add_rank_loss(loss, self.model, self.ranks, cfg, rng, self.tokenizer, self.bf16)
        if self.world.distributed:
            # Every rank must run backward (the gradient all-reduce) even where its batch gave no loss,
            # and every head must take part: a zero-weighted sum of all logits does both.
            tie = torch.stack([v.float().sum() for v in logits.values()]).sum() * 0.0
            loss = tie if loss is None else loss + tie
        opt = self.phase.optimizer
        opt.zero_grad(set_to_none=True)
        if loss is not None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            opt.step()
        self.phase.scheduler.step()
        self.rates[self.phase.name].append(len(rows) / (time.perf_counter() - t0))
        self.progress.step += 1
        return {"step": self.progress.step, "phase": self.phase.name,
                "loss": float(loss.detach()) if loss is not None else 0.0, "items": n_items}

    def after_step(self, record: dict[str, Any]) -> bool:
        """Validation, checkpoint and early stopping after a step; True when the run should stop."""
        step, p = self.progress.step, self.progress
        at_phase_end = step in (self.pretrain_steps, self.total)
        if record["phase"] == "finetune" and ((step - self.pretrain_steps) % self.eval_every == 0 or at_phase_end):
            if self.val is not None and len(self.val):
                score, metrics = self.validate()
                record["val"] = score
                if p.observe(score, step):
                    self.save_best(metrics)
                else:
                    # the floor, as a cap (max_steps) below it wins: such a run goes to the cap
                    return p.bad >= self.cfg.patience and step - self.pretrain_steps >= self.cfg.min_steps
            else:
                p.best_step = step
                self.save_best(None)
        elif record["phase"] == "pretrain" and at_phase_end and self.finetune_steps == 0:
            self.save_best(None)
        return False

    def run(self, progress: ProgressFn | None) -> TrainResult:
        state = self.saved_state()
        if state is not None and state.get("finished"):
            distributed.leave(self.world)
            return TrainResult(self.out, state["best"], state["best_step"], state["step"],
                               state.get("throughput", {}), state.get("precision", ""), state["history"],
                               state["step"])
        self.choose_precision()  # before the saved RNG is restored: the measurement draws dropout masks
        resumed = None
        if state is not None:
            self.resume(state)
            resumed = self.progress.step
        net = distributed.wrap(self.model, self.world)
        stop = False
        while self.progress.step < self.total and not stop:
            phase = "pretrain" if self.progress.step < self.pretrain_steps else "finetune"
            if self.phase is None or self.phase.name != phase:
                self.phase = self.make_phase(phase)
            record = self.step(net)
            stop = self.after_step(record)
            self.progress.history.append(record)
            if progress and self.world.main:
                shown = {"loss": record["loss"], **({"val": record["val"]} if "val" in record else {})}
                progress(phase, self.progress.step, self.total, shown)
            step = self.progress.step
            if step % self.cfg.save_every == 0 or step == self.total or stop:
                self.save_state(finished=step == self.total or stop)
        if self.phase is not None:
            self.save_state(finished=True)
        # The DDP wrapper goes first, while the process group is alive: freed after it, its reducer
        # would hold the group's last reference and tear gloo down with the GIL held, deadlocking with
        # gloo's own thread (seen as a rank that finished but never exited).
        del net
        self._record_world()
        distributed.leave(self.world)
        p = self.progress
        return TrainResult(self.out, p.best, p.best_step, p.step, self.throughput(),
                           "bf16" if self.bf16 else "fp32", p.history, resumed)

    def _record_world(self) -> None:
        """Rank 0 writes the world the run trained in and every rank's final weight digest into the meta."""
        if not self.world.distributed:
            return
        digests = self.world.gather(distributed.weights_digest(self.model))
        if self.world.main:
            p = self.out / CHECKPOINT_META
            meta = json.loads(p.read_text(encoding="utf-8"))
            meta["distributed"] = {"world_size": self.world.size, "backend": self.world.backend,
                                   "weight_sha256": digests}
            p.write_text(dumps_json(meta, indent=2), encoding="utf-8")


def objective_loss(logits: Any, data: Any, rows: np.ndarray, cfg: TrainConfig,
                   rng: np.random.Generator) -> tuple[torch.Tensor | None, int]:
    """A pretraining batch's loss; ``pairwise+pointwise`` = its pairwise term + w x its pointwise term."""
    if cfg.objective != "pairwise+pointwise":
        return pretrain_loss(logits, data, rows, cfg, rng)
    pair, n_pairs = pretrain_loss(logits, data, rows, replace(cfg, objective="pairwise"), rng)
    point, _ = pretrain_loss(logits, data, rows, replace(cfg, objective="pointwise"), rng)
    return combine_pairwise_pointwise(pair, point, cfg.pointwise_weight), n_pairs


def train(cfg: TrainConfig, train_dialogues: Sequence[Dialogue], schema: TaskSchema, out_dir: str | Path, *,
          val_dialogues: Sequence[Dialogue] | None = None, teacher: Any = None, teacher_info: dict | None = None,
          progress: ProgressFn | None = None) -> TrainResult:
    """Run pretraining (if teacher scores and an objective) and finetuning; write the checkpoint.

    Under ``torchrun`` every rank calls this with the same arguments; rank 0 writes the checkpoint.
    """
    run = _Run(cfg, train_dialogues, schema.select(cfg.tasks), Path(out_dir), val_dialogues, teacher, teacher_info)
    return run.run(progress)


def record_run_facts(out_dir: str | Path, result: TrainResult) -> None:
    """Add measured throughput and the chosen precision to the checkpoint's metadata."""
    p = Path(out_dir) / CHECKPOINT_META
    if not p.exists():
        return
    meta = json.loads(p.read_text(encoding="utf-8"))
    meta["throughput"] = result.throughput
    meta["precision"] = result.precision
    meta["best_step"] = result.best_step
    p.write_text(dumps_json(meta, indent=2), encoding="utf-8")
