"""turnwise export: checkpoint -> verified ONNX model bundle (the writer; the reader is :mod:`bundle`).

- :mod:`export.pipeline` -- ``export_bundle``: ONNX export, fusions, int8/fp16, parity proof, manifest.
- :mod:`export.parity` -- the probe set and the parity record of each variant.
- :mod:`export.cli` -- ``run_export`` behind ``turnwise export``.

The exporter depends on the reader (bundle format, checksums, parity records), never the reverse.
"""

from export.errors import ExportError, ParityError

__all__ = ["ExportError", "ParityError"]
