"""Feedback -> training dialogues, the held-out split, and the settings."""

from __future__ import annotations

from pathlib import Path

from sidecar.data import feedback_dialogues, is_heldout
from sidecar.ledger import FeedbackRecord
from sidecar.settings import SidecarSettings


def test_feedback_dialogues_latest_label_wins_and_unknown_labels_are_skipped(sample_schema):
    ctx = [{"seq": 0, "speaker": "agent", "text": "hi"}, {"seq": 1, "speaker": "customer", "text": "refund please"}]
    recs = [FeedbackRecord("1-0", "c", 1, "act", "inform", "", 0, "joined", ctx),
            FeedbackRecord("2-0", "c", 1, "act", "directive", "", 0, "joined", ctx),  # a correction wins
            FeedbackRecord("3-0", "c", 1, "intent", "has_intent", "", 0, "joined", ctx),
            FeedbackRecord("4-0", "c", 1, "act", "shouting", "", 0, "joined", ctx),  # not a label of the model
            FeedbackRecord("5-0", "c", 1, "topic", "billing", "", 0, "joined", ctx)]  # not a task of the model
    (dlg,), skipped = feedback_dialogues(recs, sample_schema)
    assert skipped == 2
    assert [t.text for t in dlg.turns] == ["hi", "refund please"]
    assert dlg.turns[0].labels == {}
    assert dlg.turns[-1].labels == {"act": "directive", "intent": "has_intent"}


def test_heldout_split_is_per_dialogue_and_deterministic():
    ids = [f"call-{i}" for i in range(2000)]
    held = [i for i in ids if is_heldout(i, 0.2)]
    assert 300 < len(held) < 500
    assert held == [i for i in ids if is_heldout(i, 0.2)]


def test_settings_reuse_the_service_variables(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("TURNWISE_REDIS_URL", "redis://r:6379/2")
    monkeypatch.setenv("TURNWISE_KEY_PREFIX", "prod:")
    monkeypatch.setenv("TURNWISE_BUNDLE", str(tmp_path / "current"))
    monkeypatch.setenv("TURNWISE_SIDECAR_MIN_NEW_LABELS", "7")
    s = SidecarSettings()
    assert (s.redis_url, s.key_prefix, s.bundle, s.min_new_labels) == ("redis://r:6379/2", "prod:",
                                                                          tmp_path / "current", 7)
