"""The training configuration: one dataclass, saved with every checkpoint and resumable state."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from trainer.pairs import PairConfig
from turnwise.window import WindowConfig

OBJECTIVES = ("pairwise", "pointwise", "pairwise+pointwise", "none")
SELECT_METRICS = ("accuracy", "macro_f1")  # what early stopping and the best checkpoint compare
ENCODERS = ("streaming", "flat")


@dataclass
class TrainConfig:
    objective: str = "pairwise"
    alpha: float = 0.5  # margin weight of eq. 1-2; 0 = RankNet, 1 = the full teacher gap
    pointwise_weight: float = 0.1  # pairwise+pointwise: weight w of the pointwise term (trainer.losses)
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
    # Finetuning runs at least this many steps -- more epochs over a small gold set -- and early stopping
    # waits for them: a few dozen steps barely move a pretrained encoder off the majority class.
    min_steps: int = 0
    select_metric: str = "accuracy"  # mean over tasks of this validation metric picks the checkpoint
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); auto measures both and keeps the faster
    device: str = "auto"  # auto = CUDA when available, else CPU; or a torch device name ("cpu", "cuda:1")
    save_every: int = 50
    seed: int = 0
    tasks: list[str] | None = None
    init_from: str | None = None  # start from this checkpoint's weights (e.g. a pretrained student)
    # Response ranking (MINT-CL): finetuning adds rank_weight x the ranking loss of rank_batch pairs per
    # step (0 = off; the paper uses 0.3). Needs a hierarchical task: its labels tell intents apart.
    rank_weight: float = 0.0
    rank_batch: int = 16
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}")
        if not 0.0 < self.gold_fraction <= 1.0:
            raise ValueError("gold_fraction must be in (0, 1]")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {SELECT_METRICS}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError("precision must be auto, fp32 or bf16")
        if self.min_steps < 0:
            raise ValueError("min_steps must be >= 0")
        if self.pointwise_weight < 0:
            raise ValueError("pointwise_weight must be >= 0")
        if self.rank_weight < 0 or self.rank_batch < 1:
            raise ValueError("rank_weight must be >= 0 and rank_batch >= 1")
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
