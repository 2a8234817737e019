"""Checkpoint -> verified model bundle: export, optimize, quantize, prove parity, write the manifest.

Order matters: the PyTorch reference logits on the probe set are computed before anything is
exported, every variant is checked against them, and the bundle directory only appears (atomic
rename) once every requested variant has passed. A failing variant raises :class:`ParityError`;
nothing half-built is left at ``out``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundle.manifest import (
    CARD,
    DEFAULT_PREFERRED_VARIANT,
    MANIFEST,
    TASKS_FILE,
    VARIANT_FILES,
    VARIANTS,
    fallback_variant,
    sha256_file,
    write_manifest,
)
from export.card import render_card
from export.errors import ExportError, ParityError
from export.onnx_export import (
    DEFAULT_OPSET,
    GraphInfo,
    TurnwiseOnnxConfig,
    convert_fp16,
    default_tolerances,
    export_raw,
    op_counts,
    optimize_fp32,
    output_name,
)
from export.parity import (
    MAX_PROBES,
    ProbeSet,
    Tolerance,
    build_probe_set,
    check,
    compare,
    ort_runner,
    pad_id,
    parity_session,
    record,
    run_probes,
    torch_runner,
)
from export.quantize import DEFAULT_LADDER, QUANTIZATION_FILE, QuantizationPreset, get_preset, quantize_int8
from export.streaming_export import Shipped, ship_streaming
from trainer.checkpoint import WEIGHTS_FILE, Checkpoint, load_checkpoint
from turnwise.names import TOKENIZER_JSON
from turnwise.tasks import save_tasks

REPO = Path(__file__).resolve().parents[1]
BENCH_RESULTS = REPO / "benchmarks" / "results" / "backends.json"

Progress = Callable[[str], None]


@dataclass
class ExportOptions:
    variants: Sequence[str] = ("fp32", "int8")
    name: str | None = None
    version: str | None = None
    probe_data: Path | None = None
    opset: int | None = None
    max_probes: int = MAX_PROBES
    tolerances: dict[str, Tolerance] = field(default_factory=default_tolerances)
    # Presets tried in order for int8; the first whose parity passes is shipped (all attempts recorded).
    quantization: str | QuantizationPreset | Sequence[str | QuantizationPreset] = DEFAULT_LADDER
    # "optimized": ship the fused graph as fp32 (and quantize it); "raw": ship the traced graph.
    fp32_graph: str = "optimized"
    bench_results: Path | None = BENCH_RESULTS
    # Variants that must pass parity (a failure stops the export). A variant not listed that fails is
    # left out of the bundle and recorded under "rejected_variants"; the export fails only if none passes.
    require: Sequence[str] = ()


@dataclass
class ExportResult:
    path: Path
    manifest: dict[str, Any]


def parse_variants(variants: Sequence[str] | str) -> list[str]:
    items = [v.strip().lower() for v in (variants.split(",") if isinstance(variants, str) else variants)]
    items = [v for v in items if v]
    unknown = [v for v in items if v not in VARIANTS]
    if unknown or not items:
        raise ExportError(f"unknown or empty variants {unknown or items} (choose from {', '.join(VARIANTS)})")
    return list(dict.fromkeys(items))


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise ExportError(f"{out} exists and is not a model bundle; refusing to overwrite it")


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` (absent, empty, or an older bundle) by ``staging`` with renames only."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def preferred_variants(variants: Sequence[str], bench_results: Path | None) -> tuple[dict[str, str], str]:
    """{provider: variant} from the latest backend benchmark when it recorded one, else the defaults."""
    chosen, source = dict(DEFAULT_PREFERRED_VARIANT), "default (no benchmark results)"
    if bench_results is not None and Path(bench_results).exists():
        try:
            bench = json.loads(Path(bench_results).read_text(encoding="utf-8"))
            rec = bench.get("preferred_variant") or {}
            chosen.update({k: v for k, v in rec.items() if k in chosen and v in VARIANTS})
            hw = bench.get("hardware", {})
            source = f"{Path(bench_results).name} ({hw.get('cpu', '?')}, {bench.get('created_at', '?')})"
        except (OSError, json.JSONDecodeError, AttributeError):
            source = f"default ({bench_results} unreadable)"
    present = {}
    for provider, variant in chosen.items():
        if variant in variants:
            present[provider] = variant
        else:  # fall back to what the bundle has, fp32 first on CPU, fp16 first on GPUs
            present[provider] = fallback_variant(provider, variants) or variants[0]
    return present, source


def _architecture(ckpt: Checkpoint) -> dict[str, Any]:
    c = ckpt.model.encoder.config
    return {"model_type": c.model_type, "num_layers": c.num_hidden_layers, "hidden_size": c.hidden_size,
            "num_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
            "vocab_size": c.vocab_size, "max_position_embeddings": c.max_position_embeddings,
            "pooling": ckpt.model.pooling}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("turnwise", "torch", "transformers", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


TOKENIZER_CHECK = [
    "[usr] My card was charged TWICE for order #4421 — can you refund it?",
    "[sys] Sorry about that! I've issued the refund; you'll see it in 3-5 days.",
    "[usr] ok thx",
]


def _tokenizer_info(tokenizer: Any, files: list[str], pad: int) -> dict[str, Any]:
    """Tokenizer files, special ids, and check strings with the ids this (HF) tokenizer gives them."""
    ids = tokenizer(TOKENIZER_CHECK, add_special_tokens=False)["input_ids"]
    return {"files": files, "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": pad, "check": {"texts": TOKENIZER_CHECK, "ids": [list(map(int, x)) for x in ids]}}


def _prove(variant: str, path: Path, ckpt: Checkpoint, probes: ProbeSet, reference: dict, tol: Tolerance,
           pad: int) -> dict[str, Any]:
    session, provider = parity_session(path, variant)
    got = run_probes(probes, ort_runner(session), pad)
    rec = record(variant, path.name, compare(ckpt.schema, reference, got, output_name), tol, probes, provider)
    check(variant, rec)
    return rec


def export_bundle(checkpoint: str | Path | Checkpoint, out: str | Path, options: ExportOptions | None = None,
                  progress: Progress | None = None) -> ExportResult:
    """Build a verified bundle at ``out`` from a checkpoint directory (or a loaded :class:`Checkpoint`)."""
    opts = options or ExportOptions()
    say = progress or (lambda _msg: None)
    variants = parse_variants(opts.variants)
    if opts.fp32_graph not in ("optimized", "raw"):
        raise ExportError(f"fp32_graph must be 'optimized' or 'raw', not {opts.fp32_graph!r}")
    missing_tol = [v for v in variants if v not in opts.tolerances]
    if missing_tol:
        raise ExportError(f"no parity tolerance for variant(s) {missing_tol}")
    q = opts.quantization
    ladder = [get_preset(p) for p in ([q] if isinstance(q, (str, QuantizationPreset)) else list(q))]
    if not ladder:
        raise ExportError("no quantization preset given")
    out = Path(out)
    _check_out(out)

    say("loading checkpoint")
    if isinstance(checkpoint, Checkpoint):
        ckpt, ckpt_dir = checkpoint, None
    else:
        ckpt_dir = Path(checkpoint)
        ckpt = load_checkpoint(ckpt_dir)
    require = parse_variants(opts.require) if opts.require else []
    if [v for v in require if v not in variants]:
        raise ExportError(f"required variant(s) {[v for v in require if v not in variants]} are not being exported")
    ckpt.model.eval()
    meta = ckpt.meta
    cfg = TurnwiseOnnxConfig(tasks=tuple(ckpt.schema.names()), opset=opts.opset or DEFAULT_OPSET)
    pad = pad_id(ckpt.tokenizer)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="turnwise-export-") as scratch_s:
            scratch = Path(scratch_s)
            arch = _architecture(ckpt)
            if ckpt.window.streaming:
                shipped = ship_streaming(ckpt, arch, _with_opset(opts, cfg.opset), ladder, variants, pad,
                                         scratch, staging, say)
            else:
                shipped = _ship_flat(ckpt, arch, cfg, opts, ladder, variants, pad, scratch, staging, say)
            _enforce(variants, shipped, require)
            manifest = _manifest(ckpt, ckpt_dir, meta, cfg, opts, arch, shipped, pad, staging, say)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"bundle written to {out}")
    return ExportResult(path=out, manifest=manifest)


def _with_opset(opts: ExportOptions, opset: int) -> ExportOptions:
    from dataclasses import replace

    return replace(opts, opset=opset)


def _enforce(variants: list[str], shipped: Shipped, require: Sequence[str]) -> None:
    """Raise the parity error of a required variant that failed, or of the last one if none passed."""
    for variant in [*require, *variants]:
        rej = shipped.rejected.get(variant)
        if rej is not None and (variant in require or not shipped.parity):
            raise ParityError(variant, rej["output"], rej["metric"], rej["value"], rej["tolerance"])


def _ship_flat(ckpt: Checkpoint, arch: dict[str, Any], cfg: TurnwiseOnnxConfig, opts: ExportOptions,
               ladder: list[QuantizationPreset], variants: list[str], pad: int, scratch: Path, staging: Path,
               say: Progress) -> Shipped:
    say("building the probe set")
    probes = build_probe_set(ckpt.tokenizer, ckpt.window, opts.probe_data, opts.max_probes)
    say(f"PyTorch reference logits on {len(probes.seqs)} probe windows")
    reference = run_probes(probes, torch_runner(ckpt.model, cfg.output_names), pad)
    say(f"exporting ONNX (opset {cfg.opset})")
    raw = export_raw(ckpt.model, scratch / "model.raw.onnx", cfg)
    out = Shipped(io=cfg.io())
    graphs, parity = out.graphs, out.parity

    fp32_src = raw
    raw_settings = {"tool": "torch.onnx.export", "dynamo": False, "opset": cfg.opset}
    fp32_info = GraphInfo(source="raw", built_from=None, settings=raw_settings, op_counts=op_counts(raw))
    if opts.fp32_graph == "optimized" and ("fp32" in variants or "int8" in variants):
        say("optimizing the fp32 graph (transformer fusions)")
        fp32_src = scratch / "model.opt.onnx"
        fp32_info = optimize_fp32(raw, fp32_src, num_heads=arch["num_heads"], hidden_size=arch["hidden_size"])

    def reject(variant: str, err: ParityError) -> None:
        (staging / VARIANT_FILES[variant]).unlink(missing_ok=True)
        out.rejected[variant] = err.to_record()

    if "fp32" in variants:
        dst = staging / VARIANT_FILES["fp32"]
        shutil.copyfile(fp32_src, dst)
        say("parity: fp32")
        try:
            parity["fp32"] = _prove("fp32", dst, ckpt, probes, reference, opts.tolerances["fp32"], pad)
            graphs["fp32"] = fp32_info.to_dict()
        except ParityError as err:
            reject("fp32", err)

    if "int8" in variants:
        dst = staging / VARIANT_FILES["int8"]
        attempts: list[dict[str, Any]] = []
        for i, preset in enumerate(ladder):
            say(f"quantizing to int8 (preset {preset.name})")
            info = quantize_int8(fp32_src, dst, preset, head_outputs=list(cfg.output_names),
                                 built_from=fp32_info.source,
                                 ffn_output_shape=(arch["intermediate_size"], arch["hidden_size"]))
            say(f"parity: int8 ({preset.name})")
            try:
                parity["int8"] = _prove("int8", dst, ckpt, probes, reference, opts.tolerances["int8"], pad)
            except ParityError as err:
                attempts.append({"preset": preset.name, "passed": False, "error": str(err)})
                if i == len(ladder) - 1:
                    reject("int8", err)
                    (staging / QUANTIZATION_FILE).unlink(missing_ok=True)
                continue
            attempts.append({"preset": preset.name, "passed": True})
            graphs["int8"] = {**info.to_dict(), "settings_file": QUANTIZATION_FILE, "attempts": attempts}
            break

    if "fp16" in variants:
        say("converting to fp16")
        dst = staging / VARIANT_FILES["fp16"]
        info = convert_fp16(raw, dst)
        say("parity: fp16")
        try:
            parity["fp16"] = _prove("fp16", dst, ckpt, probes, reference, opts.tolerances["fp16"], pad)
            graphs["fp16"] = info.to_dict()
        except ParityError as err:
            reject("fp16", err)
    return out


def _manifest(ckpt: Checkpoint, ckpt_dir: Path | None, meta: dict[str, Any], cfg: TurnwiseOnnxConfig,
              opts: ExportOptions, arch: dict[str, Any], shipped: Shipped, pad: int, staging: Path,
              say: Progress) -> dict[str, Any]:
    variants = list(shipped.parity)
    graphs, parity = shipped.graphs, shipped.parity
    say("writing tokenizer, schema, card and manifest")
    written = ckpt.tokenizer.save_pretrained(str(staging))
    tok_files = sorted({Path(p).name for p in written if (staging / Path(p).name).is_file()})
    if TOKENIZER_JSON not in tok_files:
        raise ExportError("the checkpoint's tokenizer is not a fast tokenizer (no tokenizer.json); "
                          "the loader serves tokenizer.json through the tokenizers library")
    save_tasks(ckpt.schema, staging / TASKS_FILE)

    preferred, preferred_source = preferred_variants(variants, opts.bench_results)
    weights = ckpt_dir / WEIGHTS_FILE if ckpt_dir is not None else None
    version = opts.version or meta.get("version") or (
        f"0.0.0+{sha256_file(weights)[:12]}" if weights is not None and weights.exists() else "0.0.0")
    name = opts.name or meta.get("name") or (ckpt_dir.resolve().name if ckpt_dir is not None else "turnwise")
    manifest: dict[str, Any] = {
        "format_version": None,  # set by write_manifest
        "name": name,
        "version": str(version),
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "backbone": meta.get("backbone"),
        "tasks": ckpt.schema.to_dict()["tasks"],
        "window": ckpt.window.to_dict(),
        "variants": {v: VARIANT_FILES[v] for v in variants},
        "parity": parity,
        "metrics": meta.get("metrics") or {},
        "sha256": {},  # set by write_manifest
        "preferred_variant": preferred,
        "preferred_variant_source": preferred_source,
        "io": shipped.io,
        "graphs": graphs,
        "rejected_variants": shipped.rejected,
        "tokenizer": _tokenizer_info(ckpt.tokenizer, tok_files, pad),
        "architecture": arch,
        "card": CARD,
        "tasks_file": TASKS_FILE,
        "opset": cfg.opset,
        "exporter": _versions(),
        "source_checkpoint": {"path": str(ckpt_dir) if ckpt_dir is not None else None,
                              "step": meta.get("step"), "format": meta.get("format")},
    }
    (staging / CARD).write_text(render_card(manifest, meta), encoding="utf-8")
    write_manifest(staging, manifest)  # bundle.json, then its seal SHA256SUMS: the last file written
    return json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
