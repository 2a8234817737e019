"""The turn-causal streaming encoder: the span rule, the mask, and the equivalence the service relies on.

The reference here is a small incremental encoder written against the BERT layers' own weights: it
encodes one turn at a time, attending to the cached keys/values of the earlier turns of its span, as
the serving step graph will. The span pass the trainer uses must give the same logits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.model import build_model
from trainer.spans import build_spans, collate_spans, pack_by_tokens, turn_causal_mask
from turnwise.dialogue import Dialogue, Turn
from turnwise.window import WindowConfig, plan_spans, span_start, turn_token_ids

WORDS = ("card", "charged", "twice", "refund", "please", "which", "account", "my", "internet", "is", "down",
         "again", "can", "you", "help", "me", "check", "the", "router", "thanks", "okay", "sure")


@pytest.fixture(scope="module")
def built(tiny_backbone, sample_schema):
    b = build_model(str(tiny_backbone), sample_schema, seed=3)
    b.model.eval()
    return b


def random_dialogues(n: int, seed: int, max_turns: int = 14, max_words: int = 24) -> list[Dialogue]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        turns = [Turn(speaker="agent" if t % 2 else "customer",
                      text=" ".join(rng.choice(WORDS, size=int(rng.integers(1, max_words)))))
                 for t in range(int(rng.integers(2, max_turns)))]
        out.append(Dialogue(dialogue_id=f"d{i}", turns=turns))
    return out


# --- the span rule ---------------------------------------------------------------------------------

def test_a_dialogue_that_fits_is_one_span():
    cfg = WindowConfig.turn_causal(100, 40)
    assert plan_spans([10, 20, 30, 40], cfg) == [plan_spans([10, 20, 30, 40], cfg)[0]]
    (span,) = plan_spans([10, 20, 30, 40], cfg)
    assert (span.start, span.first, span.end) == (0, 0, 4)


def test_overflow_reanchors_at_the_earliest_turn_that_fits_the_reanchor_budget():
    cfg = WindowConfig.turn_causal(100, 50)
    lengths = [30, 30, 30, 20, 25, 60]
    # turns 0-2 = 90 fit; + turn 3 (20) = 110 > 100 -> restart at the earliest j with sum(j..3) <= 50: j = 2
    assert span_start(lengths[:4], 0, cfg) == 2
    spans = plan_spans(lengths, cfg)
    assert [(s.start, s.first, s.end) for s in spans] == [(0, 0, 3), (2, 3, 5), (5, 5, 6)]
    # every turn is scored by exactly one span, and no span holds more than max_context_tokens
    scored = [t for s in spans for t in range(s.first, s.end)]
    assert scored == list(range(len(lengths)))
    assert all(sum(lengths[s.start : s.end]) <= cfg.max_context_tokens for s in spans)


def test_span_rule_is_the_same_incrementally_and_over_the_whole_dialogue():
    """The service applies span_start turn by turn; plan_spans must agree for any lengths."""
    rng = np.random.default_rng(0)
    cfg = WindowConfig.turn_causal(64, 24)
    for _ in range(200):
        lengths = rng.integers(1, 25, size=int(rng.integers(1, 30))).tolist()
        start, anchors = 0, []
        for t in range(len(lengths)):
            start = span_start(lengths[: t + 1], start, cfg)
            anchors.append(start)
        planned = {t: s.start for s in plan_spans(lengths, cfg) for t in range(s.first, s.end)}
        assert anchors == [planned[t] for t in range(len(lengths))]


def test_a_long_turn_is_truncated_from_the_left_and_keeps_its_tag(built):
    tok = built.tokenizer
    cfg = WindowConfig.turn_causal(64, 16)
    long = " ".join(f"w{i}" for i in range(40)) + " newest"
    ids = turn_token_ids([{"speaker": "customer", "text": long}, {"speaker": "agent", "text": "ok"}], tok, cfg)
    assert len(ids[0]) == 16 and len(ids[1]) < 16
    toks = tok.convert_ids_to_tokens(ids[0])
    assert toks[0] == "[usr]" and toks[-1] == "newest"
    assert tok.convert_ids_to_tokens(ids[1])[0] == "[sys]"


def test_window_config_validates_and_round_trips():
    cfg = WindowConfig.turn_causal(256)
    assert cfg.reanchor_tokens == 128 and cfg.streaming
    assert WindowConfig.from_dict(cfg.to_dict()) == cfg
    assert set(cfg.to_dict()) == {"format", "max_context_tokens", "reanchor_tokens"}
    assert set(WindowConfig().to_dict()) == {"max_turns", "max_tokens", "format"}  # flat bundles unchanged
    with pytest.raises(ValueError, match="reanchor_tokens must be <="):
        WindowConfig.turn_causal(64, 128)
    with pytest.raises(ValueError, match="unknown window format"):
        WindowConfig(format="causal-v0")


def test_pack_by_tokens_respects_the_budget_and_covers_every_span():
    lengths = np.random.default_rng(1).integers(5, 200, size=300)
    order = np.random.default_rng(3).permutation(300)
    batches = pack_by_tokens(lengths, order, 512, np.random.default_rng(2))
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    assert all(len(b) == 1 or len(b) * lengths[b].max() <= 512 for b in batches)
    assert any(len(b) > 1 for b in batches)
    again = pack_by_tokens(lengths, order, 512, np.random.default_rng(2))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))  # deterministic (resume)


def test_mask_is_turn_causal():
    turn = torch.tensor([[0, 0, 1, 1, 1, 2, -1]])
    m = turn_causal_mask(turn)[0]
    assert m[0].tolist() == [1, 1, 0, 0, 0, 0, 0]  # a turn sees itself both ways, not later turns
    assert m[3].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert m[5].tolist() == [1, 1, 1, 1, 1, 1, 0]
    assert m[:, 6].sum() == 0 and m[6].sum() == 0  # padding is seen by nobody and sees nothing


# --- the model -------------------------------------------------------------------------------------

def span_logits(built, spans, index=None):
    index = np.arange(len(spans.span_ids)) if index is None else index
    batch, rows = collate_spans(spans, index, built.tokenizer.pad_token_id)
    with torch.no_grad():
        return {k: v.numpy() for k, v in built.model.logits_dict(**batch).items()}, rows


def test_a_later_turn_never_changes_an_earlier_turns_logits_bit_for_bit(built, sample_schema):
    cfg = WindowConfig.turn_causal(512)
    d = random_dialogues(1, seed=5, max_turns=8)[0]
    spans = build_spans([d], sample_schema, built.tokenizer, cfg)
    assert len(spans.span_ids) == 1
    before, _ = span_logits(built, spans)
    # replace every token of the last turn (same length, so the shapes and the arithmetic are identical)
    last = spans.span_turn[0] == spans.span_turn[0].max()
    ids = np.asarray(spans.span_ids[0])
    ids[last & (np.arange(len(ids)) > np.flatnonzero(last)[0])] = built.tokenizer.convert_tokens_to_ids("refund")
    assert ids.tolist() != spans.span_ids[0]
    spans.span_ids[0] = ids.tolist()
    after, _ = span_logits(built, spans)
    for name in before:
        assert np.array_equal(before[name][:-1], after[name][:-1]), name  # every earlier turn: bit for bit
        assert not np.array_equal(before[name][-1], after[name][-1])  # the changed turn itself moves


def incremental_tag_states(encoder, turns: list[list[int]]) -> list[torch.Tensor]:
    """Reference: encode a span turn by turn with a key/value cache; the tag state of each turn.

    Each new turn's tokens attend to the cached keys/values of all earlier turns of the span and to
    each other (bidirectionally); nothing is recomputed for earlier turns.
    """
    emb = encoder.embeddings
    layers = encoder.encoder.layer
    cache: list[tuple[torch.Tensor, torch.Tensor]] = [(torch.zeros(0), torch.zeros(0))] * len(layers)
    pos, states = 0, []
    for ids in turns:
        t = torch.tensor(ids)
        positions = torch.arange(pos, pos + len(ids))
        h = emb.word_embeddings(t) + emb.position_embeddings(positions) + emb.token_type_embeddings(
            torch.zeros_like(t))
        h = emb.LayerNorm(h)  # (n, H)
        for li, layer in enumerate(layers):
            att = layer.attention.self
            nh, hd = att.num_attention_heads, att.attention_head_size

            def heads(x, nh=nh, hd=hd):
                return x.view(-1, nh, hd).transpose(0, 1)  # (nh, n, hd)

            q, k, v = heads(att.query(h)), heads(att.key(h)), heads(att.value(h))
            pk, pv = cache[li]
            if pk.numel():
                k, v = torch.cat([pk, k], dim=1), torch.cat([pv, v], dim=1)
            cache[li] = (k, v)
            w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1)
            ctx = (w @ v).transpose(0, 1).reshape(len(ids), nh * hd)
            a = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + h)
            inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(a))
            h = layer.output.LayerNorm(layer.output.dense(inter) + a)
        states.append(h[0])  # the role tag opens the turn
        pos += len(ids)
    return states


def test_span_pass_equals_turn_by_turn_incremental_encoding_with_reanchors(built, sample_schema):
    """For random dialogues long enough to re-anchor, one pass per span gives every turn the logits that
    turn-by-turn encoding over cached keys/values gives it, within 1e-4."""
    cfg = WindowConfig.turn_causal(64, 32)
    dialogues = random_dialogues(6, seed=11, max_turns=16)
    spans = build_spans(dialogues, sample_schema, built.tokenizer, cfg)
    assert len(spans.span_ids) > len(dialogues)  # some dialogues re-anchored
    assert any(tags[0] > 0 for tags in spans.span_tags)  # some spans carry context turns from before
    logits, rows = span_logits(built, spans)
    model = built.model
    checked = 0
    for si in range(len(spans.span_ids)):
        local = spans.span_turn[si]
        ids = np.asarray(spans.span_ids[si])
        turns = [ids[local == k].tolist() for k in range(local.max() + 1)]
        with torch.no_grad():
            states = incremental_tag_states(model.encoder, turns)
            n_ctx = len(turns) - len(spans.span_rows[si])
            for k, row in enumerate(spans.span_rows[si]):
                ref = {n: model.heads[n](states[n_ctx + k]).numpy() for n in model.task_names}
                got = {n: logits[n][np.flatnonzero(rows == row)[0]] for n in model.task_names}
                for n in ref:
                    np.testing.assert_allclose(got[n], ref[n], atol=1e-4, rtol=0)
                checked += 1
    assert checked == len(spans)


def test_every_turn_gets_exactly_its_serving_context(built, sample_schema):
    """Scoring a turn alone over the turns the service would hold for it (span_start applied turn by
    turn) equals the training/evaluation span pass."""
    cfg = WindowConfig.turn_causal(48, 24)
    dialogues = random_dialogues(3, seed=2, max_turns=12, max_words=12)
    spans = build_spans(dialogues, sample_schema, built.tokenizer, cfg)
    batched, rows = span_logits(built, spans)
    row = 0
    for d in dialogues:
        ids = turn_token_ids(d.turns, built.tokenizer, cfg)
        start = 0
        for t in range(len(d.turns)):
            start = span_start([len(x) for x in ids[: t + 1]], start, cfg)
            alone = build_spans([Dialogue(dialogue_id="x", turns=d.turns[start : t + 1])], sample_schema,
                                built.tokenizer, WindowConfig.turn_causal(512))
            single, _ = span_logits(built, alone)
            at = np.flatnonzero(rows == row)[0]
            for n in single:
                np.testing.assert_allclose(batched[n][at], single[n][-1], atol=1e-4, rtol=0)
            row += 1
