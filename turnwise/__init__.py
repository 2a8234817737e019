"""turnwise core: what trainer, export and service must agree on.

- :mod:`turnwise.dialogue` -- the dialogue data model and JSONL reading/writing.
- :mod:`turnwise.tasks` -- the task schema (binary / multiclass / multilabel heads).
- :mod:`turnwise.window` -- the one window formatter used for training, export parity and serving.
- :mod:`turnwise.api` / :mod:`turnwise.messages` -- the service's wire contract (error kinds, statuses,
  paths, close codes; request, response and frame models), shared by the service and the client.
- :mod:`turnwise.client` -- the Python client of the service (httpx and websockets, no torch).
"""

__version__ = "0.1.0"
