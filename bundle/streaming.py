"""The turn-causal *step* graph's inputs and a call's cached state: torch-free, shared by the exporter's
parity check and the service, so both run a dialogue through the graph in exactly the same way.

The step graph (``turn-causal-v1`` bundles) takes

- ``input_ids`` (B, N) int64: the new tokens (one turn for an incremental step; a whole span of
  turns for a rebuild), right-padded;
- ``position_ids`` (B, N) int64: their positions in the span (the cached length + 0..N-1);
- ``attention_mask`` (B, N, P + N) int64: which cached and new tokens each new token may see;
- ``past_kv`` (B, P, L, 2, hidden) float32: the cached keys and values, token-major so a call's
  cache is one growing buffer whose first P rows are passed as they are (no copy for B = 1);

and returns ``logits_<task>`` (B, N, C) for every new token (a turn's logits are those of its tag,
the turn's first token) and ``new_kv`` (B, N, L, 2, hidden), the keys/values of the new tokens.
No token sees a later turn, so the cached keys/values never change and a step gives the numbers a
full pass over the span gives (the parity record of each variant measures it).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STEP_INPUTS = ("input_ids", "position_ids", "attention_mask", "past_kv")
NEW_KV = "new_kv"


def kv_row_shape(architecture: dict[str, Any]) -> tuple[int, int, int]:
    """(L, 2, hidden): the cached keys/values of one token."""
    return int(architecture["num_layers"]), 2, int(architecture["hidden_size"])


@dataclass
class CallState:
    """A call's cached span: keys/values of its tokens, the turns they hold, the last turn's logits.

    ``keys`` identify the turns (the service uses (seq, digest of speaker + text), so a state never
    matches another call that re-used the id); ``kv`` is a buffer with spare rows (grown by a quarter,
    never past ``max_rows``); ``kv[:length]`` is the state.
    """

    anchor_seq: int  # seq of the span's first turn
    keys: list[Hashable]  # every turn in the span, oldest first
    kv: np.ndarray  # (capacity, L, 2, hidden) float32
    length: int  # tokens cached
    last_logits: dict[str, np.ndarray] = field(default_factory=dict)  # task -> (C,) of keys[-1]
    max_rows: int | None = None

    @property
    def nbytes(self) -> int:
        return int(self.kv.nbytes)

    def past(self) -> np.ndarray:
        return self.kv[: self.length]

    def extend(self, new_kv: np.ndarray, key: Hashable, logits: dict[str, np.ndarray]) -> None:
        """Append one turn's keys/values (N, L, 2, hidden)."""
        need = self.length + len(new_kv)
        if need > len(self.kv):
            grow = len(self.kv) + max(32, len(self.kv) // 4)  # x1.25: the cache budget is bytes held
            rows = max(need, min(grow, self.max_rows or grow))
            grown = np.empty((rows, *self.kv.shape[1:]), dtype=self.kv.dtype)
            grown[: self.length] = self.kv[: self.length]
            self.kv = grown
        self.kv[self.length : need] = new_kv
        self.length = need
        self.keys.append(key)
        self.last_logits = logits

    @classmethod
    def fresh(cls, anchor_seq: int, keys: Sequence[Hashable], kv: np.ndarray, logits: dict[str, np.ndarray],
              spare: int = 32, max_rows: int | None = None) -> CallState:
        """A state holding ``kv`` (T, L, 2, hidden) of a whole span, with ``spare`` rows to grow into."""
        rows = len(kv) + spare if max_rows is None else max(len(kv), min(len(kv) + spare, max_rows))
        buf = np.empty((rows, *kv.shape[1:]), dtype=np.float32)
        buf[: len(kv)] = kv
        return cls(anchor_seq=anchor_seq, keys=list(keys), kv=buf, length=len(kv), last_logits=logits,
                   max_rows=max_rows)


@dataclass
class StepRequest:
    """One row of a step batch: new turns (``turns``: their token ids) after ``past`` cached tokens.

    An incremental step is one turn over a call's cache; a rebuild is every turn of a span over
    nothing. Inside the new tokens a token sees its own turn and the earlier ones (turn-causal).
    """

    turns: list[list[int]]
    past: np.ndarray  # (P, L, 2, hidden)

    @property
    def n_new(self) -> int:
        return sum(len(t) for t in self.turns)

    def __len__(self) -> int:  # what a micro-batch's token budget counts: the new tokens
        return self.n_new

    def tag_positions(self) -> np.ndarray:
        """Index of each new turn's tag token among the new tokens."""
        return np.concatenate([[0], np.cumsum([len(t) for t in self.turns])[:-1]]).astype(np.int64)


def step_feed(requests: Sequence[StepRequest], kv_shape: tuple[int, int, int], pad_id: int) -> dict[str, np.ndarray]:
    """The step graph's inputs for a batch of requests: new tokens right-padded, pasts right-padded,
    both masked. For a single request the past is passed without a copy."""
    b = len(requests)
    n = max(r.n_new for r in requests)
    p = max(len(r.past) for r in requests)
    ids = np.full((b, n), pad_id, dtype=np.int64)
    pos = np.zeros((b, n), dtype=np.int64)
    mask = np.zeros((b, n, p + n), dtype=np.int64)
    single = b == 1
    past = requests[0].past[None] if single else np.zeros((b, p, *kv_shape), dtype=np.float32)
    for i, r in enumerate(requests):
        k, lengths = len(r.past), [len(t) for t in r.turns]
        m = sum(lengths)
        ids[i, :m] = [tok for t in r.turns for tok in t]
        pos[i, :m] = np.arange(k, k + m)
        if not single:
            past[i, :k] = r.past
        turn = np.repeat(np.arange(len(lengths)), lengths)
        mask[i, :m, :k] = 1  # every new token sees the whole cache
        mask[i, :m, p : p + m] = turn[None, :] <= turn[:, None]  # and the new turns up to its own
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask, "past_kv": past}


def split_outputs(requests: Sequence[StepRequest], logits: dict[str, np.ndarray],
                  new_kv: np.ndarray) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Per request: ({task: (turns, C)} logits at each new turn's tag, its new keys/values (N, L, 2, hidden))."""
    out = []
    for i, r in enumerate(requests):
        tags = r.tag_positions()
        out.append(({t: v[i, tags] for t, v in logits.items()}, new_kv[i, : r.n_new]))
    return out


def span_start_from(lengths: Sequence[int], anchor: int, window: Any) -> int:
    """Where the newest turn's span starts, replaying the span rule over every turn after ``anchor``
    (a span start recorded for some earlier turn): the answer :func:`turnwise.window.plan_spans`
    gives, even when turns after the anchor were never scored (a timed-out turn, another replica)."""
    from turnwise.window import span_start

    start = anchor
    for i in range(anchor + 1, len(lengths)):
        start = span_start(lengths[: i + 1], start, window)
    return start


def plan_turn(state: CallState | None, keys: Sequence[Hashable], turn_ids: Sequence[list[int]], anchor: int,
              window: Any, kv_shape: tuple[int, int, int]) -> tuple[StepRequest | None, int, str]:
    """What scoring the newest turn of a stored window takes, given the call's cached state (if any).

    ``keys``/``turn_ids``: the window's turns (identities, token ids), oldest first, the new turn
    last; ``anchor``: index in it of a recorded span start. Returns ``(request, start, mode)``:
    ``start`` is the index of the first turn of the new turn's span (:func:`span_start_from`), and

    - ``"cached"``: the state already holds the new turn (a duplicate retry): no request, no change;
    - ``"incremental"``: the state holds exactly the span's earlier turns: encode the new turn only;
    - ``"rebuilt"``: anything else (no state, a re-anchor, a gap): encode the span's turns in one pass.
    """
    start = span_start_from([len(t) for t in turn_ids], anchor, window)
    span = list(keys[start:])
    if state is not None:
        if state.keys == span:
            return None, start, "cached"
        if state.keys == span[:-1]:
            return StepRequest([list(turn_ids[-1])], state.past()), start, "incremental"
    empty = np.zeros((0, *kv_shape), dtype=np.float32)
    return StepRequest([list(t) for t in turn_ids[start:]], empty), start, "rebuilt"


def advance(state: CallState | None, mode: str, keys: Sequence[Hashable], start: int, anchor_seq: int,
            logits: dict[str, np.ndarray], new_kv: np.ndarray, max_rows: int | None = None) -> CallState:
    """The call's state after a step: ``logits`` {task: (turns, C)} and ``new_kv`` from :func:`split_outputs`;
    ``anchor_seq`` is the seq of ``keys[start]``."""
    last = {t: v[-1] for t, v in logits.items()}
    if mode == "incremental" and state is not None:
        state.extend(new_kv, keys[-1], last)
        return state
    return CallState.fresh(anchor_seq, list(keys[start:]), new_kv, last, max_rows=max_rows)
