"""Evaluation metrics on hand-worked examples (scikit-learn computes them; these pin the conventions)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluate import multilabel_metrics, single_label_metrics


def test_single_label_metrics_macro_f1_over_the_classes_that_occur():
    labels = ["inform", "question", "directive", "commissive"]
    m = single_label_metrics(labels, np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]))
    assert m["accuracy"] == 0.5 and m["n"] == 4
    # F1: inform 2/3 (1 of 2 found, no false alarm), question 1/2 (1 right, 2 false alarms), directive 0;
    # commissive never occurs in gold and is left out of the macro mean.
    assert m["per_class_f1"]["inform"] == pytest.approx(2 / 3)
    assert m["per_class_f1"]["question"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]  # rows gold


def test_multilabel_metrics_exact_match_and_micro_f1():
    gold = np.array([[1, 0, 1], [0, 1, 0]])
    pred = np.array([[1, 0, 0], [0, 1, 0]])
    m = multilabel_metrics(["date", "city", "hotel"], gold, pred)
    assert m["accuracy"] == 0.5  # one of two turns has exactly the right slots
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))  # tp 2, fp 0, fn 1
    assert m["per_class_f1"]["hotel"] == 0.0
