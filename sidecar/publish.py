"""Finetune -> export a candidate -> the regression gate -> publish it as a new bundle version.

**Checkpoints.** A bundle holds ONNX graphs, not PyTorch weights. The sidecar keeps the checkpoint of
every version it publishes in ``<state_dir>/checkpoints/<version>/``; for a version it did not
build (the seed bundle) it uses ``checkpoint`` (``TURNWISE_SIDECAR_CHECKPOINT``) or, if that path
exists, the ``source_checkpoint.path`` recorded in the bundle's manifest (:func:`resolve_checkpoint`).

**Training.** A finetune starts from the serving checkpoint (``objective="none"``, small learning
rates, ``epochs``/``max_steps``) on the feedback dialogues of :mod:`sidecar.data`. It can be
interrupted at the next step (SIGTERM); nothing is published then.

**Publishing.** The candidate is exported next to the versions (same filesystem), evaluated, then
``rename(.candidate-<v>, <root>/<v>)`` and the ``current`` symlink is swapped by renaming a fresh
relative symlink over it: a reader sees the old or the new version, never neither. The service's
bundle watcher hot-reloads it. "Not worse" (:func:`should_publish`): candidate score >= serving
score - ``max_regression`` (score = mean accuracy over the tasks with held-out gold), on at least
``min_heldout_labels`` labels.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.data import count_labels
from sidecar.errors import Interrupted, SidecarError
from sidecar.ledger import AttemptReport
from sidecar.settings import SidecarSettings
from turnwise.dialogue import Dialogue
from turnwise.names import BUNDLE_MANIFEST, CHECKPOINT_META, TRAINING_STATE
from turnwise.tasks import parse_tasks
from turnwise.window import WindowConfig

log = logging.getLogger("turnwise.sidecar")


# --- the regression gate ---------------------------------------------------------------------------
def should_publish(serving_score: float, candidate_score: float, max_regression: float = 0.0) -> bool:
    """The rule: publish only if the candidate is not worse than the serving model (within tolerance)."""
    return candidate_score >= serving_score - max_regression - 1e-12


# --- the serving checkpoint ------------------------------------------------------------------------
def resolve_checkpoint(manifest: dict[str, Any], *, own: Path, setting: Path | None) -> Path:
    """The PyTorch checkpoint behind the serving bundle: the sidecar's own (``own/<version>``), else the
    setting, else the manifest's recorded source; it must have the bundle's tasks and window."""
    from trainer.checkpoint import read_meta

    version = str(manifest["version"])
    candidates: list[tuple[str, Path]] = [("state dir", own / version)]
    if setting:
        candidates.append(("TURNWISE_SIDECAR_CHECKPOINT", Path(setting)))
    src = (manifest.get("source_checkpoint") or {}).get("path")
    if src:
        candidates.append((f"{BUNDLE_MANIFEST} source_checkpoint", Path(src)))
    for origin, path in candidates:
        if not (path / CHECKPOINT_META).exists():
            continue
        meta = read_meta(path)
        if meta.get("tasks", {}).get("tasks") != manifest.get("tasks") or meta.get("window") != manifest.get(
                "window"):
            raise SidecarError(f"checkpoint {path} ({origin}) does not match the serving bundle {version}: "
                               "different tasks or window")
        return path
    raise SidecarError(f"no PyTorch checkpoint for the serving bundle version {version}: set "
                       "TURNWISE_SIDECAR_CHECKPOINT to the checkpoint it was exported from")


def prune_checkpoints(root: Path, serving: str | None, keep: int) -> None:
    """Keep the serving version's checkpoint and the newest ``keep`` others under ``root``."""
    ckpts = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in ckpts if p.name != serving][keep:]:
        shutil.rmtree(old, ignore_errors=True)


# --- finetune, export, evaluate --------------------------------------------------------------------
def finetune_checkpoint(parent: Path, dialogues: list[Dialogue], out: Path, manifest: dict[str, Any],
                        report: AttemptReport, settings: SidecarSettings, *, work: Path,
                        should_stop: Callable[[], bool]) -> None:
    """Finetune ``parent`` on the feedback into checkpoint ``out`` (no optimizer state kept).

    Written to ``.partial-<name>`` and renamed into place when complete; ``should_stop`` is asked at
    every step (True: :class:`~sidecar.errors.Interrupted`)."""
    from trainer.checkpoint import load_checkpoint, read_meta
    from trainer.train import TrainConfig, train

    s = settings
    parent_meta = read_meta(parent)
    partial = out.with_name(f".partial-{out.name}")
    shutil.rmtree(partial, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="backbone-", dir=work) as tmp:
        # The parent's own encoder as the backbone: the run never needs the original backbone (an HF
        # id or a path on the build machine); init_from then loads encoder and heads strictly.
        ckpt = load_checkpoint(parent)
        ckpt.model.encoder.save_pretrained(tmp)
        ckpt.tokenizer.save_pretrained(tmp)
        del ckpt
        # The new model keeps the serving bundle's window: flat, or the streaming spans.
        window = WindowConfig.from_dict(manifest["window"])
        shape: dict[str, Any] = ({"encoder": "streaming", "max_context_tokens": window.max_context_tokens,
                  "reanchor_tokens": window.reanchor_tokens} if window.streaming else
                 {"encoder": "flat", "max_turns": window.max_turns, "max_tokens": window.max_tokens})
        cfg = TrainConfig(objective="none", backbone=tmp, init_from=str(parent), **shape,
                          pooling=parent_meta.get("pooling", "cls"), finetune_epochs=s.epochs,
                          batch_size=s.batch_size, finetune_lr=s.lr, head_lr=s.head_lr, max_steps=s.max_steps,
                          precision=s.precision, seed=s.seed, save_every=10**9)

        def progress(phase: str, step: int, total: int, info: dict[str, float]) -> None:
            if should_stop():
                raise Interrupted()

        log.info("finetuning %s on %d labelled turns", parent.name, count_labels(dialogues))
        result = train(cfg, dialogues, parse_tasks(parent_meta["tasks"]), partial, progress=progress)
    # optimizer state: not needed to finetune again
    shutil.rmtree((partial / TRAINING_STATE).parent, ignore_errors=True)
    meta_path = partial / CHECKPOINT_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["train_config"]["backbone"] = meta["backbone"] = parent_meta.get("backbone")
    meta.update({
        "name": manifest.get("name"), "version": report.version, "parent_version": report.parent_version,
        "feedback": {"labels": count_labels(dialogues), "watermark": report.watermark,
                     "steps": result.steps},
    })
    tmp_meta = meta_path.with_suffix(".json.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    os.replace(tmp_meta, meta_path)
    os.rename(partial, out)


def export_candidate(ckpt: Path, out: Path, manifest: dict[str, Any], version: str, variants: str = "") -> Path:
    """Export ``ckpt`` as bundle ``version`` into ``out``: the ``variants`` listed (comma-separated), or
    the serving bundle's."""
    from export.cli import run_export

    chosen = [v.strip() for v in variants.split(",") if v.strip()] or list(manifest["variants"])
    return run_export(ckpt, out, chosen, name=str(manifest.get("name") or "turnwise"), version=version)


def evaluate_bundle(bundle: Path, dialogues: list[Dialogue]) -> float:
    """The held-out score of a bundle: mean accuracy over the tasks with gold."""
    from trainer.evaluate import evaluate_path

    return float(evaluate_path(bundle, dialogues)["score"])


# --- publishing ------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` (a name in the same directory) atomically: rename a new symlink over it."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp, target_is_directory=True)  # relative: valid wherever the volume is mounted
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def publish_bundle(candidate: Path, link: Path, version: str) -> Path:
    """Move a verified candidate to ``<root>/<version>/`` and re-point ``link`` at it (both atomic)."""
    if not link.is_symlink():
        raise SidecarError(f"{link} is not a symlink; the sidecar publishes by re-pointing a symlink")
    final = link.parent / version
    if final.exists() or final.is_symlink():
        raise SidecarError(f"bundle version {final} already exists; refusing to overwrite it")
    os.rename(candidate, final)  # same filesystem: the candidate was exported next to the versions
    _fsync_dir(link.parent)
    swap_link(link, version)
    return final


def new_version(root: Path, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    base = f"ft-{now:%Y%m%dT%H%M%SZ}"
    version, n = base, 1
    while (root / version).exists() or (root / f".candidate-{version}").exists():
        n += 1
        version = f"{base}-{n}"
    return version
