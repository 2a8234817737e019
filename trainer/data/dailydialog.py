"""DailyDialog (Li et al., IJCNLP 2017) in its original split layout.

``<root>/<split>/dialogues_<split>.txt`` holds one dialogue per line, utterances closed by ``__eou__``;
``dialogues_act_<split>.txt`` and ``dialogues_emotion_<split>.txt`` hold one integer per utterance.

Mapping:
- tasks ``act`` (1 inform, 2 question, 3 directive, 4 commissive) and ``emotion`` (0 no_emotion ... 6
  surprise), both multiclass, on every turn.
- speakers alternate and are not named: even turns are ``user``, odd turns ``system``, which gives
  the alternating ``[usr]``/``[sys]`` tags of ToD-BERT's DailyDialog setup.
- text keeps the corpus tokenisation (``" , "``, ``" ."``) with whitespace collapsed; ``__eou__`` is removed.
- dialogue id ``dailydialog-<split>-<line, 5 digits>``; meta ``{"source", "split", "line"}``.

A dialogue whose label count differs from its utterance count is counted as ``label_count_mismatch``.
The one such dialogue in the release (train line 7852) is repaired: its 5th and 6th utterances are
one speaker's turn split in two (merging them restores both the 11 labels and the A/B alternation).
Any other mismatch keeps the text and drops that dialogue's labels, since their alignment is unknown.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.common import LoadReport, clean_text, normalise_split, require_dir, take
from turnwise.dialogue import Dialogue, LabelValue, Turn
from turnwise.errors import DataError
from turnwise.tasks import Task, TaskSchema, TaskType

NAME = "dailydialog"
SPLITS = ("train", "validation", "test")
ACT_LABELS = ["inform", "question", "directive", "commissive"]  # file codes 1..4
EMOTION_LABELS = ["no_emotion", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]  # codes 0..6
EOU = "__eou__"

TASKS = TaskSchema(
    tasks={
        "act": Task(type=TaskType.multiclass, labels=ACT_LABELS, description="DailyDialog dialogue act"),
        "emotion": Task(type=TaskType.multiclass, labels=EMOTION_LABELS, description="DailyDialog emotion"),
    }
)

# Adjacent utterances that the release splits although they are one turn (see the module docstring).
_KNOWN_SPLIT_TURNS = {
    (
        "I left it at my parent's house , but I need one here as well .",
        "I've been using Jim's old bike but he needs it back .",
    ),
}


def _files(root: Path, split: str) -> tuple[Path, Path, Path]:
    d = root / split
    return (
        d / f"dialogues_{split}.txt",
        d / f"dialogues_act_{split}.txt",
        d / f"dialogues_emotion_{split}.txt",
    )


def available_splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if _files(Path(root), s)[0].is_file()]


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=str(path)) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def _codes(raw: str, path: Path, lineno: int, first: int, last: int) -> list[int]:
    try:
        codes = [int(tok) for tok in raw.split()]
    except ValueError:
        raise DataError(
            f"expected space-separated integers, got {raw.strip()[:60]!r}", path=str(path), line=lineno
        ) from None
    for c in codes:
        if not first <= c <= last:
            raise DataError(f"label code {c} out of range {first}..{last}", path=str(path), line=lineno)
    return codes


def _split_utterances(raw: str, path: Path, lineno: int, report: LoadReport) -> list[str]:
    pieces = raw.split(EOU)
    tail = pieces.pop()
    if tail.strip():  # the last utterance lacks its closing marker: keep it anyway
        report.add("missing_eou", f"{path}:{lineno}")
        pieces.append(tail)
    utts = [clean_text(p) for p in pieces]
    for u in utts:
        if not u:
            report.add("empty_utterance", f"{path}:{lineno}")
    return utts


def _merge_known_split(utts: list[str]) -> list[str] | None:
    for i in range(len(utts) - 1):
        if (utts[i], utts[i + 1]) in _KNOWN_SPLIT_TURNS:
            return [*utts[:i], f"{utts[i]} {utts[i + 1]}", *utts[i + 2 :]]
    return None


def load(
    root: str | Path,
    split: str,
    *,
    max_dialogues: int | None = None,
    report: LoadReport | None = None,
) -> list[Dialogue]:
    root = require_dir(Path(root), "DailyDialog folder")
    split = normalise_split(split)
    report = report if report is not None else LoadReport()
    text_path, act_path, emo_path = _files(root, split)
    texts = _read_lines(text_path)
    acts = _read_lines(act_path)
    emos = _read_lines(emo_path)
    for p, lines in ((act_path, acts), (emo_path, emos)):
        if len(lines) != len(texts):
            raise DataError(f"has {len(lines)} lines but {text_path.name} has {len(texts)}", path=str(p))

    n = len(texts) if max_dialogues is None else min(len(texts), max(max_dialogues, 0))
    out: list[Dialogue] = []
    for idx in range(n):
        lineno = idx + 1
        utts = _split_utterances(texts[idx], text_path, lineno, report)
        act = _codes(acts[idx], act_path, lineno, 1, len(ACT_LABELS))
        emo = _codes(emos[idx], emo_path, lineno, 0, len(EMOTION_LABELS) - 1)
        labelled = True
        if not len(utts) == len(act) == len(emo):
            counts = f"{len(utts)} utterances, {len(act)} acts, {len(emo)} emotions"
            merged = _merge_known_split(utts) if len(utts) == len(act) + 1 == len(emo) + 1 else None
            if merged is not None:
                utts = merged
                action = "known split turn merged"
            else:
                labelled = False
                action = "labels dropped"
            report.add("label_count_mismatch", f"{text_path}:{lineno} ({counts}; {action})")
        turns = []
        for i, u in enumerate(utts):
            labels: dict[str, LabelValue] = (
                {"act": ACT_LABELS[act[i] - 1], "emotion": EMOTION_LABELS[emo[i]]} if labelled else {}
            )
            turns.append(Turn(speaker="user" if i % 2 == 0 else "system", text=u, labels=labels))
        out.append(
            Dialogue(
                dialogue_id=f"{NAME}-{split}-{lineno:05d}",
                turns=turns,
                meta={"source": NAME, "split": split, "line": lineno},
            )
        )
    return take(out, max_dialogues)
