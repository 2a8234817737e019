"""What ``turnwise label`` and ``turnwise calibrate`` run. The typer layer only parses options.

``run_label`` writes the teacher-scores JSONL (``out``) and a summary next to it
(``<out stem>.summary.json``); ``--plan`` prints what an LLM run would cost and writes nothing.
``run_calibrate`` writes ``calibration.json`` and three PNGs into ``out``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trainer.data import load_source, resolve_schema
from trainer.teachers.progress import labelling
from trainer.teachers.scores import ScoreRecord, read_scores, write_scores
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.jsonl import dumps_json
from turnwise.tasks import TaskSchema, TaskType

TEACHERS = ("llm", "zeroshot", "fewshot", "simulated")
console = Console(stderr=True)


# --------------------------------------------------------------------------------------------------
# Inputs


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 <= i < n, the Kubernetes Indexed Job's completion index) -> (i, n)."""
    if shard is None:
        return None
    try:
        i_s, n_s = shard.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise DataError(f"--shard must look like i/n (e.g. 0/4), got '{shard}'") from None
    if n < 1 or not 0 <= i < n:
        raise DataError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def shard_of(dialogue_id: str, n: int) -> int:
    """A stable shard index: the same on every machine and Python version (no ``hash()`` salt)."""
    return int.from_bytes(hashlib.sha256(dialogue_id.encode("utf-8")).digest()[:8], "big") % n


def select_shard(dialogues: Sequence[Dialogue], shard: str | None) -> list[Dialogue]:
    parsed = parse_shard(shard)
    if parsed is None:
        return list(dialogues)
    i, n = parsed
    return [d for d in dialogues if shard_of(d.dialogue_id, n) == i]


# --------------------------------------------------------------------------------------------------
# Summaries


def gold_accuracy(dialogues: Sequence[Dialogue], records: Sequence[ScoreRecord],
                  schema: TaskSchema) -> dict[str, dict[str, Any]]:
    """Per task: argmax S vs gold on turns with a gold label and at least one valid vote (multilabel:
    per-(turn, class) accuracy of S >= 0.5)."""
    by_id = {d.dialogue_id: d for d in dialogues}
    out: dict[str, dict[str, Any]] = {}
    for name in schema.names():
        task = schema[name]
        hits = total = abstained = 0
        for r in records:
            if r.task != name:
                continue
            d = by_id[r.dialogue_id]
            s = r.array()
            for i, (t, ok) in enumerate(zip(d.turns, r.valid, strict=True)):
                if name not in t.labels:
                    continue
                if not ok:
                    abstained += 1
                    continue
                gold = np.array(task.encode(t.labels[name]))
                if task.type is TaskType.multilabel:
                    hits += int(((s[i] >= 0.5) == (gold > 0.5)).sum())
                    total += len(gold)
                else:
                    hits += int(s[i].argmax() == gold.argmax())
                    total += 1
        if total or abstained:
            out[name] = {"accuracy": hits / total if total else None, "scored_gold": total,
                         "gold_turns_all_abstained": abstained}
    return out


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"turnwise label — {summary['teacher']} teacher", show_header=False)
    for key in ("note", "out", "dialogues", "turns", "records", "samples", "shard", "abstention_rate", "wall_s"):
        if summary.get(key) is not None:
            table.add_row(key, escape(str(summary[key])))
    for name, acc in summary.get("accuracy_vs_gold", {}).items():
        a = acc["accuracy"]
        table.add_row(escape(f"accuracy[{name}]"),
                      "n/a" if a is None else f"{a:.4f} on {acc['scored_gold']} gold labels")
    if "usage" in summary:
        u = summary["usage"]
        table.add_row("requests", f"{u['requests']} ({u['failed_requests']} failed, "
                                  f"n supported: {summary.get('n_supported')})")
        table.add_row("tokens", f"{u['prompt_tokens']} prompt + {u['completion_tokens']} completion")
        table.add_row("samples", f"{u['samples_fetched']} fetched, {u['samples_cached']} from cache")
        table.add_row("cost_usd", str(summary.get("cost_usd")))
    console.print(table)


def _print_plan(plan: dict[str, Any]) -> None:
    table = Table(title="turnwise label --plan (nothing was sent)", show_header=False)
    for k, v in plan.items():
        if k != "per_prompt":
            table.add_row(k, escape(json.dumps(v) if isinstance(v, dict | list) else str(v)))
    console.print(table)


# --------------------------------------------------------------------------------------------------
# label


def run_label(data: Path, tasks: Path | None, teacher: str, samples: int, out: Path, *,
              endpoint: str | None = None, model: str | None = None, prompts: Path | None = None,
              cache: Path | None = None, concurrency: int = 4, rate: float | None = None,
              temperature: float = 0.7, top_p: float = 0.95, plan: bool = False, shard: str | None = None,
              seed: int = 0, noise: dict | None = None, max_dialogues: int | None = None, source: str = "jsonl",
              split: str | None = None, price_table: Path | None = None, allow_unlabelled: bool = False,
              gold_pool: Path | None = None, gold_pool_split: str | None = "train",
              gold_pool_dialogues: int | None = None, shots: int = 32) -> dict:
    """Label ``data`` with a teacher; write the scores JSONL to ``out``; return a summary dict.

    ``cache`` (llm: the SQLite response cache, default ``<out stem>.cache.sqlite`` beside ``out``;
    zeroshot: an embedding cache, none by default). ``noise``: simulated-teacher parameters
    (:class:`trainer.teachers.simulated.NoiseConfig`). ``plan``: report what the run would do, send nothing.
    fewshot: ``shots`` labelled turns per class come from ``gold_pool`` (read like ``data``, split
    ``gold_pool_split``, its first ``gold_pool_dialogues``) and from nothing else.
    """
    if teacher not in TEACHERS:
        raise DataError(f"unknown teacher '{teacher}' (expected one of {', '.join(TEACHERS)})")
    if samples < 1:
        raise DataError("--samples must be >= 1")
    if noise and teacher != "simulated":
        raise DataError("noise parameters apply to --teacher simulated only")
    out = Path(out)
    t0 = time.perf_counter()
    schema = resolve_schema(tasks, source)
    dialogues = select_shard(load_source(source, Path(data), split, max_dialogues=max_dialogues), shard)
    dialogues = [d for d in dialogues if d.turns]
    if not dialogues:
        raise DataError("no dialogue to label (empty data, or an empty shard)")
    n_turns = sum(len(d.turns) for d in dialogues)
    from trainer.data.checks import check_task_coverage

    # A task nothing in the data is labelled with is usually a misspelt name in the schema; raw
    # transcripts without any gold label are what a teacher is for.
    for warning in check_task_coverage(schema, dialogues, allow_unlabelled=allow_unlabelled, allow_no_gold=True):
        console.print(f"[yellow]warning:[/] {escape(warning)}")

    from trainer.teachers.prompts import PromptBank

    summary: dict[str, Any] = {"teacher": teacher, "tasks": schema.names(), "samples": samples, "shard": shard,
                               "source": source, "split": split, "dialogues": len(dialogues), "turns": n_turns}
    if teacher == "llm":
        from trainer.teachers.cache import ResponseCache
        from trainer.teachers.llm import LLMConfig, LLMTeacher, load_price_table

        if not model:
            raise DataError("--teacher llm needs --model (the model name the endpoint serves)")
        cache_path = Path(cache) if cache is not None else out.with_name(out.stem + ".cache.sqlite")
        cfg = LLMConfig(model=model, endpoint=endpoint, temperature=temperature, top_p=top_p, seed=seed,
                        concurrency=concurrency, rate=rate)
        rc = ResponseCache(cache_path)
        try:
            t = LLMTeacher(cfg, PromptBank.load(prompts), rc, load_price_table(price_table))
            if plan:
                result = {**summary, **t.plan(dialogues, schema, samples), "cache": str(cache_path)}
                _print_plan(result)
                return result
            try:
                with labelling(f"llm {model}: samples", console) as bar:
                    records = t.label(dialogues, schema, samples, bar)
            except KeyboardInterrupt:
                kept = len(rc)
                console.print(f"interrupted: the cache {cache_path} keeps {kept} answer(s) "
                              f"({t.usage.samples_fetched} fetched in this run); run the same command again to "
                              "resume: cached answers are not requested again", highlight=False, markup=False)
                raise
            summary.update(t.summary())
            summary["cache"] = str(cache_path)
        finally:
            rc.close()
    elif teacher == "zeroshot":
        from trainer.teachers.zeroshot import ZeroshotConfig, ZeroshotTeacher

        zs_cfg = ZeroshotConfig(temperature=temperature, top_p=top_p, seed=seed)
        t_zs = ZeroshotTeacher(PromptBank.load(prompts), zs_cfg, cache_path=cache)
        if plan:
            result = {**summary, "calls": 0, "texts_to_encode": t_zs.n_texts(dialogues),
                      "note": "zeroshot runs offline: no endpoint calls, no cost"}
            _print_plan(result)
            return result
        try:
            with labelling("zeroshot: encoding texts", console) as bar:
                records = t_zs.label(dialogues, schema, samples, bar)
        except KeyboardInterrupt:
            where = (f"the embedding cache {cache} keeps {t_zs.stats['texts_encoded']} new embedding(s); run the same "
                     "command again to resume") if cache else "nothing was kept (pass --cache to keep embeddings)"
            console.print(f"interrupted: {where}", highlight=False, markup=False)
            raise
        summary.update(t_zs.summary())
        t_zs.cache.close()
    elif teacher == "fewshot":
        from trainer.teachers.fewshot import FewshotConfig, FewshotTeacher

        if gold_pool is None:
            raise DataError("--teacher fewshot needs --gold-pool (labelled dialogues to draw the shots from)")
        pool = load_source(source, Path(gold_pool), gold_pool_split, max_dialogues=gold_pool_dialogues)
        t_fs = FewshotTeacher(pool, FewshotConfig(shots=shots, temperature=temperature, seed=seed), cache_path=cache)
        if plan:
            result = {**summary, "calls": 0, "gold_pool_dialogues": len(t_fs.pool),
                      "note": "fewshot runs offline: no endpoint calls, no cost"}
            _print_plan(result)
            return result
        with labelling("fewshot: encoding texts", console) as bar:
            records = t_fs.label(dialogues, schema, samples, bar)
        summary.update(t_fs.summary())
        t_fs.cache.close()
    else:
        from trainer.teachers.simulated import NOTE, SimulatedTeacher

        t_sim = SimulatedTeacher(noise, seed=seed)
        if plan:
            result = {**summary, "calls": 0, "note": NOTE}
            _print_plan(result)
            return result
        with labelling("simulated teacher: turns", console) as bar:
            records = t_sim.label(dialogues, schema, samples, bar)
        summary.update(t_sim.summary())
    write_scores(records, out)
    summary["out"] = str(out)
    summary["records"] = len(records)
    n_votes = sum(r.num_turns * r.n_votes for r in records)
    summary["abstention_rate"] = round(sum(sum(r.abstentions or []) for r in records) / max(n_votes, 1), 6)
    summary["accuracy_vs_gold"] = gold_accuracy(dialogues, records, schema)
    summary["wall_s"] = round(time.perf_counter() - t0, 3)
    out.with_name(out.stem + ".summary.json").write_text(dumps_json(summary, indent=2) + "\n",
                                                         encoding="utf-8")
    _print_summary(summary)
    return summary


# --------------------------------------------------------------------------------------------------
# calibrate


def run_calibrate(data: Path, scores: Path, task: str, out: Path, *, source: str = "jsonl",
                  split: str | None = None, max_n: int = 30, seed: int = 0) -> dict:
    """ECE vs N, reliability diagrams and the H2 check for one task; JSON + PNGs in ``out``."""
    from trainer.teachers.calibration import calibration_report, write_report

    t0 = time.perf_counter()
    dialogues = load_source(source, Path(data), split)
    records = read_scores(scores)
    if not any(k[1] == task for k in records):
        have = sorted({k[1] for k in records})
        raise DataError(f"no scores for task '{task}' (the file has {have})", path=str(scores))
    report = calibration_report(dialogues, records, task, max_n=max_n, seed=seed)
    report["scores_file"] = str(scores)
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    paths = write_report(report, out)
    report["files"] = [str(p) for p in paths]

    table = Table(title=f"turnwise calibrate — {task}", show_header=False)
    if "note" in report:
        table.add_row("note", report["note"])
    table.add_row("teacher", f"{report['teacher'].get('kind')} ({report['teacher'].get('model')})")
    table.add_row("turns / dialogues", f"{report['turns']} / {report['dialogues']}")
    table.add_row("accuracy (argmax S)", f"{report['accuracy']:.4f}")
    for n, v in report.get("ece_at", {}).items():
        table.add_row(f"ECE at N={n}", f"{v:.4f}")
    h2 = report["h2"]
    table.add_row("H2 slope intra / inter", f"{h2['slope_intra']:.4f} / {h2['slope_inter']:.4f}"
                  if h2["slope_intra"] is not None and h2["slope_inter"] is not None else "n/a")
    table.add_row("files", ", ".join(Path(p).name for p in paths))
    console.print(table)
    return report
