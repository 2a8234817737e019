"""The feedback consumer against a real redis-server: delivery guarantees (crash before and after the
durable write, entries another consumer left pending) and the join with the window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from sidecar_helpers import FEEDBACK, PREFIX, make_consumer, seed_calls

from sidecar.consumer import join_window, parse_entry
from turnwise.names import StoredTurn, feedback_stream, meta_key, turns_key


@pytest.mark.redis
def test_crash_after_durable_write_before_ack_resumes_without_loss_or_double_count(redis_server, tmp_path: Path):
    seed_calls(redis_server.url, {"call-a": 4, "call-b": 3}, FEEDBACK)
    first = make_consumer(redis_server.url, tmp_path)

    def crash(ids: Any) -> None:
        raise RuntimeError("killed between commit and XACK")

    first._ack = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        first.poll(None)
    assert first.ledger.counts() == {"joined": 3}  # the first batch was committed...
    assert first.pending() == 3  # ...but never acked
    first.ledger.close()

    restarted = make_consumer(redis_server.url, tmp_path)  # same state dir, same consumer name
    assert restarted.recover() == 3  # re-read its pending entries
    assert restarted.stats["duplicates"] == 3 and restarted.stats["stored"] == 0
    assert restarted.drain() == 4
    assert restarted.pending() == 0
    assert restarted.ledger.counts() == {"joined": 7}
    assert restarted.ledger.new_labels() == 7
    assert restarted.drain() == 0  # nothing delivered twice


@pytest.mark.redis
def test_crash_before_durable_write_loses_nothing(redis_server, tmp_path: Path):
    seed_calls(redis_server.url, {"call-a": 4, "call-b": 3}, FEEDBACK)
    first = make_consumer(redis_server.url, tmp_path)

    def disk_full(records: Any) -> int:
        raise OSError("disk full")

    first.ledger.add = disk_full  # type: ignore[method-assign]
    with pytest.raises(OSError):
        first.poll(None)
    assert first.pending() == 3
    restarted = make_consumer(redis_server.url, tmp_path)
    restarted.recover()
    restarted.drain()
    assert restarted.ledger.counts() == {"joined": 7}
    assert restarted.pending() == 0


@pytest.mark.redis
def test_entries_left_pending_by_another_consumer_are_claimed(redis_server, tmp_path: Path):
    seed_calls(redis_server.url, {"call-a": 4}, FEEDBACK[:4])
    gone = make_consumer(redis_server.url, tmp_path / "old-pod")
    gone.ledger.add = lambda records: (_ for _ in ()).throw(OSError("pod evicted"))  # type: ignore[method-assign]
    with pytest.raises(OSError):
        gone.poll(None)
    new_pod = make_consumer(redis_server.url, tmp_path, consumer="trainer-2", claim_idle_ms=0)
    assert new_pod.recover() == 3
    new_pod.drain()
    assert new_pod.ledger.counts() == {"joined": 4}
    assert new_pod.pending() == 0


@pytest.mark.redis
def test_join_counts_and_skips_expired_trimmed_and_unknown_turns(redis_server, tmp_path: Path):
    feedback = [("call-a", 5, "act", "question"),  # in the window
                ("call-a", 1, "act", "inform"),  # trimmed: the window holds seqs 2..5
                ("call-a", 9, "act", "inform"),  # never sent
                ("call-gone", 0, "act", "inform")]  # ended or expired
    seed_calls(redis_server.url, {"call-a": 6, "call-gone": 1}, feedback)
    redis.Redis.from_url(redis_server.url).delete(turns_key(PREFIX, "call-gone"), meta_key(PREFIX, "call-gone"))
    c = make_consumer(redis_server.url, tmp_path, batch=10)
    assert c.drain() == 4
    assert c.ledger.counts() == {"joined": 1, "turn_trimmed": 1, "turn_missing": 1, "window_missing": 1}
    (rec,) = c.ledger.labelled(10)
    assert [t["seq"] for t in rec.context or []] == [2, 3, 4, 5]  # what the model saw: the window up to seq
    assert rec.context and rec.context[-1]["text"] == "call-a turn 5"


@pytest.mark.redis
def test_an_entry_with_its_own_window_snapshot_needs_no_redis_window(redis_server, tmp_path: Path):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    window = [{"seq": s, "speaker": "customer", "text": f"t{s}"} for s in (7, 8)]
    client.xadd(feedback_stream(PREFIX), {"dialogue_id": "call-ended", "seq": "8", "task": "act", "label": "inform",
                                          "window": json.dumps(window)})
    client.xadd(feedback_stream(PREFIX), {"dialogue_id": "call-ended", "task": "act"})  # no seq: invalid, acked
    c = make_consumer(redis_server.url, tmp_path)
    assert c.drain() == 2
    assert c.ledger.counts() == {"joined": 1, "invalid": 1}
    assert c.pending() == 0
    assert [t["text"] for t in c.ledger.labelled(5)[0].context or []] == ["t7", "t8"]


def test_join_window_is_the_window_up_to_the_turn():
    raw = [StoredTurn(s, "agent", f"t{s}").to_json() for s in (3, 4, 5)]
    assert join_window(raw, 4) == ("joined", [{"seq": 3, "speaker": "agent", "text": "t3"},
                                              {"seq": 4, "speaker": "agent", "text": "t4"}])
    assert join_window(raw, 2)[0] == "turn_trimmed"
    assert join_window(raw, 6)[0] == "turn_missing"
    assert join_window([], 0)[0] == "window_missing"
    # a snapshot (the service's JSON list of turns) joins the same way as the stored JSON strings
    assert join_window([json.loads(t) for t in raw], 4) == join_window(raw, 4)


def test_a_malformed_snapshot_is_recorded_as_invalid():
    rec = parse_entry("1-0", {"dialogue_id": "c", "seq": "1", "task": "act", "label": "inform",
                              "window": json.dumps([{"seq": 1, "speaker": "agent"}])})  # no text
    assert (rec.status, rec.context) == ("invalid", None)
    assert parse_entry("2-0", None).status == "deleted"
