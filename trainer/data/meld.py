"""MELD (Poria et al., ACL 2019), the text annotations ``<split>_sent_emo.csv`` (split = train/dev/test).

Mapping:
- tasks ``sentiment`` (negative / neutral / positive) and ``emotion`` (neutral, joy, surprise, anger,
  sadness, disgust, fear), both multiclass, on every turn.
- speaker = the character name (tagged ``[usr]`` by the window formatter); text with whitespace collapsed.
- one dialogue per (split, ``Dialogue_ID``), id ``meld-<split>-<Dialogue_ID>`` with split normalised
  (``dev`` -> ``validation``); dialogues in ``Dialogue_ID`` order, turns in ``Utterance_ID`` order.
- meta ``{"source", "split", "dialogue_index", "season", "episode"}``.

Counted, not fatal: Utterance_IDs that skip numbers (``utterance_id_gap``; the release dropped some
utterances), Dialogue_IDs missing from a split's numbering, duplicate (dialogue, utterance) rows
(the second is dropped), empty speakers, and cp1252 mojibake (repaired; the 2020 release has none).
A missing column, a non-integer id or an unknown label is a :class:`DataError` naming file and line.
"""

from __future__ import annotations

import csv
from pathlib import Path

from trainer.data.common import LoadReport, clean_text, normalise_split, require_dir, take
from turnwise.dialogue import Dialogue, LabelValue, Turn
from turnwise.errors import DataError
from turnwise.tasks import Task, TaskSchema, TaskType

NAME = "meld"
SPLITS = ("train", "validation", "test")
_FILE_SPLIT = {"train": "train", "validation": "dev", "test": "test"}
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
EMOTION_LABELS = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")

TASKS = TaskSchema(
    tasks={
        "sentiment": Task(type=TaskType.multiclass, labels=SENTIMENT_LABELS, description="MELD sentiment"),
        "emotion": Task(type=TaskType.multiclass, labels=EMOTION_LABELS, description="MELD emotion"),
    }
)

# Signs of UTF-8 text decoded as cp1252/latin-1 (e.g. "’" shown as "â€™"), or raw cp1252 C1 codes.
_MOJIBAKE_MARKERS = ("â€", "Ã", "Â")


def _csv_path(root: Path, split: str) -> Path:
    return root / f"{_FILE_SPLIT[split]}_sent_emo.csv"


def available_splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if _csv_path(Path(root), s).is_file()]


def fix_mojibake(text: str) -> str:
    """Undo UTF-8-read-as-cp1252 mojibake when that is unambiguous; otherwise return ``text`` unchanged."""
    if any(m in text for m in _MOJIBAKE_MARKERS):
        try:
            return text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    if any("\x80" <= ch <= "\x9f" for ch in text):  # cp1252 bytes decoded as latin-1
        try:
            return text.encode("latin-1").decode("cp1252")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    return text


def _int(value: str | None, column: str, path: Path, line: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(
            f"column '{column}': expected an integer, got {value!r}", path=str(path), line=line
        ) from None


def _label(value: str | None, column: str, labels: list[str], path: Path, line: int) -> str:
    v = (value or "").strip().lower()
    if v not in labels:
        raise DataError(
            f"column '{column}': unknown label {value!r} (expected one of {labels})",
            path=str(path),
            line=line,
        )
    return v


def load(
    root: str | Path,
    split: str,
    *,
    max_dialogues: int | None = None,
    report: LoadReport | None = None,
) -> list[Dialogue]:
    root = require_dir(Path(root), "MELD folder")
    split = normalise_split(split)
    report = report if report is not None else LoadReport()
    path = _csv_path(root, split)
    if not path.is_file():
        raise DataError("file not found", path=str(path))

    # dialogue id -> utterance id -> (turn, season, episode)
    rows: dict[int, dict[int, tuple[Turn, str, str]]] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"missing column(s) {missing} (header: {reader.fieldnames})", path=str(path), line=1
                )
            for rec in reader:
                line = reader.line_num
                if None in rec:  # more fields than the header names
                    raise DataError(
                        f"row has {len(reader.fieldnames or []) + len(rec[None])} fields, header has "
                        f"{len(reader.fieldnames or [])}",
                        path=str(path),
                        line=line,
                    )
                dia = _int(rec["Dialogue_ID"], "Dialogue_ID", path, line)
                utt = _int(rec["Utterance_ID"], "Utterance_ID", path, line)
                text = rec["Utterance"] or ""
                fixed = fix_mojibake(text)
                if fixed != text:
                    report.add("mojibake_fixed", f"{path}:{line}")
                speaker = clean_text(fix_mojibake(rec["Speaker"] or ""))
                if not speaker:
                    report.add("empty_speaker", f"{path}:{line}")
                    speaker = "unknown"
                labels: dict[str, LabelValue] = {
                    "sentiment": _label(rec["Sentiment"], "Sentiment", SENTIMENT_LABELS, path, line),
                    "emotion": _label(rec["Emotion"], "Emotion", EMOTION_LABELS, path, line),
                }
                text = clean_text(fixed)
                if not text:
                    report.add("empty_utterance", f"{path}:{line}")
                turns = rows.setdefault(dia, {})
                if utt in turns:
                    report.add("duplicate_utterance", f"{path}:{line}")
                    continue
                season, episode = (rec.get("Season") or "").strip(), (rec.get("Episode") or "").strip()
                turns[utt] = (Turn(speaker=speaker, text=text, labels=labels), season, episode)
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=str(path)) from None
    except csv.Error as err:
        raise DataError(f"malformed CSV: {err}", path=str(path)) from None

    ids = sorted(rows)
    if ids:
        for missing_id in sorted(set(range(ids[-1] + 1)) - set(ids)):
            report.add("missing_dialogue_id", f"{path}: Dialogue_ID {missing_id}")
    if max_dialogues is not None:
        ids = ids[: max(max_dialogues, 0)]
    out: list[Dialogue] = []
    for dia in ids:
        by_utt = rows[dia]
        order = sorted(by_utt)
        if order != list(range(len(order))):
            report.add("utterance_id_gap", f"meld-{split}-{dia}")
        _, season, episode = by_utt[order[0]]
        meta = {"source": NAME, "split": split, "dialogue_index": dia}
        if season.isdigit() and episode.isdigit():
            meta.update(season=int(season), episode=int(episode))
        out.append(
            Dialogue(dialogue_id=f"meld-{split}-{dia}", turns=[by_utt[u][0] for u in order], meta=meta)
        )
    return take(out, max_dialogues)
