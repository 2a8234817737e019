"""turnwise core: what trainer, export and service must agree on.

- :mod:`turnwise.dialogue` -- the dialogue data model and JSONL reading/writing.
- :mod:`turnwise.tasks` -- the task schema (binary / multiclass / multilabel heads).
- :mod:`turnwise.window` -- the one window formatter used for training, export parity and serving.
"""

__version__ = "0.1.0"
