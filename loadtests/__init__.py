"""Live-call load test of the turnwise service: locust users that each play a call.

- ``locustfile.py``: the users (WebSocket and REST), the ramp shape and the SLO gate (imports locust,
  which monkey-patches the process with gevent: only ever load it in locust's own process);
- ``calls.py``, ``stages.py``, ``slo.py``: the pure parts (dialogues, ramp plan, gate), unit-tested;
- ``stack.py``: a real redis-server and ``turnwise serve`` on loopback, and the bundles to serve;
- ``report.py``: the JSON summary and the latency-over-time PNG from locust's CSV;
- ``run.py``: what ``make loadtest`` runs (``python -m loadtests.run --help``).
- ``soak.py`` (``soak_client.py``, ``soak_report.py``): what ``make soak`` runs: two services on one Redis,
  live calls over WebSockets, three faults and the seq audit (``python -m loadtests.soak --help``).
"""
