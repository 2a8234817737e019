"""The calls locust users play: real dialogues, turn by turn, and the checks on every answer.

Pure Python (no locust import), so it is unit-tested in the normal test process.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Client-side cap: corpora have the odd very long turn; the service answers 413 above its own limit.
MAX_TEXT_CHARS = 1500


@dataclass(frozen=True)
class CallTurn:
    seq: int
    speaker: str
    text: str
    labels: dict[str, Any]


@dataclass
class Call:
    """One live call: a dialogue under a fresh id, consumed turn by turn."""

    dialogue_id: str
    turns: list[CallTurn]
    next_index: int = 0
    scored: list[CallTurn] = field(default_factory=list)  # turns the service has answered

    @property
    def finished(self) -> bool:
        return self.next_index >= len(self.turns)

    def next_turn(self) -> CallTurn:
        turn = self.turns[self.next_index]
        self.next_index += 1
        return turn

    def feedback(self, rng: random.Random) -> dict[str, Any] | None:
        """A gold label of a turn already scored (an agent correcting the model), if the data has one."""
        labelled = [t for t in self.scored if t.labels]
        if not labelled:
            return None
        turn = rng.choice(labelled)
        task = rng.choice(sorted(turn.labels))
        return {"dialogue_id": self.dialogue_id, "seq": turn.seq, "task": task, "label": turn.labels[task]}


class CallBook:
    """Dialogues to replay; every call gets a unique id (``<run>-<user>-<n>``) so runs never collide."""

    def __init__(self, dialogues: Sequence[Any], run_id: str, seed: int | None = None):
        self.scripts: list[list[CallTurn]] = []
        for d in dialogues:
            turns = [CallTurn(i, t.speaker, t.text[:MAX_TEXT_CHARS], dict(t.labels))
                     for i, t in enumerate(x for x in d.turns if x.text.strip())]
            if turns:
                self.scripts.append(turns)
        if not self.scripts:
            raise ValueError("no dialogue with a non-empty turn to replay")
        self.run_id = run_id
        self.rng = random.Random(seed)
        self._users = itertools.count()

    @classmethod
    def load(cls, path: str | Path, source: str, split: str | None, max_dialogues: int | None, run_id: str,
             seed: int | None = None) -> CallBook:
        if source == "jsonl":
            from turnwise.dialogue import read_jsonl

            dialogues = read_jsonl(path)[:max_dialogues] if max_dialogues else read_jsonl(path)
        else:
            from trainer.data import load_source

            dialogues = load_source(source, path, split, max_dialogues=max_dialogues)
        return cls(dialogues, run_id, seed)

    def user_tag(self) -> str:
        return f"{self.run_id}-u{next(self._users)}"

    def new_call(self, user_tag: str, n: int) -> Call:
        return Call(f"{user_tag}-c{n}", list(self.rng.choice(self.scripts)))


def check_turn_body(body: Any, dialogue_id: str, seq: int) -> str | None:
    """None if ``body`` is a well-formed answer for (dialogue_id, seq); otherwise what is wrong."""
    if not isinstance(body, dict):
        return "answer is not a JSON object"
    if body.get("type", "scores") != "scores":
        return f"{body.get('type')} frame: {body.get('code')}: {body.get('message')}"
    if body.get("dialogue_id") != dialogue_id or body.get("seq") != seq:
        return f"answer for {body.get('dialogue_id')}/{body.get('seq')}, expected {dialogue_id}/{seq}"
    scores, labels = body.get("scores"), body.get("labels")
    if not isinstance(scores, dict) or not scores or not isinstance(labels, dict) or set(labels) != set(scores):
        return "scores/labels missing or inconsistent"
    for task, probs in scores.items():
        if not isinstance(probs, dict) or not all(isinstance(p, int | float) and 0.0 <= p <= 1.0
                                                  for p in probs.values()):
            return f"task {task}: probabilities out of [0, 1]"
    if not isinstance(body.get("model"), dict) or "version" not in body["model"]:
        return "no model version"
    return None
