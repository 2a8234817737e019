"""The core's wire contract (shared by service and client) and strict JSON output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from turnwise.api import MEANING, RETRYABLE, STATUS, ErrorKind, kind_for_status
from turnwise.jsonl import dumps_json, finite


def test_the_service_answers_with_the_core_kinds():
    from service import errors

    assert errors.ErrorKind is ErrorKind and errors.STATUS is STATUS
    assert set(MEANING) == set(STATUS) == set(ErrorKind)
    assert {STATUS[k] for k in RETRYABLE} == {429, 503}
    assert kind_for_status(404) is ErrorKind.not_found and kind_for_status(502) is ErrorKind.internal


def test_json_reports_never_hold_nan():
    report = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": np.float32(0.5), "e": np.array([1, 2])}
    assert finite(report) == {"a": None, "b": [1.0, None, {"c": None}], "d": 0.5, "e": [1, 2]}
    text = dumps_json(report)
    assert "NaN" not in text and "Infinity" not in text and json.loads(text)["a"] is None
    with pytest.raises(ValueError):
        json.dumps({"x": math.nan}, allow_nan=False)  # what dumps_json guards against
