"""turnwise.client over the WebSocket against the real service: ordering, typed error frames, auth,
reconnect and resend after the service's restart close (1012)."""

from __future__ import annotations

import asyncio

import pytest

from turnwise.client import (
    AsyncClient,
    Client,
    Conflict,
    Invalid,
    RetryPolicy,
    StreamClosed,
    Unauthenticated,
    Unreachable,
    ws_url,
)

TURNS = [
    ("agent", "Thanks for calling, how can I help?"),
    ("customer", "My internet is down again and I want a refund."),
    ("agent", "I'm sorry. Could you read me the account number?"),
    ("customer", "It's 555-0142."),
]


def test_pipelined_frames_resolve_in_order_with_typed_errors(live_service):
    srv = live_service(api_keys="k1")

    async def main() -> None:
        async with AsyncClient(srv.url, api_key="k1") as client, client.stream() as stream:
            a, b = stream.call("call-ws-a"), stream.call("call-ws-b")
            futures = []
            for speaker, text in TURNS:  # two calls interleaved on one socket, all in flight at once
                futures += [a.submit(speaker, text), b.submit(speaker, text)]
            clash = stream.submit_turn("call-ws-a", 1, "agent", "not what seq 1 said")  # stale: a is at seq 3
            bad = stream.submit_turn("call-ws-b", 9, " ", "no speaker")
            tail = a.submit("customer", "One more thing.")
            results = await asyncio.gather(*futures)
            assert [(r.dialogue_id, r.seq) for r in results] == [
                (d, s) for s in range(len(TURNS)) for d in ("call-ws-a", "call-ws-b")]
            assert [r.window_turns for r in results if r.dialogue_id == "call-ws-a"] == [1, 2, 3, 4]
            with pytest.raises(Conflict) as conflict:
                await clash
            assert conflict.value.seq == 1 and conflict.value.dialogue_id == "call-ws-a"
            with pytest.raises(Invalid) as invalid:
                await bad
            assert invalid.value.seq == 9
            assert (await tail).seq == 4 and (await tail).window_turns == 5  # the socket stayed open
            ended = await a.end()
            assert ended.type == "ended" and ended.dialogue_id == "call-ws-a"
            assert stream.pending == 0

    asyncio.run(main())


def test_blocking_stream(live_service):
    srv = live_service()
    with Client(srv.url) as client, client.stream() as stream:
        call = stream.call("call-ws-sync")
        results = [call.send(speaker, text) for speaker, text in TURNS]
        assert [r.seq for r in results] == [0, 1, 2, 3] and results[-1].window_turns == 4
        pending = [call.submit("agent", f"pipelined {i}") for i in range(3)]
        assert [f.result(10).seq for f in pending] == [4, 5, 6]
        assert call.end().dialogue_id == "call-ws-sync"
    # the REST view agrees: the call was ended over the stream
    with Client(srv.url) as client:
        assert client.call("call-ws-sync").resume() == 0


def test_stream_handshake_errors_are_typed(live_service):
    srv = live_service(api_keys="k1")
    with pytest.raises(Unauthenticated) as err:
        Client(srv.url, api_key="wrong").stream()
    assert err.value.status == 401
    from harness.ports import free_port

    with pytest.raises(Unreachable):
        Client(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(attempts=2, backoff_s=0.01)).stream()
    assert ws_url("https://h:1/") == "wss://h:1/v1/stream" and ws_url("ws://h/v1/stream") == "ws://h/v1/stream"


def test_a_restart_close_reconnects_and_resends(live_service, redis_server):
    """The service drains on SIGTERM and closes streams with 1012; the stream reconnects (here to the
    replacement process on the same port) and carries on; the Redis window survived the restart."""
    first = live_service(redis_url=redis_server.url)
    port = first.settings.port
    retry = RetryPolicy(attempts=60, backoff_s=0.1, max_backoff_s=0.25)

    async def main() -> None:
        async with AsyncClient(first.url) as client, client.stream(retry=retry) as stream:
            call = stream.call("call-ws-restart")
            assert (await call.send(*TURNS[0])).window_turns == 1
            await asyncio.to_thread(first.stop)  # drain: the socket closes with 1012
            await asyncio.to_thread(live_service, port, redis_url=redis_server.url)  # the replacement comes up
            second = await call.send(*TURNS[1])
            assert second.seq == 1 and second.window_turns == 2
            assert stream.reconnects == 1

    asyncio.run(main())


def test_without_reconnect_unanswered_frames_fail(live_service):
    srv = live_service()

    async def main() -> None:
        async with AsyncClient(srv.url) as client:
            stream = await client.stream(reconnect=False).open()
            call = stream.call("call-ws-gone")
            await call.send(*TURNS[0])
            await asyncio.to_thread(srv.stop)
            with pytest.raises(StreamClosed) as closed:
                await call.send(*TURNS[1])
            assert closed.value.code == 1012
            await stream.close()

    asyncio.run(main())
