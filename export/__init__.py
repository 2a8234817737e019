"""turnwise export: checkpoint -> verified ONNX model bundle (DESIGN §2), and the loader that serves it.

- :mod:`export.pipeline` -- ``export_bundle``: ONNX export, fusions, int8/fp16, parity proof, manifest.
- :mod:`export.loader` -- ``load_bundle`` / ``LoadedBundle``: what the service imports (no torch).
- :mod:`export.cli` -- ``run_export`` behind ``turnwise export``.

Nothing heavy is imported here, so ``from export.loader import load_bundle`` stays torch-free.
"""

from export.errors import (
    BundleError,
    BundleIncompleteError,
    ChecksumError,
    ExportError,
    ParityError,
    ParityRecordError,
    VariantUnavailableError,
)

__all__ = [
    "BundleError",
    "BundleIncompleteError",
    "ChecksumError",
    "ExportError",
    "ParityError",
    "ParityRecordError",
    "VariantUnavailableError",
]
