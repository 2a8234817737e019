"""A Python client for the turnwise service: sync and asyncio, REST and WebSocket.

```python
from turnwise.client import Client

with Client("http://127.0.0.1:8080", api_key="key-a") as client:
    with client.call("call-0042") as call:          # ends the call on exit
        result = call.send("customer", "My internet is down again and I want a refund.")
        print(result.labels)                         # {'intent': 'has_intent', 'act': 'inform', ...}
    with client.stream() as stream:                  # one WebSocket, any number of calls
        call = stream.call("call-0043")
        print(call.send("agent", "How can I help?").labels)
        call.end()
```

- :class:`Client` / :class:`AsyncClient`: every endpoint; :class:`Call` / :class:`AsyncCall` assign seq.
- Retries: 429 and 503 (honouring ``Retry-After``) and failed connections, per :class:`RetryPolicy`;
  safe because turns are idempotent on (dialogue_id, seq). Feedback is not retried after an answer.
- Streams (:class:`Stream`, :class:`AsyncStream`): replies in frame order, futures per frame,
  reconnect and resend after the service's restart close (1012).
- Errors: the service's error kinds as classes (:mod:`turnwise.client.errors`), e.g. :class:`Conflict`,
  :class:`Overloaded`; :class:`Unreachable` when the service cannot be reached.

The client imports only the core, httpx and websockets: ``pip install turnwise`` and nothing else is needed
to talk to a service.
"""

from turnwise.client.aio import AsyncCall, AsyncClient
from turnwise.client.errors import (
    ERRORS,
    APIError,
    BundleRejected,
    ClientError,
    Conflict,
    DeadlineExceeded,
    InternalError,
    Invalid,
    ModelUnavailable,
    NotAllowed,
    NotFound,
    Overloaded,
    StoreUnavailable,
    StreamClosed,
    TooLarge,
    Unauthenticated,
    Unreachable,
)
from turnwise.client.retry import NO_RETRY, RetryPolicy
from turnwise.client.stream import AsyncStream, StreamCall, ws_url
from turnwise.client.sync import Call, Client
from turnwise.client.sync_stream import Stream, SyncStreamCall
from turnwise.messages import DialogueOut, EndedFrame, ScoreAllResult, ScoreResult, ScoresFrame, TurnResult

__all__ = [
    "ERRORS", "NO_RETRY", "APIError", "AsyncCall", "AsyncClient", "AsyncStream", "BundleRejected", "Call", "Client",
    "ClientError", "Conflict", "DeadlineExceeded", "DialogueOut", "EndedFrame", "InternalError", "Invalid",
    "ModelUnavailable", "NotAllowed", "NotFound", "Overloaded", "RetryPolicy", "ScoreAllResult", "ScoreResult",
    "ScoresFrame", "StoreUnavailable", "Stream", "StreamCall", "StreamClosed", "SyncStreamCall", "TooLarge",
    "TurnResult", "Unauthenticated", "Unreachable", "ws_url",
]
