"""The closed set of errors the exporter and the bundle loader raise.

Export side: :class:`ParityError` when a variant disagrees with the PyTorch checkpoint beyond its
tolerance (never downgraded to a warning), :class:`ExportError` for everything else that stops an export.

Load side (what the service maps to "model unavailable"): :class:`BundleError` and its subclasses, one
per reason a bundle must not be served.
"""

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


class BundleError(TurnwiseError):
    """A model bundle cannot be served. The message names the bundle and the reason."""


class BundleIncompleteError(BundleError):
    """A file the bundle lists (or needs) is missing, or a needed file has no checksum."""


class ChecksumError(BundleError):
    """A file's sha256 differs from the one recorded in bundle.json: the bundle was modified."""


class ParityRecordError(BundleError):
    """The parity record of the chosen variant is missing, failed, or does not meet its tolerance."""


class VariantUnavailableError(BundleError):
    """The requested variant or execution provider does not exist in this bundle / onnxruntime build."""
