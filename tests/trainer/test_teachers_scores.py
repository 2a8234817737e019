"""The teacher-scores record: votes -> S, abstentions, validation, JSONL round trip, merge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.teachers.scores import (
    ABSTAIN,
    MAX_MULTILABEL_CLASSES,
    ScoreRecord,
    make_record,
    merge_scores,
    read_scores,
    scores_from_votes,
    votes_to_bitmask,
    write_scores,
)
from turnwise.errors import DataError
from turnwise.tasks import TaskType

TEACHER = {"kind": "llm", "model": "m", "prompts": ["p1"], "params": {"temperature": 0.7}}


def test_scores_are_vote_fractions_over_valid_votes():
    votes = np.array([[0, 0, 1, ABSTAIN], [ABSTAIN] * 4, [2, 2, 2, 2]])
    s, abst = scores_from_votes(votes, 3)
    np.testing.assert_allclose(s, [[2 / 3, 1 / 3, 0], [0, 0, 0], [0, 0, 1]])
    assert abst.tolist() == [1, 4, 0]


def test_multilabel_votes_are_bitmasks():
    votes = np.array([[0b011, 0b001, 0b000, ABSTAIN]])
    s, abst = scores_from_votes(votes, 3, multilabel=True)
    np.testing.assert_allclose(s, [[2 / 3, 1 / 3, 0]])
    assert abst.tolist() == [1]


def test_multilabel_bitmask_keeps_the_highest_class_and_refuses_wider_tasks():
    on = np.zeros((1, 2, MAX_MULTILABEL_CLASSES), dtype=bool)
    on[0, 0, [1, MAX_MULTILABEL_CLASSES - 1]] = True  # the top bit that fits
    s, _ = scores_from_votes(votes_to_bitmask(on), MAX_MULTILABEL_CLASSES, multilabel=True)
    assert np.flatnonzero(s[0]).tolist() == [1, MAX_MULTILABEL_CLASSES - 1]
    assert s[0, 1] == s[0, -1] == 0.5
    wide = MAX_MULTILABEL_CLASSES + 10  # e.g. SGD's 172 slots: refused, never silently truncated
    with pytest.raises(DataError, match=r"slots.*72 labels"):
        make_record("d", "slots", [f"s{i}" for i in range(wide)], TaskType.multilabel, np.zeros((1, 2)), TEACHER)
    with pytest.raises(DataError, match="72 classes"):
        votes_to_bitmask(np.ones((1, 2, wide), dtype=bool))


def test_record_fields_and_round_trip(tmp_path):
    r = make_record("d1", "act", ["a", "b"], TaskType.multiclass, np.array([[0, 1, 1], [ABSTAIN] * 3]), TEACHER)
    assert r.scores == [[pytest.approx(1 / 3, abs=1e-6), pytest.approx(2 / 3, abs=1e-6)], [0.0, 0.0]]
    assert r.abstentions == [0, 3] and r.valid == [True, False] and r.n_votes == 3
    path = tmp_path / "s.jsonl"
    write_scores([r], path)
    line = json.loads(path.read_text().splitlines()[0])
    assert list(line)[:6] == ["dialogue_id", "task", "labels", "scores", "n_votes", "teacher"]
    assert line["teacher"] == {**TEACHER}
    back = read_scores(path)
    assert back[("d1", "act")] == r
    assert back[("d1", "act")].array().shape == (2, 2)


def test_minimal_design_record_without_votes_is_readable(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"dialogue_id": "d", "task": "t", "labels": ["x", "y"], "scores": [[0.5, 0.5]],
                                "n_votes": 2, "teacher": {"kind": "llm", "model": "m", "prompts": [], "params": {}}})
                    + "\n")
    r = read_scores(path)[("d", "t")]
    assert r.valid == [True] and r.votes is None
    with pytest.raises(DataError, match="no per-vote data"):
        r.votes_array()


@pytest.mark.parametrize(("patch", "msg"), [
    ({"scores": [[0.5]]}, "1 values for 2 labels"),
    ({"scores": [[1.5, 0.0]]}, "outside"),
    ({"abstentions": [0, 0]}, "abstentions has 2"),
    ({"votes": [[0, 5]]}, "vote outside"),
    ({"votes": [[0]]}, "has 1 votes"),
    ({"n_votes": 0}, "n_votes"),
])
def test_invalid_records_name_the_line_and_field(tmp_path, patch, msg):
    good = {"dialogue_id": "d", "task": "t", "labels": ["x", "y"], "scores": [[0.5, 0.5]], "n_votes": 2,
            "teacher": TEACHER, "abstentions": [0], "votes": [[0, 1]]}
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "dialogue_id": "e", **patch}) + "\n")
    with pytest.raises(DataError, match=msg) as err:
        read_scores(path)
    assert ":2:" in str(err.value)


def test_duplicates_and_merge(tmp_path):
    a = make_record("d1", "act", ["a", "b"], TaskType.multiclass, np.array([[0]]), TEACHER)
    b = make_record("d2", "act", ["a", "b"], TaskType.multiclass, np.array([[1]]), TEACHER)
    write_scores([a], tmp_path / "0.jsonl")
    write_scores([b], tmp_path / "1.jsonl")
    assert merge_scores([tmp_path / "0.jsonl", tmp_path / "1.jsonl"], tmp_path / "all.jsonl") == 2
    assert set(read_scores(tmp_path / "all.jsonl")) == {("d1", "act"), ("d2", "act")}
    with pytest.raises(DataError, match="more than one shard"):
        merge_scores([tmp_path / "0.jsonl", tmp_path / "0.jsonl"], tmp_path / "bad.jsonl")
    write_scores([a, a], tmp_path / "dup.jsonl")
    with pytest.raises(DataError, match="duplicate record"):
        read_scores(tmp_path / "dup.jsonl")


def test_score_record_is_the_public_type():
    from trainer.teachers import ScoreRecord as exported

    assert exported is ScoreRecord
