"""SGD's ``service/intent`` taxonomy: a hierarchical task over the services and intents of the schema.

SGD names intents per service (``Restaurants_1/ReserveRestaurant`` and ``Restaurants_2/ReserveRestaurant``
are two nodes of one taxonomy, like MultiDoGO's ``domain/intent``). :func:`service_intent_task` reads the
services and their intents from the ``schema.json`` of every split present; :func:`with_service_intent_paths`
adds the path label to each user turn with an active intent. The service of a turn is the one its
frame names (``meta.intent_services``, recorded by the adapter); for dialogues without it, the one of the
dialogue's ``meta.services`` that offers the intent (two such services are a clear error, as SGD has
dialogues where ``Services_1`` and ``Services_4`` both offer ``FindProvider``). Neither is in the default
schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from trainer.data.common import require_dir
from trainer.data.sgd import _FOLDER, NO_INTENT, SPLITS
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError
from turnwise.tasks import PATH_SEP, Task, TaskType

TASK_NAME = "service_intent"


def service_intents(root: str | Path) -> dict[str, list[str]]:
    """service name -> its intents, from the ``schema.json`` of every split folder present (sorted)."""
    base = require_dir(Path(root), "SGD folder")
    found: dict[str, set[str]] = {}
    for split in SPLITS:
        path = base / _FOLDER[split] / "schema.json"
        if not path.is_file():
            continue
        try:
            services = json.loads(path.read_text(encoding="utf-8"))
            for s in services:
                found.setdefault(str(s["service_name"]), set()).update(str(i["name"]) for i in s["intents"])
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"not an SGD schema ({err!r})", path=str(path)) from None
    if not found:
        raise DataError(f"no schema.json under {base} (expected <split>/schema.json)")
    return {name: sorted(intents) for name, intents in sorted(found.items())}


def service_intent_task(root: str | Path) -> Task:
    """The hierarchical task ``service/intent`` (levels ``service``, ``intent``) over the schema's pairs."""
    labels = [f"{service}{PATH_SEP}{intent}" for service, intents in service_intents(root).items()
              for intent in intents]
    return Task(type=TaskType.hierarchical, labels=labels, levels=["service", "intent"],
                description="SGD service/intent path of the user turn's active intent")


def with_service_intent_paths(dialogues: Sequence[Dialogue], root: str | Path,
                              task: str = TASK_NAME) -> list[Dialogue]:
    """Copies of ``dialogues`` whose user turns with an active intent (not ``NONE``) also carry ``task``."""
    offered = service_intents(root)
    out = []
    for d in dialogues:
        services = [s for s in d.meta.get("services", []) if s in offered]
        turns = []
        for i, t in enumerate(d.turns):
            intent = t.labels.get("active_intent")
            if not isinstance(intent, str) or intent == NO_INTENT:
                turns.append(t)
                continue
            recorded = d.meta.get("intent_services", {}).get(str(i))
            owners = [recorded] if recorded in offered else [s for s in services if intent in offered[s]]
            if len(owners) != 1:
                raise DataError(f"dialogue '{d.dialogue_id}': intent '{intent}' is offered by "
                                f"{owners or 'none'} of its services {services}")
            turns.append(t.model_copy(update={"labels": {**t.labels, task: f"{owners[0]}{PATH_SEP}{intent}"}}))
        out.append(d.model_copy(update={"turns": turns}))
    return out
