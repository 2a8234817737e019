"""Checkpoints: a directory the exporter and evaluator load without the training code's state.

Layout::

    ckpt/
      turnwise.json        # format, tasks, window, backbone, pooling, train config, metrics, step
      config.json          # the encoder's HF config (architecture to rebuild it offline)
      model.safetensors    # TurnwiseModel state_dict (encoder.* and heads.*)
      tokenizer files      # with the [sys]/[usr] role tokens
      state/last.pt        # optimizer, scheduler, step, best metric, RNG: resumes a killed run

Writes are atomic per file (temp + rename), so a kill mid-save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainer.model import TurnwiseModel, load_tokenizer, model_from_config
from turnwise.errors import DataError
from turnwise.jsonl import dumps_json
from turnwise.names import CHECKPOINT_META, TRAINING_STATE, WEIGHTS_FILE
from turnwise.tasks import TaskSchema, parse_tasks
from turnwise.window import WindowConfig

CHECKPOINT_FORMAT = "turnwise-checkpoint/1"
META_FILE = CHECKPOINT_META
STATE_FILE = TRAINING_STATE


@dataclass
class Checkpoint:
    model: TurnwiseModel
    tokenizer: Any
    schema: TaskSchema
    window: WindowConfig
    meta: dict[str, Any] = field(default_factory=dict)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps_json(obj, indent=2, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(out_dir: str | Path, model: TurnwiseModel, tokenizer: Any, window: WindowConfig,
                    meta: dict[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, out / WEIGHTS_FILE)
    full = {
        "format": CHECKPOINT_FORMAT,
        "tasks": model.schema.to_dict(),
        "window": window.to_dict(),
        "pooling": model.pooling,
        **meta,
    }
    _atomic_json(out / META_FILE, full)
    return out


def read_meta(ckpt_dir: str | Path) -> dict[str, Any]:
    p = Path(ckpt_dir) / META_FILE
    if not p.exists():
        raise DataError(f"not a turnwise checkpoint (no {META_FILE})", path=str(ckpt_dir))
    meta = json.loads(p.read_text(encoding="utf-8"))
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"unsupported checkpoint format {meta.get('format')!r}", path=str(p))
    return meta


def load_checkpoint(ckpt_dir: str | Path) -> Checkpoint:
    d = Path(ckpt_dir)
    meta = read_meta(d)
    if not (d / WEIGHTS_FILE).exists():
        raise DataError(f"checkpoint has no {WEIGHTS_FILE}", path=str(d))
    schema = parse_tasks(meta["tasks"])
    model = model_from_config(d, schema, pooling=meta.get("pooling", "cls"))
    tokenizer = load_tokenizer(str(d))
    state = load_file(str(d / WEIGHTS_FILE))
    if model.encoder.get_input_embeddings().num_embeddings != len(tokenizer):
        raise DataError("tokenizer and weights disagree on the vocabulary size", path=str(d))
    model.load_state_dict(state, strict=True)
    model.eval()
    return Checkpoint(model=model, tokenizer=tokenizer, schema=schema,
                      window=WindowConfig.from_dict(meta["window"]), meta=meta)


def save_training_state(ckpt_dir: str | Path, state: dict[str, Any]) -> None:
    p = Path(ckpt_dir) / STATE_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, p)


def load_training_state(ckpt_dir: str | Path) -> dict[str, Any] | None:
    p = Path(ckpt_dir) / STATE_FILE
    if not p.exists():
        return None
    return torch.load(p, map_location="cpu", weights_only=False)
