"""MODEL_CARD.md: what the model is, what it was trained on, how well it does, and where it stops working.

Rendered from the bundle manifest and the checkpoint's ``turnwise.json``; anything the checkpoint does
not record is said to be unknown rather than left out.
"""

from __future__ import annotations

import json
from typing import Any


def _fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _metrics_section(metrics: dict[str, Any] | None) -> list[str]:
    if not metrics:
        return ["No evaluation metrics were recorded in the checkpoint: treat this model as unevaluated."]
    lines: list[str] = []
    if "select" in metrics or "score" in metrics:
        lines.append(f"Model selection: `{metrics.get('select', '?')}` = {_fmt(metrics.get('score', '?'))}"
                     " (on the checkpoint's validation split).")
        lines.append("")
    tasks = metrics.get("tasks")
    if isinstance(tasks, dict) and tasks:
        lines += ["| task | n | accuracy | macro F1 |", "| --- | ---: | ---: | ---: |"]
        for name, m in tasks.items():
            if isinstance(m, dict):
                lines.append(f"| {name} | {m.get('n', '')} | {_fmt(m.get('accuracy', ''))} | "
                             f"{_fmt(m.get('macro_f1', ''))} |")
    else:
        lines += ["```json", json.dumps(metrics, indent=2)[:4000], "```"]
    return lines


def _window_line(window: dict[str, Any]) -> str:
    if window.get("format") == "turn-causal-v1":
        return (f"- Window: turn-causal spans of at most {window['max_context_tokens']} tokens (format "
                f"`{window['format']}`), re-anchored to the last {window['reanchor_tokens']} tokens of turns "
                "when a turn would overflow; ONNX graph: one step per turn over the cached keys/values")
    return (f"- Window: last {window['max_turns']} turns, at most {window['max_tokens']} tokens, truncated "
            f"from the left (format `{window['format']}`: `[sys]`/`[usr]` role tags, the scored turn last)")


def render_card(manifest: dict[str, Any], meta: dict[str, Any]) -> str:
    train = meta.get("train_config") or {}
    teacher = meta.get("teacher")
    window = manifest["window"]
    pairwise = (f" (alpha {train.get('alpha')}, pairs {train.get('pair_mode')})"
                if train.get("objective") == "pairwise" else "")
    lines = [
        f"# {manifest['name']} {manifest['version']}",
        "",
        "Scores every utterance of a live conversation with the context up to it: "
        + ("one head per task on the role-tag state of each turn of a turn-causal BERT-style encoder "
           "(no token sees a later turn; the service caches each call's keys/values)."
           if window.get("format") == "turn-causal-v1" else
           "one head per task on the [CLS] state of a BERT-style encoder."),
        "",
        "## Model",
        f"- Backbone: `{manifest.get('backbone')}` ({_arch(manifest.get('architecture') or {})})",
        _window_line(window),
        f"- Variants: {', '.join(f'`{v}` ({f})' for v, f in manifest['variants'].items())}",
        f"- Exported: {manifest.get('created_at')}",
        "",
        "## Tasks",
        "| task | type | labels |",
        "| --- | --- | --- |",
    ]
    for name, task in manifest["tasks"].items():
        lines.append(f"| {name} | {task['type']} | {', '.join(task['labels'])} |")
    lines += [
        "",
        "## Data and teacher",
        f"- Training objective: {train.get('objective', 'unknown')}{pairwise}",
        f"- Gold fraction: {train.get('gold_fraction', 'unknown')}; "
        f"gold dialogues: {meta.get('gold_dialogues', 'unknown')}; "
        f"training dialogues: {meta.get('train_dialogues', 'unknown')}",
        f"- Data: {meta.get('data', 'not recorded in the checkpoint')}",
        "- Teacher: " + (json.dumps(teacher) if teacher else "none (gold labels only)"),
        "",
        "## Metrics",
        *_metrics_section(manifest.get("metrics")),
        "",
        "## Export parity (vs the PyTorch checkpoint, fixed probe set)",
        "| variant | max abs logit diff | min label agreement | tolerance | measured on | passed |",
        "| --- | ---: | ---: | --- | --- | --- |",
    ]
    for variant, rec in manifest["parity"].items():
        tol = rec["tolerance"]
        tol_s = ", ".join(f"{k} {v}" for k, v in tol.items() if v is not None)
        lines.append(f"| {variant} | {rec['max_abs_diff']:.3g} | {rec['min_label_agreement']:.4f} | "
                     f"{tol_s} | {rec['measured_on']['device']} | {rec['passed']} |")
    lines += [
        "",
        "## Limits",
        (f"- Sees only the current span (at most {window['max_context_tokens']} tokens, at least "
         f"{window['reanchor_tokens']} after a re-anchor): earlier context is invisible."
         if window.get("format") == "turn-causal-v1" else
         f"- Sees only the last {window['max_turns']} turns / {window['max_tokens']} tokens: "
         "earlier context is invisible."),
        "- Trained on the data above only; English support-call style text. Expect lower accuracy on other "
        "domains, languages, or ASR transcripts with heavy errors.",
        "- Scores are model probabilities, not calibrated confidence unless the evaluation says so.",
        "- int8 / fp16 variants agree with fp32 on at least the recorded label agreement, "
        "not on every input.",
        "- Pairwise pretraining fixes each class score only up to a per-class constant: a model without "
        "finetuning on gold labels should not be used for argmax decisions.",
        "",
    ]
    return "\n".join(lines)


def _arch(arch: dict[str, Any]) -> str:
    if not arch:
        return "architecture not recorded"
    return (f"{arch.get('model_type', 'bert')}, {arch.get('num_layers')} layers, "
            f"hidden {arch.get('hidden_size')}, {arch.get('num_heads')} heads, pooling {arch.get('pooling')}")
