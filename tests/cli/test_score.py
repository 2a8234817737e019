"""``turnwise score``: every turn of a file scored offline, with exactly what the live service answers."""

from __future__ import annotations

import json
from pathlib import Path

from turnwise.client import Client
from turnwise.dialogue import read_jsonl


def test_score_matches_the_live_service_turn_for_turn(run_cli, fp32_bundle, live_service, samples_dir, tmp_path):
    data = tmp_path / "calls.jsonl"
    lines = (samples_dir / "dialogues.jsonl").read_text().splitlines(keepends=True)[:3]
    dialogues = [json.loads(line) for line in lines]
    dialogues[1]["turns"].insert(2, {"speaker": "customer", "text": "   "})  # the service would refuse this turn
    data.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    out = tmp_path / "predictions.jsonl"

    code, stdout, err = run_cli("score", "--model", fp32_bundle, "--data", data, "--out", out, "--batch-size", "5")
    assert code == 0, err
    summary = json.loads(stdout)
    n_turns = sum(len(d["turns"]) for d in dialogues)
    assert summary["turns"] == n_turns and summary["scored"] == n_turns - 1 and summary["skipped"] == 1
    assert set(summary["agreement_with_gold"]) == {"intent", "act", "sentiment"}
    assert "scoring: " in err  # plain progress lines without a terminal
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["dialogue_id"], r["seq"]) for r in rows] == [
        (d["dialogue_id"], i) for d in dialogues for i in range(len(d["turns"]))]
    skipped = [r for r in rows if "skipped" in r]
    assert len(skipped) == 1 and skipped[0]["dialogue_id"] == dialogues[1]["dialogue_id"]

    # The same calls streamed into the service, turn by turn (the refused turn is not sent).
    srv = live_service()
    with Client(srv.url) as client:
        for d in read_jsonl(data):
            call = client.call(d.dialogue_id)
            for seq, turn in enumerate(d.turns):
                if not turn.text.strip():
                    continue
                live = call.send(turn.speaker, turn.text, seq=seq)
                row = rows[[(r["dialogue_id"], r["seq"]) for r in rows].index((d.dialogue_id, seq))]
                assert row["labels"] == live.labels and row["window_turns"] == live.window_turns
                for task, probs in live.scores.items():
                    assert all(abs(row["scores"][task][k] - v) < 1e-5 for k, v in probs.items())
            call.end()


def test_score_a_missing_bundle_is_one_line(run_cli, tmp_path: Path, samples_dir):
    code, _, err = run_cli("score", "--model", tmp_path / "nope", "--data", samples_dir / "dialogues.jsonl",
                           "--out", tmp_path / "p.jsonl")
    assert code == 2 and "model bundle not found" in err and len(err.strip().splitlines()) == 1


def test_score_with_a_streaming_bundle_matches_the_live_service(run_cli, tiny_stream_bundle, live_service,
                                                                samples_dir, tmp_path):
    """A call long enough to re-anchor: one pass per span offline, steps and rebuilds live, same scores."""
    turns = [t for d in read_jsonl(samples_dir / "dialogues.jsonl")[:3] for t in d.turns]
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"dialogue_id": "long-1", "turns": [{"speaker": t.speaker, "text": t.text}
                                                                    for t in turns]}) + "\n")
    out = tmp_path / "predictions.jsonl"
    code, _, err = run_cli("score", "--model", tiny_stream_bundle, "--data", data, "--out", out)
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    srv = live_service(bundle=tiny_stream_bundle)
    with Client(srv.url) as client:
        call = client.call("long-1")
        for seq, (turn, row) in enumerate(zip(turns, rows, strict=True)):
            live = call.send(turn.speaker, turn.text, seq=seq)
            assert row["labels"] == live.labels and row["window_turns"] == live.window_turns
            for task, probs in live.scores.items():
                assert all(abs(row["scores"][task][k] - v) < 1e-4 for k, v in probs.items())
    assert min(r["window_turns"] for r in rows[5:]) < max(r["window_turns"] for r in rows)  # it re-anchored
