"""Execution-provider settings for ONNX Runtime sessions: ``cpu`` | ``cuda`` | ``tensorrt``.

- cpu: ``CPUExecutionProvider``; intra-op threads from the caller (default: ORT's choice, one per core).
- cuda: ``CUDAExecutionProvider`` then CPU for any node without a CUDA kernel.
- tensorrt: ``TensorrtExecutionProvider`` (fp16 on, engine + timing cache on disk, one optimization
  profile from 1x1 up to ``max_batch`` x ``window.max_tokens`` so every request shape hits one engine)
  then CUDA, then CPU. The first session builds the engine (minutes); the cache makes restarts fast,
  and the loader's warm-up runs the largest shape so no request pays the build.

A provider missing from this onnxruntime build is a :class:`VariantUnavailableError`, never a silent
fall back to CPU; so is a session that came up without the provider it asked for (e.g. CUDA libraries
not found at run time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bundle.errors import VariantUnavailableError

PROVIDER_CHOICES = ("cpu", "cuda", "tensorrt")
ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
TRT_MAX_BATCH = 64  # the largest micro-batch the service cuts; the TRT profile covers up to this
TRT_CACHE_ENV = "TURNWISE_TRT_CACHE_DIR"


def available() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def check_choice(providers: str) -> str:
    key = providers.strip().lower()
    if key not in PROVIDER_CHOICES:
        raise VariantUnavailableError(f"unknown providers '{providers}' "
                                      f"(choose one of {', '.join(PROVIDER_CHOICES)})")
    return key


def require(providers: str) -> None:
    """Raise unless this onnxruntime build has the provider behind ``providers``."""
    key = check_choice(providers)
    have = available()
    if ORT_NAMES[key] not in have:
        hint = "install onnxruntime-gpu (with CUDA 12 / cuDNN 9)" if key == "cuda" else \
            "install onnxruntime-gpu built with TensorRT and the TensorRT libraries"
        raise VariantUnavailableError(
            f"providers='{key}' needs {ORT_NAMES[key]}, which this onnxruntime build does not have "
            f"(available: {', '.join(have)}); {hint}, or use providers='cpu'")


def default_trt_cache(tag: str) -> Path:
    root = os.environ.get(TRT_CACHE_ENV) or Path.home() / ".cache" / "turnwise" / "tensorrt"
    return Path(root) / tag


def provider_list(providers: str, *, input_names: list[str], max_tokens: int, cache_dir: Path | None = None,
                  fp16: bool = True, device_id: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """The (name, options) list for ``InferenceSession(providers=...)``, highest priority first."""
    key = check_choice(providers)
    cpu: tuple[str, dict[str, Any]] = ("CPUExecutionProvider", {})
    cuda: tuple[str, dict[str, Any]] = ("CUDAExecutionProvider", {
        "device_id": device_id,
        "arena_extend_strategy": "kSameAsRequested",  # grow by what a batch needs, not powers of two
        "do_copy_in_default_stream": True,
    })
    if key == "cpu":
        return [cpu]
    if key == "cuda":
        return [cuda, cpu]
    cache = Path(cache_dir) if cache_dir is not None else default_trt_cache("default")
    cache.mkdir(parents=True, exist_ok=True)

    def shapes(b: int, t: int) -> str:
        return ",".join(f"{n}:{b}x{t}" for n in input_names)

    trt: tuple[str, dict[str, Any]] = ("TensorrtExecutionProvider", {
        "device_id": device_id,
        "trt_fp16_enable": fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": shapes(1, 1),
        "trt_profile_opt_shapes": shapes(8, max_tokens),
        "trt_profile_max_shapes": shapes(TRT_MAX_BATCH, max_tokens),
    })
    return [trt, cuda, cpu]


def session_options(intra_op_threads: int | None = None, spinning: bool = True) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads is not None:
        if intra_op_threads < 1:
            raise ValueError("intra_op_threads must be >= 1")
        so.intra_op_num_threads = intra_op_threads
    # Idle intra-op threads spin (busy-wait) for the next call by default: lower latency per call, but CPU
    # the event loop and the store client then do not get on a small machine.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # One request stream per process: inter-op parallelism only adds thread contention for BERT graphs.
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only: TensorRT/CUDA fallback notices are checked explicitly
    return so


def create_session(model_path: Path, providers: str, *, input_names: list[str], max_tokens: int,
                   intra_op_threads: int | None = None, cache_dir: Path | None = None,
                   fp16: bool = True, spinning: bool = True) -> Any:
    """An InferenceSession on ``providers``; raises if the requested provider did not come up."""
    import onnxruntime as ort

    key = check_choice(providers)
    require(key)
    plist = provider_list(key, input_names=input_names, max_tokens=max_tokens, cache_dir=cache_dir, fp16=fp16)
    session = ort.InferenceSession(str(model_path), sess_options=session_options(intra_op_threads, spinning),
                                   providers=plist)
    got = session.get_providers()
    if not got or got[0] != ORT_NAMES[key]:
        raise VariantUnavailableError(
            f"providers='{key}' asked for {ORT_NAMES[key]} but the session runs on {got}: "
            "the provider's libraries failed to load (see onnxruntime's log)")
    return session
