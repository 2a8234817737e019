"""A small OpenAI-compatible chat-completions server on loopback, for tests of the LLM teacher.

    with FakeOpenAIServer(responder=BankResponder(gold, accuracy=0.8)) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")

- ``POST /v1/chat/completions``: answers with ``responder(body, choice_index)``; deterministic for the
  same request body and choice index. ``usage`` counts ~4 characters per token.
- ``n_mode``: ``"support"`` (n choices), ``"refuse"`` (HTTP 400 when n > 1, like servers that only do
  n = 1), ``"ignore"`` (always one choice, like Ollama).
- Failure injection: ``inject(429, 500, ...)`` makes the next requests fail with those statuses (with a
  tiny ``retry-after-ms`` so the SDK's backoff stays fast); ``inject("garbage_http")`` answers 200 with
  a body that is not JSON.
- Counters: ``requests`` (every HTTP request, failures included), ``ok`` (answered 200 with JSON),
  ``bodies`` (the parsed JSON of each request).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any], int], str]

_TAGGED = re.compile(r"^\[(usr|sys)\] (.*)$")
_NUMBERED = re.compile(r"^(\d+)\. \[(usr|sys)\] (.*)$")
_OPTION = re.compile(r"^([A-Z])\) ([A-Za-z0-9_]+):")
GARBAGE = "Hmm, hard to say. It could be several things, really!"


def _rng(body: Mapping[str, Any], choice: int) -> random.Random:
    key = json.dumps({"m": body.get("messages"), "seed": body.get("seed"), "t": body.get("temperature"),
                      "c": choice}, sort_keys=True)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


class BankResponder:
    """Answers turnwise's prompt-bank styles: right with probability ``accuracy`` (gold looked up by
    utterance text), else a random other label; ``garbage`` is the probability of an unreadable answer."""

    def __init__(self, gold: Mapping[str, str], labels: list[str], accuracy: float = 0.8, garbage: float = 0.0):
        self.gold = dict(gold)
        self.labels = list(labels)
        self.accuracy = accuracy
        self.garbage = garbage

    def _pick(self, text: str, rng: random.Random) -> str:
        gold = self.gold.get(text)
        if gold is not None and rng.random() < self.accuracy:
            return gold
        others = [lab for lab in self.labels if lab != gold]
        return rng.choice(others)

    def __call__(self, body: dict[str, Any], choice: int) -> str:
        rng = _rng(body, choice)
        user = body["messages"][-1]["content"]
        lines = user.splitlines()
        if rng.random() < self.garbage:
            return GARBAGE
        numbered = [m for m in (_NUMBERED.match(ln) for ln in lines) if m]
        if numbered:
            out: dict[str, list[int]] = {lab: [] for lab in self.labels}
            for m in numbered:
                out[self._pick(m.group(3), rng)].append(int(m.group(1)))
            return json.dumps(out)
        tagged = [m for m in (_TAGGED.match(ln) for ln in lines) if m]
        target = tagged[-1].group(2) if tagged else ""
        label = self._pick(target, rng)
        options = {m.group(2): m.group(1) for m in (_OPTION.match(ln) for ln in lines) if m}
        if options:
            return options[label]
        return json.dumps({"reason": "the speaker's words say so", "label": label})


def constant_responder(text: str) -> Responder:
    return lambda body, choice: text


class FakeOpenAIServer:
    def __init__(self, responder: Responder | None = None, n_mode: str = "support", model: str = "fake-model"):
        if n_mode not in ("support", "refuse", "ignore"):
            raise ValueError("n_mode must be support, refuse or ignore")
        self.responder = responder or constant_responder("A")
        self.n_mode = n_mode
        self.model = model
        self.requests = 0
        self.ok = 0
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self._failures: list[int | str] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------------------

    def inject(self, *failures: int | str) -> None:
        """The next requests fail in this order: an HTTP status, or ``"garbage_http"``."""
        with self._lock:
            self._failures.extend(failures)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = self.ok = 0
            self.bodies.clear()
            self.statuses.clear()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: bytes, headers: Mapping[str, str] | None = None,
                      ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
                with server._lock:
                    server.statuses.append(status)

            def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
                kind = "invalid_request_error" if status == 400 else "server_error"
                body = {"error": {"message": message, "type": kind, "code": status}}
                self._send(status, json.dumps(body).encode(), headers)

            def do_POST(self) -> None:  # http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with server._lock:
                    server.requests += 1
                    failure = server._failures.pop(0) if server._failures else None
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._error(404, f"no route {self.path}")
                    return
                if failure == "garbage_http":
                    self._send(200, b"<html>502 Bad Gateway... just kidding</html>", ctype="application/json")
                    return
                if isinstance(failure, int):
                    self._error(failure, f"injected {failure}", {"retry-after-ms": "5"})
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    self._error(400, "body is not JSON")
                    return
                with server._lock:
                    server.bodies.append(body)
                n = int(body.get("n") or 1)
                if n > 1 and server.n_mode == "refuse":
                    self._error(400, "n > 1 is not supported by this server")
                    return
                if server.n_mode == "ignore":
                    n = 1
                choices, completion = [], 0
                for i in range(n):
                    content = server.responder(body, i)
                    completion += len(content) // 4 + 1
                    choices.append({"index": i, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop", "logprobs": None})
                prompt = sum(len(m.get("content") or "") for m in body.get("messages", [])) // 4 + 1
                resp = {"id": f"chatcmpl-{server.requests}", "object": "chat.completion", "created": 0,
                        "model": body.get("model", server.model), "choices": choices,
                        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                  "total_tokens": prompt + completion}}
                with server._lock:
                    server.ok += 1
                self._send(200, json.dumps(resp).encode())

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
