"""turnwise.client over REST against the real service (a live uvicorn), and its retry rules."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from turnwise.api import ErrorKind
from turnwise.client import (
    ERRORS,
    NO_RETRY,
    AsyncClient,
    Client,
    Conflict,
    Invalid,
    NotFound,
    Overloaded,
    RetryPolicy,
    StoreUnavailable,
    TooLarge,
    Unauthenticated,
    Unreachable,
)
from turnwise.client.retry import parse_retry_after
from turnwise.dialogue import Turn
from turnwise.messages import ScoreAllResult, ScoreResult, TurnResult

TURNS = [
    ("agent", "Thanks for calling, how can I help?"),
    ("customer", "My internet is down again and I want a refund."),
    ("agent", "I'm sorry. Could you read me the account number?"),
]
FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05)


def test_a_call_assigns_seq_and_ends(live_service):
    srv = live_service(api_keys="k1")
    with Client(srv.url, api_key="k1") as client:
        with client.call("call-sdk-1") as call:
            results = [call.send(speaker, text) for speaker, text in TURNS]
            assert [r.seq for r in results] == [0, 1, 2] and call.next_seq == 3
            assert all(isinstance(r, TurnResult) and r.dialogue_id == "call-sdk-1" for r in results)
            assert [r.window_turns for r in results] == [1, 2, 3]
            assert set(results[1].labels) == {"intent", "act", "sentiment"}
            assert results[1].model.name == "tiny" and results[1].timings_ms["total"] > 0
            state = call.state()
            assert [(t.seq, t.text) for t in state.window] == [(i, t) for i, (_, t) in enumerate(TURNS)]
            assert state.last_result is not None and state.last_result.seq == 2
            again = call.send(*TURNS[2], seq=2)  # a retry of the last turn: the stored result
            assert again.labels == results[2].labels and set(again.timings_ms) == {"store", "total"}
        with pytest.raises(NotFound) as gone:  # `with` ended the call
            client.dialogue("call-sdk-1")
        assert gone.value.status == 404 and gone.value.kind is ErrorKind.not_found


def test_a_resumed_call_continues_after_the_last_seq(live_service):
    srv = live_service()
    with Client(srv.url) as client:
        first = client.call("call-sdk-r")
        first.send(*TURNS[0])
        first.send(*TURNS[1])
        later = client.call("call-sdk-r")  # e.g. the integrating process restarted
        assert later.resume() == 2
        assert later.send(*TURNS[2]).window_turns == 3


def test_service_errors_are_typed(live_service):
    srv = live_service(api_keys="k1", max_text_chars=50)
    with Client(srv.url, api_key="k1", retry=FAST) as client:
        call = client.call("call-sdk-e")
        call.send("agent", "hello")
        with pytest.raises(Conflict) as conflict:  # seq 0 again, other text
            call.send("agent", "something else", seq=0)
        assert conflict.value.seq == 0 and conflict.value.status == 409 and "seq 0" in conflict.value.message
        with pytest.raises(TooLarge):
            call.send("customer", "x" * 51)
        with pytest.raises(Invalid) as invalid:
            client.send_turn("call-sdk-e", -1, "agent", "hi")
        assert "seq" in str(invalid.value)
        with pytest.raises(Invalid):
            client.feedback("call-sdk-e", 0, "no-such-task", "x")
    with Client(srv.url, api_key="wrong", retry=FAST) as bad, pytest.raises(Unauthenticated) as unauth:
        bad.call("call-sdk-e").send("agent", "hi")
    assert unauth.value.status == 401 and not unauth.value.retryable
    with pytest.raises(ValueError, match="dialogue_id"):
        Client(srv.url).call("not valid!")
    assert set(ERRORS) == set(ErrorKind)


def test_score_and_feedback(live_service):
    srv = live_service()
    with Client(srv.url) as client:
        last = client.score([Turn(speaker="agent", text="Hi"), {"speaker": "customer", "text": "Cancel my order."}])
        assert isinstance(last, ScoreResult) and last.window_turns == 2
        every = client.score(TURNS, all=True)
        assert isinstance(every, ScoreAllResult) and len(every.turns) == 3
        assert every.turns[-1].labels == client.score(TURNS).labels
        call = client.call("call-sdk-f")
        call.send(*TURNS[0])
        fb = call.feedback(0, "sentiment", "neutral")
        assert fb.status == "accepted" and fb.context == "window"
        assert client.ready().status == "ready"


def test_429_is_retried_after_retry_after(live_service):
    """A saturated service answers 429 + Retry-After; the client waits and sends the same turn again."""
    srv = live_service(max_queue=2, max_batch_wait_ms=300, max_batch_size=64, retry_after_s=1)

    async def main() -> tuple[list[TurnResult], float]:
        async with AsyncClient(srv.url, retry=RetryPolicy(attempts=8)) as client:
            t0 = time.monotonic()
            results = await asyncio.gather(*(client.call(f"call-q{i}").send("agent", "hi") for i in range(8)))
            return results, time.monotonic() - t0

    results, elapsed = asyncio.run(main())
    assert [r.window_turns for r in results] == [1] * 8  # every turn answered, each stored once
    metrics = httpx.get(f"{srv.url}/metrics").text
    refused = [line for line in metrics.splitlines() if 'outcome="overloaded"' in line and line.startswith("turnwise_")]
    assert refused and float(refused[0].split()[-1]) >= 1  # the service did refuse some
    assert elapsed >= 1.0  # ... and the client waited Retry-After before sending them again


def test_503_is_retried_until_the_store_is_back(live_service, redis_server):
    srv = live_service(redis_url=redis_server.url, redis_timeout_s=0.3, retry_after_s=1)
    with Client(srv.url, retry=RetryPolicy(attempts=10)) as client:
        call = client.call("call-sdk-503")
        call.send(*TURNS[0])
        redis_server.stop()
        with Client(srv.url, retry=NO_RETRY) as impatient, pytest.raises(StoreUnavailable) as down:
            impatient.send_turn("call-sdk-503", 1, *TURNS[1])
        assert down.value.retry_after == 1.0 and down.value.retryable
        threading.Timer(0.5, redis_server.start).start()
        t0 = time.monotonic()
        result = call.send(*TURNS[1])  # refused while Redis is down, retried after Retry-After
        assert time.monotonic() - t0 >= 1.0 and result.seq == 1


def test_unreachable_service_is_one_error_after_the_retries():
    from harness.ports import free_port

    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with Client(url, retry=RetryPolicy(attempts=3, backoff_s=0.05)) as client, pytest.raises(Unreachable) as err:
        client.call("call-x").send("agent", "hi")
    assert err.value.attempts == 3 and "cannot reach" in str(err.value) and time.monotonic() - t0 < 5


def _transport(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.MockTransport(handle)


def _turn_body(seq: int) -> dict:
    return {"dialogue_id": "c", "seq": seq, "scores": {}, "labels": {}, "model": {"name": "m", "version": "1"},
            "window_turns": 1, "timings_ms": {}}


def test_retry_rules(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("turnwise.client.sync.time.sleep", waits.append)
    seen: list[httpx.Request] = []
    busy = httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "busy", "error_type": "overloaded"})
    ok = httpx.Response(200, json=_turn_body(0))
    client = Client("http://svc", transport=_transport([busy, ok], seen))
    assert client.call("c").send("agent", "hi").seq == 0
    assert waits == [3.0] and len(seen) == 2 and seen[0].content == seen[1].content  # the same request again

    # feedback is not idempotent: an answered 503 is not retried
    down = httpx.Response(503, json={"error": "down", "error_type": "store_unavailable"})
    seen.clear()
    client = Client("http://svc", transport=_transport([down], seen))
    with pytest.raises(StoreUnavailable):
        client.feedback("c", 0, "act", "inform")
    assert len(seen) == 1

    # the retries run out: the last answer's typed error
    seen.clear()
    always = [httpx.Response(429, json={"error": "busy", "error_type": "overloaded"}) for _ in range(3)]
    client = Client("http://svc", transport=_transport(always, seen), retry=RetryPolicy(attempts=3, jitter=False))
    with pytest.raises(Overloaded):
        client.score(TURNS)
    assert len(seen) == 3

    # a Retry-After longer than the policy accepts is not waited for
    waits.clear()
    seen.clear()
    long = httpx.Response(429, headers={"Retry-After": "3600"}, json={"error": "busy", "error_type": "overloaded"})
    client = Client("http://svc", transport=_transport([long], seen))
    with pytest.raises(Overloaded) as err:
        client.score(TURNS)
    assert err.value.retry_after == 3600 and waits == []

    # a proxy's bare 502 still becomes a typed error
    client = Client("http://svc", transport=_transport([httpx.Response(502, text="bad gateway")], []))
    with pytest.raises(Exception) as bare:
        client.score(TURNS)
    assert bare.value.status == 502 and bare.value.kind is ErrorKind.internal  # type: ignore[attr-defined]


def test_retry_after_parsing():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert RetryPolicy(attempts=2).delay(1) is None  # the last attempt
    assert RetryPolicy(jitter=False).delay(2) == pytest.approx(0.8)
