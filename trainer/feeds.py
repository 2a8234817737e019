"""What every optimizer step feeds the model: the batch plan of a run, flat or streaming.

A feed owns the training rows (one per turn: gold targets, teacher scores) and decides, from the
seed and the step number alone, which batch a step sees -- so a resumed run continues with exactly
the batches it would have had. Under ``torchrun`` each rank plans on its own shard of the dialogues
(dialogue index modulo the world size); every rank computes every rank's plan, so the number of
steps per epoch (the largest shard's) is agreed without communication, and smaller shards wrap.

- :class:`FlatFeed`: one segment (window) per scored turn; finetuning batches of ``batch_size``
  gold segments; pretraining batches of ``pretrain_dialogues`` dialogues x ``pretrain_segments``.
- :class:`SpanFeed`: turn-causal spans, one forward pass per span gives the logits of every turn in
  it; batches are cut by a budget of padded tokens (:func:`trainer.spans.pack_by_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from trainer.segments import SegmentSet, collate
from trainer.spans import SpanSet, collate_spans, pack_by_tokens

Logits = dict[str, torch.Tensor]


def _forward(net: Any, task_names: Sequence[str], batch: dict[str, torch.Tensor]) -> Logits:
    return dict(zip(task_names, net(**batch), strict=True))


class FlatFeed:
    def __init__(self, seg: SegmentSet, cfg: Any, gold_dialogues: set[int], pretrain: bool, pad_id: int,
                 rank: int = 0, world: int = 1):
        self.data, self.cfg, self.pad_id, self.rank, self.world = seg, cfg, pad_id, rank, world
        names = seg.schema.names()
        has_gold = np.zeros(len(seg), dtype=bool)
        for n in names:
            has_gold |= seg.has_gold(n)
        dlg = np.asarray(seg.dialogue, dtype=np.int64)
        in_gold = np.isin(dlg, np.fromiter(gold_dialogues, dtype=np.int64, count=len(gold_dialogues)))
        ft = np.flatnonzero(in_gold & has_gold)
        self.ft_shards = [ft[dlg[ft] % world == r] for r in range(world)]
        groups = seg.by_dialogue()
        self.groups = groups
        pre = [d for d, idx in groups.items() if pretrain and any(seg.has_teacher(n)[idx].any() for n in names)]
        self.pre_shard = [d for d in pre if d % world == rank]
        self.has_pretrain = bool(pre)
        self.steps_per_epoch = max((math.ceil(len(s) / cfg.batch_size) for s in self.ft_shards), default=0)

    @property
    def n_finetune_items(self) -> int:
        return int(sum(len(s) for s in self.ft_shards))

    def pretrain_steps(self) -> int:
        return self.cfg.pretrain_steps if self.has_pretrain else 0

    def finetune_steps(self, epochs: int | None = None) -> int:
        """Finetuning steps of ``epochs`` epochs over the gold turns (default: the config's)."""
        return self.steps_per_epoch * (self.cfg.finetune_epochs if epochs is None else epochs)

    def pretrain_batch(self, step: int, rng: np.random.Generator) -> np.ndarray:
        cfg, pre = self.cfg, self.pre_shard or [d for d in self.groups]  # an empty shard re-uses all dialogues
        chosen = rng.choice(pre, size=min(cfg.pretrain_dialogues, len(pre)), replace=False)
        return np.concatenate([
            np.sort(rng.choice(self.groups[d], size=min(cfg.pretrain_segments, len(self.groups[d])), replace=False))
            for d in chosen])

    def finetune_batch(self, ft_step: int) -> np.ndarray:
        epoch, pos = divmod(ft_step, self.steps_per_epoch)
        mine = self.ft_shards[self.rank]
        if not len(mine):  # this rank's dialogues have no gold turns: it re-uses the others' (as SpanFeed)
            mine = np.concatenate(self.ft_shards)
        order = np.random.default_rng([self.cfg.seed, 104729, epoch]).permutation(mine)
        n = max(1, math.ceil(len(order) / self.cfg.batch_size))
        pos %= n  # a smaller shard wraps around while the largest finishes its epoch
        return order[pos * self.cfg.batch_size : (pos + 1) * self.cfg.batch_size]

    def probe_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        return collate(self.data, np.arange(min(len(self.data), self.cfg.batch_size)), self.pad_id, device)

    def forward(self, net: Any, task_names: Sequence[str], batch: np.ndarray,
                device: torch.device) -> tuple[Logits, np.ndarray]:
        return _forward(net, task_names, collate(self.data, batch, self.pad_id, device)), batch


class SpanFeed:
    def __init__(self, spans: SpanSet, cfg: Any, gold_dialogues: set[int], pretrain: bool, pad_id: int,
                 rank: int = 0, world: int = 1):
        self.data, self.cfg, self.pad_id, self.rank, self.world = spans, cfg, pad_id, rank, world
        names = spans.schema.names()
        has_gold = np.zeros(len(spans), dtype=bool)
        has_teacher = np.zeros(len(spans), dtype=bool)
        for n in names:
            has_gold |= spans.has_gold(n)
            has_teacher |= spans.has_teacher(n)
        dlg_rows = np.asarray(spans.dialogue, dtype=np.int64)
        gold_rows = has_gold & np.isin(dlg_rows, np.fromiter(gold_dialogues, dtype=np.int64,
                                                             count=len(gold_dialogues)))
        self.lengths = spans.span_lengths()
        span_dlg = np.asarray(spans.span_dialogue, dtype=np.int64)
        ft = spans.spans_with(gold_rows)
        pre = spans.spans_with(has_teacher) if pretrain else np.zeros(0, dtype=np.int64)
        self.has_pretrain = len(pre) > 0
        self.ft_shards = [ft[span_dlg[ft] % world == r] for r in range(world)]
        self.pre_shards = [pre[span_dlg[pre] % world == r] for r in range(world)]
        self.gold_rows = gold_rows
        self._ft_epochs: list[list[list[np.ndarray]]] = []
        self._pre_epochs: list[list[list[np.ndarray]]] = []

    @property
    def n_finetune_items(self) -> int:
        return int(self.gold_rows.sum())

    def _epoch(self, shards: list[np.ndarray], seed: list[int]) -> list[list[np.ndarray]]:
        """Batches of one epoch for every rank (same seed on every rank: the plans agree)."""
        rng = np.random.default_rng(seed)
        return [pack_by_tokens(self.lengths, rng.permutation(s), self.cfg.token_budget, rng) if len(s) else []
                for s in shards]

    @staticmethod
    def _steps(epoch: list[list[np.ndarray]]) -> int:
        return max((len(b) for b in epoch), default=0)

    def _planned(self, plans: list[list[list[np.ndarray]]], shards: list[np.ndarray], tag: int,
                 e: int) -> list[list[np.ndarray]]:
        """Epoch ``e`` of a phase, planned on first use (epoch k is seeded by k: any count agrees)."""
        while len(plans) <= e:
            plans.append(self._epoch(shards, [self.cfg.seed, tag, len(plans)]))
        return plans[e]

    def _ft_epoch(self, e: int) -> list[list[np.ndarray]]:
        return self._planned(self._ft_epochs, self.ft_shards, 104729, e)

    def _pre_epoch(self, e: int) -> list[list[np.ndarray]]:
        return self._planned(self._pre_epochs, self.pre_shards, 7, e)

    def pretrain_steps(self) -> int:
        if not self.has_pretrain:
            return 0
        if self.cfg.pretrain_epochs:
            return sum(self._steps(self._pre_epoch(e)) for e in range(self.cfg.pretrain_epochs))
        return self.cfg.pretrain_steps

    def finetune_steps(self, epochs: int | None = None) -> int:
        """Finetuning steps of ``epochs`` epochs over the gold spans (default: the config's)."""
        n = self.cfg.finetune_epochs if epochs is None else epochs
        return sum(self._steps(self._ft_epoch(e)) for e in range(n))

    def _at(self, epochs: Any, step: int) -> np.ndarray:
        e = 0
        while True:
            ep = epochs(e)
            n = self._steps(ep)
            if step < n:
                mine = ep[self.rank] or [b for r in ep for b in r]  # an empty shard re-uses the others'
                return mine[step % len(mine)]
            step -= n
            e += 1

    def pretrain_batch(self, step: int, rng: np.random.Generator) -> np.ndarray:
        return self._at(self._pre_epoch, step)

    def finetune_batch(self, ft_step: int) -> np.ndarray:
        return self._at(self._ft_epoch, ft_step)

    def probe_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        first = next((b for r in self._ft_epoch(0) for b in r), None) if self.cfg.finetune_epochs else None
        if first is None:
            first = self.pretrain_batch(0, np.random.default_rng(0))
        return collate_spans(self.data, first, self.pad_id, device)[0]

    def forward(self, net: Any, task_names: Sequence[str], batch: np.ndarray,
                device: torch.device) -> tuple[Logits, np.ndarray]:
        inputs, rows = collate_spans(self.data, batch, self.pad_id, device)
        return _forward(net, task_names, inputs), rows
