"""SGD's service/intent taxonomy: every user turn with an intent gets a consistent path (real data, skipped
without it), an ambiguous or missing service is a clear error, and the path task trains as hierarchical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_helpers import corpus

from trainer.data import load_source
from trainer.data.sgd_paths import TASK_NAME, service_intent_task, service_intents, with_service_intent_paths
from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError
from turnwise.tasks import TaskSchema, TaskType


def test_every_user_turn_with_an_intent_gets_its_services_path(data_root: Path) -> None:
    root = corpus(data_root, "sgd")
    task = service_intent_task(root)
    assert task.type is TaskType.hierarchical and task.levels == ["service", "intent"]
    offered = service_intents(root)
    assert set(task.labels) == {f"{s}/{i}" for s, intents in offered.items() for i in intents}
    TaskSchema(tasks={TASK_NAME: task})  # a valid schema
    for split in ("train", "test"):
        dialogues = with_service_intent_paths(load_source("sgd", root, split), root)
        with_intent = [(d, t) for d in dialogues for t in d.turns
                       if t.labels.get("active_intent") not in (None, "NONE")]
        assert with_intent
        for d, t in with_intent:
            service, intent = t.labels[TASK_NAME].split("/")
            assert intent == t.labels["active_intent"] and service in d.meta["services"]
            assert service == d.meta["intent_services"][str(d.turns.index(t))]
            assert t.labels[TASK_NAME] in task.labels
        assert all(TASK_NAME not in t.labels for d in dialogues for t in d.turns
                   if t.labels.get("active_intent") in (None, "NONE"))


def fake_root(tmp_path: Path) -> Path:
    (tmp_path / "train").mkdir()
    schema = [{"service_name": "Restaurants_1", "intents": [{"name": "ReserveRestaurant"}]},
              {"service_name": "Restaurants_2",
               "intents": [{"name": "ReserveRestaurant"}, {"name": "FindRestaurants"}]}]
    (tmp_path / "train" / "schema.json").write_text(json.dumps(schema))
    return tmp_path


def dialogue(services: list[str], intent: str) -> Dialogue:
    return Dialogue(dialogue_id="d1", meta={"services": services},
                    turns=[Turn(speaker="user", text="a table for two", labels={"active_intent": intent}),
                           Turn(speaker="system", text="where?")])


def test_the_path_follows_the_dialogues_own_service(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (d,) = with_service_intent_paths([dialogue(["Restaurants_2"], "ReserveRestaurant")], root)
    assert d.turns[0].labels[TASK_NAME] == "Restaurants_2/ReserveRestaurant" and not d.turns[1].labels
    with pytest.raises(DataError, match="offered by \\['Restaurants_1', 'Restaurants_2'\\]"):
        with_service_intent_paths([dialogue(["Restaurants_1", "Restaurants_2"], "ReserveRestaurant")], root)
    with pytest.raises(DataError, match="offered by none"):
        with_service_intent_paths([dialogue(["Restaurants_1"], "FindRestaurants")], root)
    with pytest.raises(DataError, match=r"no schema\.json"):
        service_intents(tmp_path / "train")
