"""Development harness shared by tests/, benchmarks/ and loadtests/ (not part of the installed wheel).

- :mod:`harness.ports`    ``free_port``: a free TCP port on loopback.
- :mod:`harness.redis`    :class:`~harness.redis.RedisServer`: a real redis-server on a free loopback port.
- :mod:`harness.bundles`  untrained checkpoints and bundles (tiny random BERT or MiniLM) to serve or export.
- :mod:`harness.live`     :class:`~harness.live.LiveServer`: the real service under uvicorn in a thread.

Imported from the repository root, which is on ``sys.path`` for pytest (``pythonpath = ["."]``) and
for ``python -m benchmarks.x`` / ``python -m loadtests.x``. Installed packages (``export``,
``service``, ...) must not import it.
"""
