"""Why a model bundle must not be served (what the service maps to "model unavailable"):
:class:`BundleError` and its subclasses, one per reason."""

from __future__ import annotations

from turnwise.errors import TurnwiseError


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
