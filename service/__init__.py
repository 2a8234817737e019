"""turnwise service: real-time scoring of live calls over REST and WebSocket.

- :mod:`service.app` -- ``create_app()``: settings, store, engine (with its micro-batcher) built in the lifespan.
- :mod:`service.store` -- the rolling window store (embedded or Redis).
- :mod:`service.batcher` -- the micro-batcher with admission control and per-request deadlines.
- :mod:`service.engine` -- the loaded model bundle, inference off the event loop, hot reload.
- :mod:`service.serve` / :mod:`service.cli` -- the runner and what ``turnwise serve`` calls.

The service imports only the core (``turnwise``) and the bundle reader; its wire contract (error kinds,
bodies, frames) is the core's :mod:`turnwise.api` and :mod:`turnwise.messages`, which the client
(:mod:`turnwise.client`) shares.
"""
