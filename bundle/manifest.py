"""The model bundle on disk: ``bundle.json`` + ONNX variants + tokenizer + card.

``bundle.json`` keys: ``format_version``, ``name``, ``version``, ``created_at``, ``backbone``, ``tasks``
(the schema's task mapping, as in tasks.yaml under ``tasks:``), ``window`` (``max_turns``,
``max_tokens``, ``format``), ``variants`` ({variant: file}), ``parity`` ({variant: record}, see
:mod:`export.parity`), ``metrics`` (from the checkpoint), ``sha256`` ({relative path: hex digest} of
every file in the bundle except bundle.json itself); plus ``io`` (input/output names),
``graphs`` (how each variant was built), ``tokenizer`` (its files), ``preferred_variant``
({provider: variant}), ``architecture`` and ``exporter`` (library versions).

Verification order: the manifest parses; every file it references is covered by a checksum; every
checksummed file exists; every digest matches. Only then does anyone open a model file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from bundle.errors import BundleError, BundleIncompleteError, ChecksumError
from turnwise.names import BUNDLE_MANIFEST

FORMAT_VERSION = 1
MANIFEST = BUNDLE_MANIFEST
CARD = "MODEL_CARD.md"
TASKS_FILE = "tasks.yaml"
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
VARIANTS = tuple(VARIANT_FILES)
# The variant each execution provider serves when the bundle records no measured preference: fp32 on
# CPU (int8 only where a benchmark showed it faster and the parity record allows it), fp16 on GPUs.
DEFAULT_PREFERRED_VARIANT = {"cpu": "fp32", "cuda": "fp16", "tensorrt": "fp16"}


def fallback_variant(provider: str, available: Iterable[str]) -> str | None:
    """The first variant present in ``available``: fp32 first on CPU, fp16 first on GPUs."""
    have = set(available)
    order = ("fp32", "int8", "fp16") if provider == "cpu" else ("fp16", "fp32", "int8")
    return next((v for v in order if v in have), None)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundle_files(root: Path) -> list[str]:
    """Every regular file under ``root`` except the manifest, as sorted POSIX relative paths."""
    skip = {root / MANIFEST, root / (MANIFEST + ".tmp")}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p not in skip)


def checksums(root: Path, files: Iterable[str]) -> dict[str, str]:
    return {f: sha256_file(root / f) for f in files}


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Add ``sha256`` of every file in ``root`` to ``manifest`` and write bundle.json atomically."""
    body = dict(manifest)
    body["format_version"] = FORMAT_VERSION
    body["sha256"] = checksums(root, bundle_files(root))
    missing = sorted(set(referenced_files(body)) - set(body["sha256"]))
    if missing:
        raise BundleIncompleteError(f"{root}: the manifest references files not in the bundle: {missing}")
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST


def referenced_files(manifest: dict[str, Any]) -> list[str]:
    """Files the manifest points at: variants, tokenizer, card, tasks.yaml, quantization settings."""
    files = list(manifest.get("variants", {}).values())
    files += list((manifest.get("tokenizer") or {}).get("files", []))
    files += [f for f in (manifest.get("card"), manifest.get("tasks_file")) if f]
    for graph in (manifest.get("graphs") or {}).values():
        if graph.get("settings_file"):
            files.append(graph["settings_file"])
    return files


def read_manifest(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleIncompleteError(f"{root}: not a directory (a bundle is a directory with {MANIFEST})")
    if not path.exists():
        raise BundleIncompleteError(f"{root}: no {MANIFEST}; not a model bundle (run `turnwise export`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {version!r} is not supported "
                          f"(this loader reads {FORMAT_VERSION})")
    for key in ("name", "version", "tasks", "window", "variants", "parity", "sha256"):
        if key not in manifest:
            raise BundleError(f"{path}: missing required key '{key}'")
    return manifest


def _safe_member(root: Path, rel: str) -> Path:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BundleError(f"{root}: {MANIFEST} lists a file outside the bundle: {rel!r}")
    return root.joinpath(*p.parts)


def verify(root: str | Path, manifest: dict[str, Any]) -> None:
    """Raise unless every referenced file is checksummed, present and unmodified."""
    root = Path(root)
    sums: dict[str, str] = manifest["sha256"]
    uncovered = sorted(set(referenced_files(manifest)) - set(sums))
    if uncovered:
        raise BundleIncompleteError(f"{root}: files without a sha256 in {MANIFEST}: {uncovered}")
    missing = [rel for rel in sums if not _safe_member(root, rel).is_file()]
    if missing:
        raise BundleIncompleteError(f"{root}: missing file(s) listed in {MANIFEST}: {sorted(missing)}")
    for rel, expected in sums.items():
        actual = sha256_file(_safe_member(root, rel))
        if actual != expected:
            raise ChecksumError(f"{root}: sha256 of '{rel}' is {actual[:16]}…, {MANIFEST} records "
                                f"{expected[:16]}…; the file changed after export — refusing to serve it")
