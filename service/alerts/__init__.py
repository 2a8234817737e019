"""Alerts and call events: rules (:mod:`.rules`), their evaluation with the call aggregates
(:mod:`.evaluate`), the per-turn monitor step (:mod:`.monitor`), fan-out to event subscribers
(:mod:`.hub`) and webhooks (:mod:`.webhooks`)."""
