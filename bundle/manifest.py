"""The model bundle on disk: ``bundle.json`` + ONNX variants + tokenizer + card.

``bundle.json`` keys: ``format_version``, ``name``, ``version``, ``created_at``, ``backbone``, ``tasks``
(the schema's task mapping, as in tasks.yaml under ``tasks:``), ``window`` (``max_turns``,
``max_tokens``, ``format``), ``variants`` ({variant: file}), ``parity`` ({variant: record}, see
:mod:`export.parity`), ``metrics`` (from the checkpoint), ``sha256`` ({relative path: hex digest} of
every file in the bundle except bundle.json and SHA256SUMS); plus ``io`` (input/output names),
``graphs`` (how each variant was built), ``tokenizer`` (its files), ``preferred_variant``
({provider: variant}), ``architecture`` and ``exporter`` (library versions).

``SHA256SUMS`` (the seal, written last, in ``sha256sum`` format: ``<hex>  <file>`` per line) covers
``bundle.json`` itself and every file of its ``sha256``: an edit of bundle.json (a window, a parity
record) breaks the seal even though every model file still matches. A deliberate edit is re-sealed
with :func:`seal` (``turnwise bundle seal DIR``); re-exporting writes a new seal as well.

Verification order: the manifest parses; the seal exists, covers exactly bundle.json and the files of
its ``sha256``, and bundle.json's digest matches it; every file the manifest references is covered by a
checksum; every checksummed file exists; every digest matches. Only then does anyone open a model file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from bundle.errors import BundleError, BundleIncompleteError, ChecksumError
from turnwise.names import BUNDLE_MANIFEST

FORMAT_VERSION = 1
MANIFEST = BUNDLE_MANIFEST
SEAL = "SHA256SUMS"  # sha256 of bundle.json and of every file it lists; written last
_SEAL_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")
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
    """Every regular file under ``root`` except the manifest and the seal, as sorted POSIX relative paths."""
    skip = {root / MANIFEST, root / (MANIFEST + ".tmp"), root / SEAL, root / (SEAL + ".tmp")}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p not in skip)


def checksums(root: Path, files: Iterable[str]) -> dict[str, str]:
    return {f: sha256_file(root / f) for f in files}


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Add ``sha256`` of every file in ``root`` to ``manifest``, write bundle.json atomically, then the seal."""
    body = dict(manifest)
    body["format_version"] = FORMAT_VERSION
    body["sha256"] = checksums(root, bundle_files(root))
    missing = sorted(set(referenced_files(body)) - set(body["sha256"]))
    if missing:
        raise BundleIncompleteError(f"{root}: the manifest references files not in the bundle: {missing}")
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
    write_seal(root, body["sha256"])
    return root / MANIFEST


def write_seal(root: Path, sums: dict[str, str]) -> Path:
    """Write ``SHA256SUMS`` atomically: bundle.json's digest (hashed now) and ``sums`` (the manifest's)."""
    lines = [f"{sha256_file(root / MANIFEST)}  {MANIFEST}"] + [f"{sums[rel]}  {rel}" for rel in sorted(sums)]
    tmp = root / (SEAL + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, root / SEAL)
    return root / SEAL


def seal(root: str | Path) -> Path:
    """Re-seal ``root`` after a deliberate edit of bundle.json: every other file must still match the
    manifest's checksums (checked first); then SHA256SUMS is rewritten over bundle.json as it is now."""
    root = Path(root)
    manifest = read_manifest(root)
    _verify_files(root, manifest)
    return write_seal(root, manifest["sha256"])


def read_seal(root: Path) -> dict[str, str]:
    """``{file: hex digest}`` from the bundle's SHA256SUMS; refuses a bundle without one."""
    path = root / SEAL
    if not path.is_file():
        raise BundleIncompleteError(
            f"{root}: no {SEAL}, so {MANIFEST} itself is unverified (a bundle exported before bundles were "
            f"sealed, or a copy that left it out); re-export it with `turnwise export`, or check {MANIFEST} "
            f"and seal it with `turnwise bundle seal {root}`")
    sums: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _SEAL_LINE.fullmatch(line)
        if m is None:
            raise BundleError(f"{path}: line {n} is not '<sha256>  <file>'")
        sums[m[2]] = m[1]
    return sums


def check_seal(root: Path, manifest: dict[str, Any]) -> None:
    """Raise unless SHA256SUMS covers exactly bundle.json and the manifest's files, bundle.json (on disk
    and as parsed) matches its digest, and every other digest agrees with the manifest's."""
    sums = read_seal(root)
    expected = {MANIFEST, *manifest["sha256"]}
    if set(sums) != expected:
        missing, extra = sorted(expected - set(sums)), sorted(set(sums) - expected)
        raise BundleIncompleteError(f"{root}: {SEAL} does not match {MANIFEST}'s file list "
                                    f"(not sealed: {missing}, not in {MANIFEST}: {extra})")
    raw = (root / MANIFEST).read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sums[MANIFEST]:
        raise ChecksumError(f"{root}: sha256 of '{MANIFEST}' is {actual[:16]}…, {SEAL} records "
                            f"{sums[MANIFEST][:16]}…; {MANIFEST} was edited after export — refusing to serve it "
                            f"(re-export, or seal a deliberate edit with `turnwise bundle seal {root}`)")
    try:
        same = json.loads(raw) == manifest
    except ValueError:
        same = False
    if not same:
        raise BundleError(f"{root}: {MANIFEST} changed while the bundle was being loaded")
    for rel, digest in manifest["sha256"].items():
        if sums[rel] != digest:
            raise ChecksumError(f"{root}: {SEAL} records {sums[rel][:16]}… for '{rel}', {MANIFEST} records "
                                f"{digest[:16]}… — refusing to serve it")


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
    """Raise unless the bundle is sealed (bundle.json unmodified) and every referenced file is
    checksummed, present and unmodified."""
    root = Path(root)
    check_seal(root, manifest)
    _verify_files(root, manifest)


def _verify_files(root: Path, manifest: dict[str, Any]) -> None:
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
