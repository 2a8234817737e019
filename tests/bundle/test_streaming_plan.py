"""The service's step decisions (bundle.streaming) against the span rule and against unbatched steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bundle.loader import load_bundle
from bundle.streaming import CallState, StepRequest, plan_turn, span_start_from
from turnwise.window import WindowConfig, plan_spans

WINDOW = WindowConfig.turn_causal(64, 32)


def test_the_span_start_from_any_recorded_anchor_is_the_planned_one() -> None:
    """Whichever earlier turn recorded its span start last (turns after it never scored: a timeout,
    another replica), replaying the rule from it gives the span plan_spans gives the new turn."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = [int(x) for x in rng.integers(1, 40, size=int(rng.integers(2, 30)))]
        spans = plan_spans(lengths, WINDOW)
        start_of = {t: s.start for s in spans for t in range(s.first, s.end)}
        for t in range(len(lengths)):
            u = int(rng.integers(0, t + 1))  # the last turn whose anchor was recorded
            assert span_start_from(lengths[: t + 1], start_of[u], WINDOW) == start_of[t], (lengths, u, t)


def test_a_state_of_other_turns_is_never_extended() -> None:
    kv = np.zeros((5, 1, 2, 4), dtype=np.float32)
    ids = [[1, 2], [3], [4, 5]]
    state = CallState.fresh(0, [(0, "a"), (1, "b")], kv[:3], {})
    assert plan_turn(state, [(0, "a"), (1, "b"), (2, "c")], ids, 0, WINDOW, (1, 2, 4))[2] == "incremental"
    assert plan_turn(state, [(0, "a"), (1, "b")], ids[:2], 0, WINDOW, (1, 2, 4))[2] == "cached"
    # same seqs, other text (a call id re-used after the first call ended): rebuilt from the window
    assert plan_turn(state, [(0, "a"), (1, "X"), (2, "c")], ids, 0, WINDOW, (1, 2, 4))[2] == "rebuilt"


def test_state_buffers_never_grow_past_the_span() -> None:
    state = CallState.fresh(0, [0], np.zeros((10, 1, 2, 4), np.float32), {}, spare=2, max_rows=16)
    for k in range(1, 4):
        state.extend(np.ones((2, 1, 2, 4), np.float32), k, {})
    assert state.length == 16 and len(state.kv) == 16 and (state.past()[10:] == 1).all()


@pytest.fixture(scope="module")
def stream_bundle(tiny_stream_bundle: Path):
    return load_bundle(tiny_stream_bundle, variant="fp32")


def test_batched_steps_equal_steps_one_at_a_time(stream_bundle) -> None:
    """Calls with different cached lengths (and a rebuild) in one model call: padded pasts and new
    tokens are masked, so every row is what it would be alone."""
    rng = np.random.default_rng(1)
    vocab = len(stream_bundle.tokenizer)
    turns = [[int(x) for x in rng.integers(1000, vocab, size=n)] for n in (7, 3, 12, 5, 9)]
    _, past = stream_bundle.step([stream_bundle.rebuild_request(turns[:3])])[0]
    requests = [StepRequest([turns[3]], past[:7]), StepRequest([turns[4]], past),
                StepRequest([turns[3], turns[4]], past[:0]), StepRequest([turns[1]], past[:10])]
    together = stream_bundle.step(requests)
    for request, (logits, new_kv) in zip(requests, together, strict=True):
        (alone_logits, alone_kv), = stream_bundle.step([request])
        np.testing.assert_allclose(new_kv, alone_kv, atol=1e-5)
        for task, value in alone_logits.items():
            np.testing.assert_allclose(logits[task], value, atol=1e-5)
