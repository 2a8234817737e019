import numpy as np
import pytest

from trainer.pairs import PairConfig, sample_pairs


def batch():
    # two dialogues of 4 and 3 segments, 2 classes
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.5, 0.2], [1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    dialogue_of = np.array([0, 0, 0, 0, 1, 1, 1])
    return scores, dialogue_of


def test_intra_pairs_stay_in_dialogue_and_are_oriented():
    scores, dlg = batch()
    pairs = sample_pairs(scores, dlg, PairConfig(mode="intra", budget=100), np.random.default_rng(0))
    assert len(pairs) > 0
    assert np.all(dlg[pairs.first] == dlg[pairs.second])
    assert np.all(scores[pairs.first, pairs.cls] > scores[pairs.second, pairs.cls])
    assert np.allclose(pairs.gap, scores[pairs.first, pairs.cls] - scores[pairs.second, pairs.cls])


def test_equal_scores_are_dropped():
    scores, dlg = batch()
    pairs = sample_pairs(scores, dlg, PairConfig(mode="intra", budget=100), np.random.default_rng(0))
    got = {(int(a), int(b), int(c)) for a, b, c in zip(pairs.first, pairs.second, pairs.cls, strict=True)}
    # segments 2 and 3 tie on class 0 (0.5 vs 0.5): no pair either way
    assert (2, 3, 0) not in got and (3, 2, 0) not in got
    # all intra pairs with a strict gap are present: dialogue 0 has 6 pairs, 1 tie on class 0; 6 on class 1
    # dialogue 1 has 3 pairs per class
    assert len(pairs) == (5 + 6) + (3 + 3)


def test_inter_pairs_cross_dialogues():
    scores, dlg = batch()
    pairs = sample_pairs(scores, dlg, PairConfig(mode="inter", budget=100), np.random.default_rng(0))
    assert len(pairs) > 0
    assert np.all(dlg[pairs.first] != dlg[pairs.second])
    assert np.all(scores[pairs.first, pairs.cls] > scores[pairs.second, pairs.cls])


def test_budget_and_reproducibility():
    rng = np.random.default_rng(5)
    scores = rng.random((40, 3))
    dlg = np.repeat(np.arange(4), 10)
    cfg = PairConfig(mode="intra", budget=7)
    a = sample_pairs(scores, dlg, cfg, np.random.default_rng(11))
    b = sample_pairs(scores, dlg, cfg, np.random.default_rng(11))
    c = sample_pairs(scores, dlg, cfg, np.random.default_rng(12))
    assert len(a) == 4 * 3 * 7  # budget per (dialogue, class)
    assert np.array_equal(a.first, b.first) and np.array_equal(a.second, b.second)
    assert not (np.array_equal(a.first, c.first) and np.array_equal(a.second, c.second))


def test_invalid_segments_never_paired():
    scores, dlg = batch()
    valid = np.array([1, 1, 0, 1, 1, 1, 1], dtype=bool)
    pairs = sample_pairs(scores, dlg, PairConfig(budget=100), np.random.default_rng(0), valid=valid)
    assert 2 not in set(pairs.first) | set(pairs.second)


def test_bad_config():
    with pytest.raises(ValueError):
        PairConfig(mode="cross")
    with pytest.raises(ValueError):
        PairConfig(budget=0)
