"""Reading a variant's parity record (written by the exporter into bundle.json, per variant):
``{"tolerance": {"max_abs_diff", "min_label_agreement"}, "outputs": {output: {"max_abs_diff",
"label_agreement"}}, ...}``. A bundle whose chosen variant breaks its own record is not served."""

from __future__ import annotations

from typing import Any


def first_failure(rec: dict[str, Any]) -> tuple[str, str, float, float] | None:
    """(output, metric, value, tolerance) of the worst breach in a parity record, or None if within bounds."""
    tol = rec.get("tolerance") or {}
    outputs: dict[str, dict[str, float]] = rec.get("outputs") or {}
    atol, agree = tol.get("max_abs_diff"), tol.get("min_label_agreement")
    if atol is not None:
        name, worst = max(outputs.items(), key=lambda kv: kv[1]["max_abs_diff"])
        if not worst["max_abs_diff"] <= atol:  # "not <=" also catches NaN
            return name, "max_abs_diff", worst["max_abs_diff"], atol
    if agree is not None:
        name, worst = min(outputs.items(), key=lambda kv: kv[1]["label_agreement"])
        if not worst["label_agreement"] >= agree:
            return name, "label_agreement", worst["label_agreement"], agree
    return None
