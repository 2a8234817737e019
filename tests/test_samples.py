"""The sample calls and the demo's split of them: every turn gold-labelled for every task, varied,
and the held-out calls never in the training lines of scripts/demo.sh."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from turnwise.dialogue import read_jsonl
from turnwise.tasks import load_tasks

REPO = Path(__file__).resolve().parents[1]


def _ranges(script: str, out: str) -> set[int]:
    m = re.search(rf"sed -n '([^']+)' samples/dialogues.jsonl > \"\$OUT/{out}.jsonl\"", script)
    assert m, out
    lines: set[int] = set()
    for part in m.group(1).split(";"):
        a, b = part.rstrip("p").split(",")
        lines |= set(range(int(a), int(b) + 1))
    return lines


def test_every_turn_has_a_valid_gold_label_for_every_task():
    schema = load_tasks(REPO / "samples" / "tasks.yaml")
    dialogues = read_jsonl(REPO / "samples" / "dialogues.jsonl")
    assert len(dialogues) == 108
    for d in dialogues:
        assert d.turns and d.meta.get("source") == "sample" and d.meta.get("domain")
        for t in d.turns:
            assert set(t.labels) == set(schema.names()), d.dialogue_id
            for name, label in t.labels.items():
                schema[name].encode(label)  # raises on a label outside the schema
            if t.speaker == "agent":
                assert t.labels["intent"] == "no_intent", (d.dialogue_id, t.text)
    domains = Counter(d.meta["domain"] for d in dialogues)
    assert len(domains) >= 15
    labels = Counter((n, lab) for d in dialogues for t in d.turns for n, lab in t.labels.items())
    assert all(labels[("sentiment", s)] >= 100 for s in ("negative", "positive"))


def test_the_demo_keeps_held_out_calls_held_out():
    script = (REPO / "scripts" / "demo.sh").read_text()
    train, val, test = (_ranges(script, s) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(range(1, 109))
    assert set(range(41, 49)) <= test  # the original held-out calls stay held out
    assert len(test) == 16 and len(val) == 8
