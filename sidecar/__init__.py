"""The training sidecar (``turnwise sidecar``): feedback stream -> finetune -> a new bundle version.

One cycle::

    XREADGROUP <prefix>feedback  ->  join with <prefix>{<id>}:turns  ->  ledger (SQLite, committed)  ->  XACK
    enough new gold labels?  ->  finetune from the serving checkpoint  ->  export a candidate bundle
    ->  evaluate serving and candidate bundles on the held-out set  ->  publish only if not worse

Modules, along those seams: :mod:`sidecar.settings` (``TURNWISE_SIDECAR_*``), :mod:`sidecar.ledger`
(the SQLite record of consumed feedback and of attempts), :mod:`sidecar.consumer` (the stream
consumer and the join), :mod:`sidecar.data` (feedback -> training and held-out dialogues),
:mod:`sidecar.publish` (finetune, export, the regression gate, the atomic publish),
:mod:`sidecar.loop` (the :class:`~sidecar.loop.Sidecar`: cycles, the long-running loop, one attempt)
and :mod:`sidecar.cli` (what ``turnwise sidecar`` calls).

Layering: this package uses the core (``turnwise``), the trainer, the exporter and the bundle reader;
only the CLI imports it. The Redis key layout, the stored-turn format and the file names come from
:mod:`turnwise.names`, which the service's window store shares.
"""
