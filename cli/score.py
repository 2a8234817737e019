"""``turnwise score``: every turn of every dialogue of a file scored offline by a model bundle.

Each turn is scored with exactly the context a live call gives it in the service: the service's own
engine loads and checks the bundle (:meth:`service.engine.Engine.load_checked`), the windows are
:func:`turnwise.window.windows_of` over the call's turns as the service keeps them (the last
``window.max_turns``, speaker and text stripped), encoded by the engine's tokenizer and decoded by its
``compute`` -- so a file scored here and the same calls streamed into ``turnwise serve`` get the same
labels. A turn with empty text is refused by the service (422), so here it is reported as skipped and
left out of later windows, as it would be live.

Output: one JSON line per turn, in input order::

    {"dialogue_id": "call-0042", "seq": 3, "speaker": "customer", "text": "...", "labels": {...},
     "scores": {...}, "window_turns": 4, "gold": {...}}
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from turnwise.dialogue import Dialogue, read_jsonl
from turnwise.errors import DataError
from turnwise.jsonl import dumps_json
from turnwise.names import BUNDLE_MANIFEST, CHECKPOINT_META
from turnwise.scoring import decode
from turnwise.window import plan_spans, windows_of

console = Console(stderr=True)
CHUNK_DIALOGUES = 64  # dialogues tokenized and scored together (memory stays flat on large files)
SKIPPED_EMPTY = "empty text (the service refuses it, so it is in no window)"


def load_dialogues(data: Path, source: str, split: str | None, max_dialogues: int | None) -> list[Dialogue]:
    if source == "jsonl":
        if data.is_dir():
            raise DataError("a folder, not a JSONL file: pass --source with the corpus it holds", path=str(data))
        dialogues = read_jsonl(data)
        return dialogues[:max_dialogues] if max_dialogues else dialogues
    from trainer.data import load_source

    return load_source(source, data, split, max_dialogues=max_dialogues)


def check_bundle(model: Path) -> None:
    if not model.exists():
        raise DataError("model bundle not found", path=str(model))
    if not (model / BUNDLE_MANIFEST).exists():
        if (model / CHECKPOINT_META).exists():
            raise DataError("a training checkpoint, not a bundle: export it first (turnwise export --checkpoint "
                            f"{model} --out BUNDLE)", path=str(model))
        raise DataError(f"not a model bundle (no {BUNDLE_MANIFEST})", path=str(model))


def _served_turns(d: Dialogue) -> tuple[list[int], list[dict[str, str]]]:
    """Indices and (speaker, text) of the turns the service would accept, as it stores them."""
    kept = [(i, {"speaker": t.speaker.strip(), "text": t.text.strip()}) for i, t in enumerate(d.turns)
            if t.text.strip() and t.speaker.strip()]
    return [i for i, _ in kept], [t for _, t in kept]


class _Plain:
    """Progress as plain lines (every 10 %) where stderr is not a terminal."""

    def __init__(self, total: int):
        self.total, self.done, self.tenth = total, 0, -1

    def advance(self, n: int) -> None:
        self.done += n
        tenth = self.done * 10 // max(1, self.total)
        if tenth > self.tenth:
            self.tenth = tenth
            console.print(f"scoring: {self.done}/{self.total} turns", highlight=False, markup=False)


def _chunks(dialogues: Sequence[Dialogue], size: int) -> Iterator[Sequence[Dialogue]]:
    for start in range(0, len(dialogues), size):
        yield dialogues[start : start + size]


def run_score(model: Path, data: Path, out: Path, *, source: str = "jsonl", split: str | None = None,
              max_dialogues: int | None = None, variant: str = "auto", batch_size: int = 32) -> dict[str, Any]:
    """Score ``data`` with the bundle ``model``; write one prediction per turn to ``out``; return a summary."""
    from service.cli import settings_from
    from service.engine import Engine

    t0 = time.perf_counter()
    check_bundle(model)
    dialogues = load_dialogues(data, source, split, max_dialogues)
    if not dialogues:
        raise DataError("no dialogue to score", path=str(data))
    engine = Engine(settings_from({"bundle": model, "variant": variant, "reload_poll_s": 0}))
    try:
        bundle = engine.load_checked()
        total = sum(len(d.turns) for d in dialogues)
        counts = {"scored": 0, "skipped": 0}
        agree: dict[str, list[bool]] = {}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        plain = None if console.is_terminal else _Plain(total)
        columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("turns"), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with tmp.open("w", encoding="utf-8") as fh, \
                Progress(*columns, console=console, disable=plain is not None) as bar:
            job = bar.add_task("scoring", total=total)
            for chunk in _chunks(dialogues, CHUNK_DIALOGUES):
                lines = _score_chunk(engine, bundle, chunk, batch_size, counts, agree)
                fh.writelines(lines)
                bar.advance(job, len(lines))
                if plain is not None:
                    plain.advance(len(lines))
        tmp.replace(out)
    finally:
        engine.close()
    wall = time.perf_counter() - t0
    return {
        "model": f"{bundle.name}@{bundle.version}", "variant": str(bundle.variant), "window": bundle.window.to_dict(),
        "out": str(out), "dialogues": len(dialogues), "turns": total, **counts,
        "wall_s": round(wall, 2), "turns_per_s": round(counts["scored"] / wall, 1) if wall > 0 else None,
        "agreement_with_gold": {t: round(sum(v) / len(v), 4) for t, v in sorted(agree.items()) if v},
    }


def _score_windows(engine: Any, bundle: Any, chunk: Sequence[Dialogue],
                   batch_size: int) -> dict[tuple[int, int], tuple[dict[str, Any], int]]:
    """Flat bundles: every turn's window, scored in length-sorted batches."""
    jobs: list[tuple[int, int, int]] = []  # (dialogue in chunk, turn index, window turns)
    windows: list[list[dict[str, str]]] = []
    for di, d in enumerate(chunk):
        index, turns = _served_turns(d)
        for ti, window in zip(index, windows_of(turns, bundle.window), strict=True):
            jobs.append((di, ti, len(window)))
            windows.append(window)
    ids = engine.encode(bundle, windows) if windows else []
    rows: list[dict[str, Any] | None] = [None] * len(ids)
    order = sorted(range(len(ids)), key=lambda k: len(ids[k]))
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        for k, row in zip(part, engine.compute(bundle, [ids[k] for k in part]), strict=True):
            rows[k] = row
    return {(di, ti): (rows[k], n) for k, (di, ti, n) in enumerate(jobs)}  # type: ignore[misc]


Scored = dict[tuple[int, int], tuple[dict[str, Any], int]]  # (dialogue, turn) -> (row, turns seen)


def _score_spans(engine: Any, bundle: Any, chunk: Sequence[Dialogue]) -> Scored:
    """Streaming bundles: one pass per span of each call (the spans the service's steps reproduce)."""
    out: dict[tuple[int, int], tuple[dict[str, Any], int]] = {}
    for di, d in enumerate(chunk):
        index, turns = _served_turns(d)
        if not turns:
            continue
        ids = engine.turn_ids(bundle, turns)
        spans = plan_spans([len(t) for t in ids], bundle.window)
        results = engine.compute_steps(bundle, [bundle.rebuild_request(ids[s.start : s.end]) for s in spans])
        for span, (logits, _kv) in zip(spans, results, strict=True):
            skip = span.first - span.start
            rows = decode(bundle.schema, {t: v[skip:] for t, v in logits.items()})
            for k, row in enumerate(rows):
                out[(di, index[span.first + k])] = (row, skip + k + 1)
    return out


def _score_chunk(engine: Any, bundle: Any, chunk: Sequence[Dialogue], batch_size: int, counts: dict[str, int],
                 agree: dict[str, list[bool]]) -> list[str]:
    """JSON lines for every turn of ``chunk`` (input order); windows scored in length-sorted batches."""
    if bundle.streaming:
        by_turn = _score_spans(engine, bundle, chunk)
    else:
        by_turn = _score_windows(engine, bundle, chunk, batch_size)
    lines = []
    for di, d in enumerate(chunk):
        for ti, turn in enumerate(d.turns):
            rec: dict[str, Any] = {"dialogue_id": d.dialogue_id, "seq": ti, "speaker": turn.speaker, "text": turn.text}
            got = by_turn.get((di, ti))
            if got is None:
                rec["skipped"] = SKIPPED_EMPTY
                counts["skipped"] += 1
            else:
                row, n = got
                assert row is not None
                rec.update(labels=row["labels"], scores=row["scores"], window_turns=n)
                counts["scored"] += 1
                for task, gold in turn.labels.items():
                    if task in row["labels"]:
                        agree.setdefault(task, []).append(row["labels"][task] == gold)
            if turn.labels:
                rec["gold"] = turn.labels
            lines.append(dumps_json(rec, ensure_ascii=False) + "\n")
    return lines
