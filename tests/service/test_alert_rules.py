"""Alert rules: the file format and its errors, and every condition kind firing where it should."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.alerts.evaluate import ScoredTurn, evaluate, summary
from service.alerts.rules import RuleError, load_rules, parse_rules
from turnwise.tasks import load_tasks

REPO = Path(__file__).resolve().parents[2]


def rules_of(*rules: dict) -> object:
    return parse_rules({"rules": list(rules)}, "rules.yaml")


def turn(seq: int, negative: float, speaker: str = "customer", act: str = "inform", at: float = 1000.0):
    scores = {"sentiment": {"negative": negative, "neutral": 0.0, "positive": 1 - negative},
              "act": {act: 1.0}}
    labels = {"sentiment": "negative" if negative >= 0.5 else "positive", "act": act}
    return ScoredTurn("call-1", seq, speaker, f"turn {seq}", labels, scores, at + seq)


def run(rules, turns) -> list[tuple[int, str]]:
    """(seq, rule) of every alert over the turns, threading the call state through."""
    state, fired = None, []
    for t in turns:
        out = evaluate(rules, state, t)
        assert out is not None
        state, alerts = out
        fired += [(a["seq"], a["rule"]) for a in alerts]
    return fired


def test_probability_condition_fires_at_the_threshold_and_not_below():
    rules = rules_of({"name": "neg", "severity": "critical", "when": "sentiment.negative >= 0.8"})
    assert run(rules, [turn(0, 0.79), turn(1, 0.8), turn(2, 0.95)]) == [(1, "neg"), (2, "neg")]


def test_label_condition_and_speaker_filter():
    rules = rules_of({"name": "ask", "speaker": "customer", "when": ["act == question"]},
                     {"name": "not_inform", "when": "act != inform"})
    fired = run(rules, [turn(0, 0.1, act="question", speaker="agent"), turn(1, 0.1, act="question"),
                        turn(2, 0.1, act="inform")])
    assert fired == [(0, "not_inform"), (1, "ask"), (1, "not_inform")]


def test_for_needs_consecutive_turns_of_the_speaker_and_resets_on_a_miss():
    rules = rules_of({"name": "run2", "speaker": "customer", "when": "sentiment.negative >= 0.8", "for": 2})
    turns = [turn(0, 0.9), turn(1, 0.9, speaker="agent"),  # an agent turn neither counts nor breaks the run
             turn(2, 0.9), turn(3, 0.1), turn(4, 0.9), turn(5, 0.9), turn(6, 0.9)]
    assert run(rules, turns) == [(2, "run2"), (5, "run2")]


def test_rolling_mean_over_the_last_turns():
    rules = rules_of({"name": "trend", "speaker": "customer", "when": "mean(sentiment.negative, 3) >= 0.6"})
    negs = [0.9, 0.9, 0.0, 0.9, 0.9, 0.3]  # means: -, -, 0.6, 0.6, 0.6, 0.7
    assert run(rules, [turn(i, n) for i, n in enumerate(negs[:2])]) == []  # too few turns for the mean
    assert run(rules, [turn(i, n) for i, n in enumerate(negs)]) == [(2, "trend"), (3, "trend"), (4, "trend"),
                                                                    (5, "trend")]
    assert run(rules, [turn(i, n) for i, n in enumerate([0.9, 0.2, 0.2, 0.9])]) == []


def test_cooldown_in_turns_and_in_seconds():
    by_turns = rules_of({"name": "neg", "when": "sentiment.negative >= 0.8", "cooldown": {"turns": 2}})
    assert run(by_turns, [turn(i, 0.9) for i in range(6)]) == [(0, "neg"), (3, "neg")]
    by_seconds = rules_of({"name": "neg", "when": "sentiment.negative >= 0.8", "cooldown": {"seconds": 2.5}})
    assert run(by_seconds, [turn(i, 0.9) for i in range(6)]) == [(0, "neg"), (3, "neg")]  # turns 1 s apart


def test_a_turn_evaluated_before_fires_nothing_again():
    rules = rules_of({"name": "neg", "when": "sentiment.negative >= 0.8"})
    state, alerts = evaluate(rules, None, turn(0, 0.9))
    assert len(alerts) == 1
    assert evaluate(rules, state, turn(0, 0.9)) is None  # a retry of the same seq


def test_aggregates_count_labels_and_follow_the_sentiment_trend():
    rules = rules_of({"name": "neg", "severity": "warning", "when": "sentiment.negative >= 0.8"})
    state = None
    for t in [turn(0, 0.9), turn(1, 0.2), turn(2, 0.85)]:
        state, _ = evaluate(rules, state, t)
    s = summary(state)
    assert s["turns_scored"] == 3
    assert s["label_counts"]["sentiment"] == {"negative": 2, "positive": 1}
    assert [p["seq"] for p in s["sentiment_trend"]] == [0, 1, 2]
    assert s["sentiment_trend"][1]["value"] == pytest.approx(0.6)
    assert [a["seq"] for a in s["alerts"]] == [0, 2] and s["alerts_total"] == 2


@pytest.mark.parametrize(("rule", "field", "says"), [
    ({"severity": "warning", "when": "act == question"}, "name", "required"),
    ({"name": "x", "severity": "loud", "when": "act == question"}, "severity", "info, warning, critical"),
    ({"name": "x", "when": "sentiment.negative => 0.8"}, "when[0]", "cannot read condition"),
    ({"name": "x", "when": []}, "when", "required"),
    ({"name": "x", "when": "mean(sentiment.negative, 0) >= 0.5"}, "when[0]", "1 to 50"),
    ({"name": "x", "when": "act == question", "for": 0}, "for", "at least 1"),
    ({"name": "x", "when": "act == question", "cooldown": {"minutes": 3}}, "cooldown", "turns"),
    ({"name": "x", "when": "act == question", "sevrity": "info"}, "sevrity", "unknown field"),
])
def test_invalid_rules_name_the_file_rule_and_field(rule, field, says):
    with pytest.raises(RuleError) as err:
        rules_of({"name": "ok", "when": "act == question"}, rule)
    message = str(err.value)
    assert message.startswith("rules.yaml: ")
    assert f"field '{field}'" in message and says in message
    assert ("rule 'x'" in message) if "name" in rule else ("rule #2" in message)


def test_rules_naming_unknown_tasks_or_labels_are_refused_against_the_schema():
    schema = load_tasks(REPO / "samples" / "tasks.yaml")
    rules_of({"name": "ok", "when": ["sentiment.negative >= 0.5", "act == question"]}).check_tasks(schema)
    with pytest.raises(RuleError, match=r"rule 'x', field 'when\[1\]': unknown task 'mood'"):
        rules_of({"name": "x", "when": ["act == question", "mood.sad >= 0.5"]}).check_tasks(schema)
    with pytest.raises(RuleError, match="task 'act' has no label 'rant'"):
        rules_of({"name": "x", "when": "act == rant"}).check_tasks(schema)


def test_rules_file_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - name: a\n    when: act == question\n  - name: a\n    when: act == inform\n")
    with pytest.raises(RuleError, match=r"rules.yaml: rule 'a', field 'name': a second rule"):
        load_rules(bad)
    bad.write_text("rules: [\n")
    with pytest.raises(RuleError, match="not valid YAML"):
        load_rules(bad)
    with pytest.raises(RuleError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")
    assert len(load_rules(REPO / "samples" / "rules.yaml")) >= 3  # the shipped example is valid


def test_turns_scored_within_a_millisecond_are_not_cooled_down():
    """No cool-down in seconds means none: pipelined turns are scored microseconds apart."""
    rules = rules_of({"name": "every", "when": "sentiment.negative >= 0.0"})
    turns = [ScoredTurn("c", i, "customer", "t", {"sentiment": "negative"}, {"sentiment": {"negative": 0.9}},
                        1000.0004 + i * 1e-4) for i in range(4)]
    assert run(rules, turns) == [(i, "every") for i in range(4)]
