"""Calibration of teacher scores (ECE vs N, reliability, the H2 check): lives in :mod:`trainer.teachers.calibration`.

This module only re-exports it for existing imports. The dependency goes one way: the teachers package
(``turnwise calibrate`` runs from :mod:`trainer.teachers.cli`) never imports this module.
"""

from __future__ import annotations

from trainer.teachers.calibration import (
    N_BUCKETS,
    PAIR_BUCKETS,
    SIMULATED_NOTE,
    TaskScores,
    accuracy,
    bucket_index,
    calibration_report,
    collect,
    ece,
    ece_vs_n,
    h2_check,
    pair_curve,
    reliability,
    subsample,
    write_report,
)
from trainer.teachers.calibration_plots import plot_report

__all__ = [
    "N_BUCKETS",
    "PAIR_BUCKETS",
    "SIMULATED_NOTE",
    "TaskScores",
    "accuracy",
    "bucket_index",
    "calibration_report",
    "collect",
    "ece",
    "ece_vs_n",
    "h2_check",
    "pair_curve",
    "plot_report",
    "reliability",
    "subsample",
    "write_report",
]
