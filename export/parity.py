"""Parity proof: every exported variant against the PyTorch checkpoint on a fixed probe set.

The probe set is real formatted windows: dialogues (``samples/dialogues.jsonl`` or a given file) cut
into segments x_i = u_1..u_i by :func:`turnwise.window.segments` and encoded by the one window
formatter, so lengths range from a single short turn up to left-truncated ``max_tokens`` windows.
Selection is deterministic (evenly spaced over the file order) and the set is identified by a digest
of its token ids, recorded with every parity figure.

Per output ``logits_<task>``: max and mean absolute difference, and label agreement (argmax for
single-label tasks, the 0.5-threshold decision per label for multilabel ones, via
:mod:`turnwise.scoring`). A variant passes when every output is within its tolerance; otherwise
:func:`check` raises :class:`ParityError` naming the output and the difference.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bundle.parity_record import first_failure
from export.errors import ExportError, ParityError
from turnwise.dialogue import read_jsonl
from turnwise.names import ONNX_INPUTS
from turnwise.scoring import predict_indices, probabilities
from turnwise.tasks import TaskSchema
from turnwise.window import WindowConfig, encode_windows, pad_batch, windows_of

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIALOGUES = REPO / "samples" / "dialogues.jsonl"
MAX_PROBES = 1024  # the project sample gives ~530 windows; all of them are used
PROBE_BATCH = 16

# Used only when neither a probe file nor the project's sample exists (an installed package):
# short support-call turns, plus one long turn so that left truncation is probed too.
BUILTIN_DIALOGUES: list[list[tuple[str, str]]] = [
    [("agent", "Thanks for calling, how can I help?"),
     ("customer", "My card was charged twice for the same order."),
     ("agent", "Sorry to hear that. Which card was it?"),
     ("customer", "The visa ending in 4421."),
     ("agent", "I see both charges. I will refund the second one now."),
     ("customer", "Great, thank you so much!"),
     ("agent", "Is there anything else I can do for you?"),
     ("customer", "No, that's all.")],
    [("customer", "hi"),
     ("agent", "Hello! What can I do for you today?"),
     ("customer", "I want to cancel my subscription, this is the third outage this month and I am fed up "
                  "with paying for a service that never works when I need it, honestly it is ridiculous, "
                  "every single time I call I get the same excuses about maintenance and upgrades."),
     ("agent", "I understand. Could you confirm the account holder's name?"),
     ("customer", "Alex Moreno."),
     ("agent", "Thank you. Before I cancel, may I offer you a month free?"),
     ("customer", "Fine, I'll take the free month."),
     ("agent", "Done. You will see the credit on your next bill.")],
]


@dataclass
class ProbeSet:
    seqs: list[list[int]]
    source: str

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for s in self.seqs:
            h.update(np.asarray(s, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        lengths = sorted(len(s) for s in self.seqs)
        return {"source": self.source, "windows": len(self.seqs), "digest": self.digest,
                "tokens": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]}}


def _windows_from(dialogues: Sequence[Sequence[Any]], window: WindowConfig) -> list[list[Any]]:
    return [w for turns in dialogues for w in windows_of(list(turns), window)]


def _spread(items: list[Any], k: int) -> list[Any]:
    """``k`` items evenly spaced over ``items`` (first and last included): a fixed, order-preserving pick."""
    if len(items) <= k:
        return items
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in idx]


def probe_dialogues(probe_data: Path | None = None) -> tuple[list[Any], str]:
    """(each dialogue's turns, where they came from): ``probe_data``, else the project's sample, else
    the built-in dialogues. Both probe sets (flat windows, streaming dialogues) start here."""
    if probe_data is not None:
        if not Path(probe_data).exists():
            raise ExportError(f"probe data not found: {probe_data}")
        return [d.turns for d in read_jsonl(probe_data)], str(probe_data)
    if SAMPLE_DIALOGUES.exists():
        return [d.turns for d in read_jsonl(SAMPLE_DIALOGUES)], "samples/dialogues.jsonl"
    return [[{"speaker": s, "text": t} for s, t in d] for d in BUILTIN_DIALOGUES], "builtin"


def build_probe_set(tokenizer: Any, window: WindowConfig, probe_data: Path | None = None,
                    max_windows: int = MAX_PROBES) -> ProbeSet:
    """Encoded probe windows from :func:`probe_dialogues`."""
    dialogues, source = probe_dialogues(probe_data)
    windows = _spread(_windows_from(dialogues, window), max_windows)
    if not windows:
        raise ExportError(f"the probe set from {source} is empty")
    return ProbeSet(seqs=encode_windows(windows, tokenizer, window), source=source)


def pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


INPUTS = ONNX_INPUTS  # TurnwiseModel.forward's positional order
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def run_probes(probes: ProbeSet, run: Runner, pad: int) -> dict[str, np.ndarray]:
    """Concatenated outputs of ``run`` over the probe batches: {output name: (N, C) float64}."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(probes.seqs), PROBE_BATCH):
        feed = pad_batch(probes.seqs[i : i + PROBE_BATCH], pad)
        for name, value in run(feed).items():
            parts.setdefault(name, []).append(np.asarray(value, dtype=np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def torch_runner(model: Any, output_names: Sequence[str]) -> Runner:
    import torch

    model.eval()

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model(*(torch.from_numpy(feed[k]) for k in INPUTS))
        return {n: t.float().numpy() for n, t in zip(output_names, out, strict=True)}

    return run


def ort_runner(session: Any) -> Runner:
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(None, {n: feed[n] for n in names}), strict=True))

    return run


@dataclass(frozen=True)
class Tolerance:
    max_abs_diff: float | None  # None: recorded, not gated
    min_label_agreement: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"max_abs_diff": self.max_abs_diff, "min_label_agreement": self.min_label_agreement}


def compare(schema: TaskSchema, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
            output_for_task: Callable[[str], str]) -> dict[str, dict[str, float]]:
    """Per output: max/mean abs diff and label agreement of ``candidate`` vs ``reference``."""
    per_output: dict[str, dict[str, float]] = {}
    for task in schema.names():
        name = output_for_task(task)
        ref, got = reference[name], candidate[name]
        if ref.shape != got.shape:
            raise ExportError(f"output '{name}' has shape {got.shape}, the checkpoint gives {ref.shape}")
        ttype = schema[task].type
        same = (predict_indices(ttype, probabilities(ttype, ref))
                == predict_indices(ttype, probabilities(ttype, got)))
        diff = np.abs(ref - got)
        per_output[name] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                            "label_agreement": float(same.mean())}
    return per_output


def device_description(provider: str) -> str:
    if provider == "CPUExecutionProvider":
        return f"cpu: {cpu_model()} ({platform.machine()})"
    return provider


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def record(variant: str, file: str, per_output: dict[str, dict[str, float]], tol: Tolerance,
           probes: ProbeSet, provider: str) -> dict[str, Any]:
    """The bundle.json parity entry for one variant (``passed`` from the tolerance, not assumed)."""
    return record_with(variant, file, per_output, tol, probes.describe(), provider)


def record_with(variant: str, file: str, per_output: dict[str, dict[str, float]], tol: Tolerance,
                probe: dict[str, Any], provider: str) -> dict[str, Any]:
    """:func:`record` for any probe set, given its description."""
    rec: dict[str, Any] = {
        "file": file,
        "outputs": per_output,
        "max_abs_diff": max(v["max_abs_diff"] for v in per_output.values()),
        "min_label_agreement": min(v["label_agreement"] for v in per_output.values()),
        "tolerance": tol.to_dict(),
        "measured_on": {"provider": provider, "device": device_description(provider)},
        "probe": probe,
    }
    rec["passed"] = first_failure(rec) is None
    return rec


def check(variant: str, rec: dict[str, Any]) -> None:
    """Raise :class:`ParityError` for the worst output of a failing record."""
    failure = first_failure(rec)
    if failure is not None:
        raise ParityError(variant, *failure)


def parity_session(path: Path, variant: str) -> tuple[Any, str]:
    """A session to measure ``variant`` on: CPU when it runs there (fp16 included), else CUDA."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    errors = []
    candidates = ["CPUExecutionProvider"]
    if variant == "fp16" and "CUDAExecutionProvider" in ort.get_available_providers():
        candidates.append("CUDAExecutionProvider")
    for provider in candidates:
        try:
            return ort.InferenceSession(str(path), sess_options=so, providers=[provider]), provider
        except Exception as err:  # onnxruntime raises its own untyped Fail / NotImplemented errors
            errors.append(f"{provider}: {err}")
    raise ExportError(f"cannot measure parity of variant '{variant}' ({path.name}): "
                      "no provider here runs it: " + "; ".join(errors))
