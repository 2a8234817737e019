"""The few-shot teacher: a real offline teacher whose errors come from the text, built from a gold pool.

Model: all-MiniLM-L6-v2 (the ``minilm`` backbone, shipped in a wheel: no network) as a sentence encoder
(:class:`trainer.teachers.encoder_runtime.Encoder`: mean pooling over tokens, L2 normalisation).

Shots: for every class c of a task, k = ``shots`` turns labelled c are drawn (seeded by (seed, task))
from the *gold pool* given to the teacher -- and from nothing else: the dialogues being labelled
contribute their text only, never their labels. A class without any turn in the pool gets no votes
(listed in ``summary()["missing_classes"]``).

Each turn i (of a shot or of a dialogue to label) is embedded with its context as

    e_i = normalise((1 - w) * E(text_i) + w * E(window_i))

where ``window_i`` is the turn with ``context_turns`` earlier turns rendered by the student's formatter
and w = ``context_weight``. Class similarity:

- ``prototype``: sim_{i,c} = cos(e_i, p_c), p_c = normalise(mean of the class's shot embeddings);
- ``knn``: sim_{i,c} = mean of the ``neighbours`` largest cos(e_i, e_s) over the class's shots s.

Votes: N draws from softmax((``scale`` * sim_i + log pi) / ``temperature``), where pi_c is class c's share
of the pool's labelled turns (add-one smoothed; ``prior=False`` drops it): a higher temperature spreads
the votes, a lower one concentrates them on the nearest class; S_i^c is the fraction of votes for c.
Multilabel tasks vote per class with probability sigmoid(scale * (sim_c - mean_c sim) / temperature).
Votes come from a generator seeded by (seed, dialogue_id, task), so a dialogue's scores depend only on
the dialogue, the pool and the configuration.

Like an LLM prompted with k examples per class, its mistakes follow what the text looks like (a
question-shaped directive is called a question), so they are shared by similar turns and dialogues --
the error structure the pairwise objective is meant to cancel, which the simulated teacher lacks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer.teachers.cache import EmbeddingCache
from trainer.teachers.encoder_runtime import Encoder
from trainer.teachers.scores import ProgressFn, ScoreRecord, make_record, votes_to_bitmask
from trainer.teachers.zeroshot import MODEL_NAME, embed_cached, turn_texts
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.tasks import Task, TaskSchema, TaskType

METHODS = ("prototype", "knn")


@dataclass(frozen=True)
class FewshotConfig:
    # Labelled turns per class drawn from the gold pool. MiniLM separates speech acts weakly: on the
    # DailyDialog validation split (pool: 40 training dialogues) argmax accuracy was 0.28 with 8 shots,
    # 0.42 with 32, and 0.49 with 32 and the class prior.
    shots: int = 32
    method: str = "prototype"  # prototype | knn
    neighbours: int = 3  # knn: nearest shots of a class averaged
    prior: bool = True  # add the log class shares of the pool's labelled turns to the logits
    temperature: float = 1.0
    scale: float = 20.0  # MiniLM cosines sit in a narrow band; this turns their differences into logits
    context_turns: int = 1
    context_weight: float = 0.3
    max_tokens: int = 128
    batch_size: int = 64
    seed: int = 0
    backend: str = "auto"  # encoder runtime: auto (ONNX Runtime, else PyTorch), onnx, torch

    def __post_init__(self) -> None:
        if self.shots < 1 or self.neighbours < 1:
            raise ValueError("fewshot shots and neighbours must be >= 1")
        if self.method not in METHODS:
            raise ValueError(f"fewshot method must be one of {METHODS}")
        if self.temperature <= 0:
            raise ValueError("fewshot temperature must be > 0")
        if not 0 <= self.context_weight <= 1 or self.context_turns < 0:
            raise ValueError("context_weight must be in [0, 1] and context_turns >= 0")


def _rng(*parts: Any) -> np.random.Generator:
    h = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _has(value: Any, label: str) -> bool:
    return value == label if isinstance(value, str) else label in (value or [])


def choose_shots(pool: Sequence[Dialogue], name: str, task: Task, k: int,
                 seed: int) -> dict[str, list[tuple[int, int]]]:
    """Per class: up to ``k`` (dialogue index in ``pool``, turn index) labelled with it, drawn seeded."""
    out: dict[str, list[tuple[int, int]]] = {}
    for lab in task.labels:
        cands = [(di, ti) for di, d in enumerate(pool) for ti, t in enumerate(d.turns)
                 if name in t.labels and _has(t.labels[name], lab)]
        if len(cands) > k:
            pick = _rng(seed, "shots", name, lab).choice(len(cands), size=k, replace=False)
            cands = [cands[i] for i in sorted(pick.tolist())]
        out[lab] = cands
    return out


def class_similarity(q: np.ndarray, shot_emb: list[np.ndarray], method: str, neighbours: int) -> np.ndarray:
    """(L, H) query embeddings, per class a (k_c, H) array of shots -> (L, C) similarities (NaN: no shot)."""
    sims = np.full((q.shape[0], len(shot_emb)), np.nan, dtype=np.float64)
    for c, s in enumerate(shot_emb):
        if len(s) == 0:
            continue
        if method == "prototype":
            p = s.mean(axis=0)
            sims[:, c] = q @ (p / max(float(np.linalg.norm(p)), 1e-12))
        else:
            cos = np.sort(q @ s.T, axis=1)[:, ::-1][:, :neighbours]  # (L, m) the nearest shots
            sims[:, c] = cos.mean(axis=1)
    return sims


def class_prior(pool: Sequence[Dialogue], name: str, task: Task) -> np.ndarray:
    """(C,) add-one smoothed shares of the pool's turns labelled with each class."""
    counts = np.ones(len(task.labels))
    for d in pool:
        for t in d.turns:
            if name in t.labels:
                counts += [_has(t.labels[name], lab) for lab in task.labels]
    return counts / counts.sum()


def sample_votes(sims: np.ndarray, n_votes: int, cfg: FewshotConfig, multilabel: bool,
                 rng: np.random.Generator, bias: np.ndarray | None = None) -> np.ndarray:
    """(L, C) similarities (NaN = a class without shots), ``bias`` (C,) added to the logits before the
    temperature -> (L, N) votes (multilabel: bitmasks)."""
    missing = np.isnan(sims)
    logits = (cfg.scale * np.nan_to_num(sims, nan=0.0) + (0.0 if bias is None else bias)) / cfg.temperature
    if multilabel:
        known = np.where(missing, np.nan, logits)
        z = logits - np.nanmean(known, axis=-1, keepdims=True)
        p_on = np.where(missing, 0.0, 1.0 / (1.0 + np.exp(-z)))  # (L, C)
        on = rng.random((sims.shape[0], n_votes, sims.shape[1])) < p_on[:, None, :]
        return votes_to_bitmask(on)
    z = np.where(missing, -np.inf, logits)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((sims.shape[0], n_votes, 1))
    votes = (np.cumsum(p, axis=-1)[:, None, :] < u).sum(axis=-1)
    return np.minimum(votes, sims.shape[1] - 1).astype(np.int64)


class FewshotTeacher:
    kind = "fewshot"
    CHUNK = 2048  # texts encoded between two cache writes

    def __init__(self, gold_pool: Sequence[Dialogue], config: FewshotConfig | None = None,
                 cache_path: str | Path | None = None, backbone: str = "minilm", encoder: Encoder | None = None):
        self.cfg = config or FewshotConfig()
        self.pool = [d for d in gold_pool if d.turns]
        self.backbone = backbone
        self.encoder = encoder or Encoder.shared(backbone, self.cfg.max_tokens, self.cfg.batch_size, self.cfg.backend)
        self.cache = EmbeddingCache(cache_path, model=backbone)
        self.stats: dict[str, Any] = {"texts_encoded": 0, "texts_from_cache": 0}
        self.shots_used: dict[str, dict[str, int]] = {}
        self.missing: dict[str, list[str]] = {}

    def with_pool(self, gold_pool: Sequence[Dialogue], seed: int | None = None) -> FewshotTeacher:
        """The same teacher (configuration, encoder, embedding cache) drawing its shots from another pool,
        with another ``seed`` for its shots and votes when given."""
        cfg = self.cfg if seed is None else replace(self.cfg, seed=seed)
        other = FewshotTeacher(gold_pool, cfg, backbone=self.backbone, encoder=self.encoder)
        other.cache, other.stats = self.cache, self.stats
        return other

    def embed(self, texts: Sequence[str], progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
        return embed_cached(self.encoder, self.cache, self.stats, texts, progress, self.CHUNK)

    def _texts(self, d: Dialogue) -> tuple[list[str], list[str]]:
        return turn_texts(d, self.cfg.context_turns, self.cfg.context_weight, self.cfg.max_tokens)

    def _vectors(self, texts: tuple[list[str], list[str]], emb: dict[str, np.ndarray]) -> np.ndarray:
        """(L, H) turn-with-context embeddings of one dialogue."""
        e = np.stack([emb[t] for t in texts[0]]).astype(np.float64)
        if texts[1] is not texts[0]:
            w = self.cfg.context_weight
            e = (1 - w) * e + w * np.stack([emb[t] for t in texts[1]])
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def label(self, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int,
              progress: ProgressFn | None = None) -> list[ScoreRecord]:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        cfg = self.cfg
        for name in schema.names():
            if schema[name].type is TaskType.hierarchical:
                raise DataError(f"the fewshot teacher does not label hierarchical tasks ('{name}')")
        shots = {n: choose_shots(self.pool, n, schema[n], cfg.shots, cfg.seed) for n in schema.names()}
        needed = sorted({di for per in shots.values() for lst in per.values() for di, _ in lst})
        pool_texts = {di: self._texts(self.pool[di]) for di in needed}
        per_dialogue = [self._texts(d) for d in dialogues]
        all_texts = [t for a, b in [*pool_texts.values(), *per_dialogue] for t in (*a, *b)]
        emb = self.embed(all_texts, progress)
        pool_vecs = {di: self._vectors(tx, emb) for di, tx in pool_texts.items()}
        records: list[ScoreRecord] = []
        for name in schema.names():
            task = schema[name]
            dim = self.encoder.hidden_size
            shot_emb = [np.array([pool_vecs[di][ti] for di, ti in shots[name][lab]]).reshape(-1, dim)
                        for lab in task.labels]
            self.shots_used[name] = {lab: len(shots[name][lab]) for lab in task.labels}
            self.missing[name] = [lab for lab in task.labels if not shots[name][lab]]
            multilabel = task.type is TaskType.multilabel
            bias = np.log(class_prior(self.pool, name, task)) if cfg.prior and not multilabel else None
            if len(self.missing[name]) == len(task.labels):
                raise DataError(f"fewshot teacher: the gold pool has no turn labelled for task '{name}'")
            teacher = {"kind": self.kind, "model": MODEL_NAME, "prompts": [],
                       "params": {**asdict(cfg), "samples": samples, "backbone": self.backbone,
                                  "gold_pool_dialogues": len(self.pool), "shots_per_class": self.shots_used[name]}}
            for d, texts in zip(dialogues, per_dialogue, strict=True):
                if not d.turns:
                    continue
                sims = class_similarity(self._vectors(texts, emb), shot_emb, cfg.method, cfg.neighbours)
                votes = sample_votes(sims, samples, cfg, multilabel, _rng(cfg.seed, d.dialogue_id, name), bias)
                records.append(make_record(d.dialogue_id, name, task.labels, task.type, votes, teacher))
        return records

    def summary(self) -> dict[str, Any]:
        return {"encoder": MODEL_NAME, "encoder_backend": self.encoder.backend, "config": asdict(self.cfg),
                "gold_pool_dialogues": len(self.pool), "shots_per_class": self.shots_used,
                "missing_classes": self.missing, **self.stats}

