"""The errors the exporter raises: :class:`ParityError` when a variant disagrees with the PyTorch
checkpoint beyond its tolerance (never downgraded to a warning), :class:`ExportError` for everything
else that stops an export. The load side's errors live with the reader (:mod:`bundle.errors`)."""

from __future__ import annotations

from turnwise.errors import TurnwiseError


class ExportError(TurnwiseError):
    """An export could not produce a bundle (bad output directory, unknown variant, unmeasurable parity)."""


class ParityError(ExportError):
    """A variant's outputs differ from the PyTorch checkpoint beyond tolerance on the probe set.

    ``metric`` is ``"max_abs_diff"`` or ``"label_agreement"``; ``value`` the measured figure and
    ``tolerance`` the bound it broke.
    """

    def __init__(self, variant: str, output: str, metric: str, value: float, tolerance: float):
        relation = ">" if metric == "max_abs_diff" else "<"
        super().__init__(
            f"parity failed for variant '{variant}': output '{output}' {metric} = {value:.6g} "
            f"{relation} tolerance {tolerance:.6g} (vs the PyTorch checkpoint on the probe set)"
        )
        self.variant = variant
        self.output = output
        self.metric = metric
        self.value = value
        self.tolerance = tolerance

    def to_record(self) -> dict[str, object]:
        """How bundle.json records a variant left out for this failure (``rejected_variants``)."""
        return {"error": str(self), "output": self.output, "metric": self.metric, "value": self.value,
                "tolerance": self.tolerance}
