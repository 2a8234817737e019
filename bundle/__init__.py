"""The model bundle reader: torch-free, what the service (and evaluation of bundles) imports.

- :mod:`bundle.manifest` -- the on-disk format: ``bundle.json``, variant files, checksums, verification.
- :mod:`bundle.loader` -- ``load_bundle`` / ``LoadedBundle``: verify, pick a variant, run ONNX Runtime.
- :mod:`bundle.providers` -- ONNX Runtime execution providers (CPU, CUDA, TensorRT) and sessions.
- :mod:`bundle.parity_record` -- reading the parity record the exporter wrote for each variant.
- :mod:`bundle.errors` -- why a bundle must not be served.

It imports only the core (``turnwise``), numpy, tokenizers and onnxruntime.
"""
