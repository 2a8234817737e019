"""Schema-Guided Dialogue (SGD / DSTC8, Rastogi et al., AAAI 2020): ``<root>/<split>/dialogues_NNN.json``
and ``<root>/<split>/schema.json`` (split folders ``train``, ``dev``, ``test``).

Mapping:
- speakers ``user`` and ``system``; text with whitespace collapsed; dialogues in file-name order, then
  file order. Dialogue id ``sgd-<split>-<dialogue_id>`` (the corpus ids such as ``1_00000`` repeat
  across splits); meta ``{"source", "split", "file", "sgd_dialogue_id", "services", "intent_services"}``
  (``intent_services``: user turn index -> the service of the frame that gave its active intent).
- user turns get four tasks, system turns none (labels are sparse):
  - ``active_intent`` (multiclass): the first frame whose ``state.active_intent`` is not ``NONE``,
    else ``NONE``. Labels: the sorted union of the intent names in the train and test ``schema.json``
    (fixed below so the head does not change with the split) plus ``NONE``.
  - ``user_act`` (multilabel): the distinct acts of the turn's frames, over the 11 SGD user acts.
  - ``slots`` (multilabel): the slot names the user gave a value in this turn: the frames' ``slots``
    spans (non-categorical values quoted in the text, also those of ``SELECT``) united with the slots of
    ``INFORM`` actions that carry a value (categorical values such as ``number_of_seats``).
    Labels: the sorted union of slot names in the train and test ``schema.json``.
  - ``action`` (multiclass ``clarify`` / ``answer`` / ``other``): the agent's next move, read from the
    acts of the following system turn's frames: ``REQUEST`` -> ``clarify``; ``INFORM``, ``INFORM_COUNT``,
    ``OFFER``, ``OFFER_INTENT``, ``CONFIRM``, ``NOTIFY_SUCCESS``, ``NOTIFY_FAILURE`` -> ``answer``; only
    ``REQ_MORE`` / ``GOODBYE`` (or no act) -> ``other``. Precedence ``clarify`` > ``answer`` > ``other``
    (the MultiWOZ rule). A user turn without a following system turn gets no ``action`` label.
Intents or slots outside the fixed lists are counted as ``unknown_label`` and dropped.
Empty utterances (two system turns of the test split) are kept and counted as ``empty_utterance``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.data.common import LoadReport, clean_text, normalise_split, require_dir, take
from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError
from turnwise.tasks import Task, TaskSchema, TaskType

NAME = "sgd"
SPLITS = ("train", "validation", "test")
_FOLDER = {"train": "train", "validation": "dev", "test": "test"}
NO_INTENT = "NONE"

# Sorted union of the intent / slot names in train/schema.json and test/schema.json of the DSTC8 release.
_SCHEMA_INTENT_NAMES = """
AddAlarm AddEvent BookAppointment BookHouse BuyBusTicket BuyEventTickets BuyMovieTickets CheckBalance
FindApartment FindAttractions FindBus FindEvents FindHomeByArea FindMovies FindProvider FindRestaurants
FindTrains GetAlarms GetAvailableTime GetCarsAvailable GetEventDates GetEvents GetRide GetTimesForMovie
GetTrainTickets GetWeather LookupMusic LookupSong MakePayment PlayMedia PlayMovie PlaySong
RequestPayment ReserveCar ReserveHotel ReserveOnewayFlight ReserveRestaurant ReserveRoundtripFlights
ScheduleVisit SearchHotel SearchHouse SearchOnewayFlight SearchRoundtripFlights ShareLocation
TransferMoney
"""
SCHEMA_INTENTS = _SCHEMA_INTENT_NAMES.split()
_SLOT_NAMES = """
account_type add_insurance additional_luggage address address_of_location airlines alarm_name alarm_time
album amount appointment_date appointment_time approximate_ride_duration area artist attraction_name
available_end_time available_start_time average_rating balance car_name car_type cast category
check_in_date check_out_date city city_of_event class contact_name cuisine date date_of_journey
dentist_name departure_date departure_time destination destination_airport destination_city
destination_station_name device directed_by doctor_name dropoff_date end_date event_date event_location
event_name event_time event_type fare fare_type free_entry from from_city from_location from_station
furnished genre good_for_kids group_size has_garage has_laundry_service has_live_music
has_seating_outdoors has_vegetarian_options has_wifi hotel_name humidity in_unit_laundry
inbound_arrival_time inbound_departure_time intent is_nonstop is_redeye is_unisex journey_start_time
leaving_date leaving_time location movie_name movie_title new_alarm_name new_alarm_time num_passengers
number_of_adults number_of_baths number_of_beds number_of_days number_of_riders number_of_rooms
number_of_seats number_of_tickets number_stops offers_cosmetic_services origin origin_airport
origin_city origin_station_name outbound_arrival_time outbound_departure_time party_size passengers
payment_method percent_rating pets_allowed pets_welcome phone_number pickup_city pickup_date
pickup_location pickup_time place_name playback_device precipitation price price_per_day price_per_night
price_per_ticket price_range private_visibility property_name rating receiver recipient_account_name
recipient_account_type refundable rent restaurant_name return_date ride_fare ride_type seating_class
serves_alcohol shared_ride show_date show_time show_type smoking_allowed song_name star_rating starring
start_date stay_length street_address stylist_name subcategory subtitle_language subtitles temperature
theater_name therapist_name time title to to_city to_location to_station total total_price track
transfers travelers trip_protection type venue venue_address visit_date wait_time where_to wind year
"""
SLOT_LABELS = _SLOT_NAMES.split()
INTENT_LABELS = [*SCHEMA_INTENTS, NO_INTENT]
USER_ACT_LABELS = [
    "INFORM",
    "INFORM_INTENT",
    "REQUEST",
    "SELECT",
    "THANK_YOU",
    "AFFIRM",
    "NEGATE",
    "GOODBYE",
    "REQUEST_ALTS",
    "NEGATE_INTENT",
    "AFFIRM_INTENT",
]
ACTION_LABELS = ["clarify", "answer", "other"]
CLARIFY_ACTS = frozenset({"REQUEST"})
ANSWER_ACTS = frozenset({"INFORM", "INFORM_COUNT", "OFFER", "OFFER_INTENT", "CONFIRM", "NOTIFY_SUCCESS",
                         "NOTIFY_FAILURE"})

TASKS = TaskSchema(
    tasks={
        "active_intent": Task(
            type=TaskType.multiclass, labels=INTENT_LABELS, description="SGD active intent of the user turn"
        ),
        "user_act": Task(
            type=TaskType.multilabel, labels=USER_ACT_LABELS, description="SGD user dialogue acts"
        ),
        "slots": Task(
            type=TaskType.multilabel,
            labels=SLOT_LABELS,
            description="SGD slots given a value in this user turn",
        ),
        "action": Task(
            type=TaskType.multiclass, labels=ACTION_LABELS,
            description="the agent's next move after this user turn: ask to clarify, answer, or other",
        ),
    }
)
_INTENT_SET = frozenset(INTENT_LABELS)
_ACT_SET = frozenset(USER_ACT_LABELS)
_SLOT_SET = frozenset(SLOT_LABELS)
_SPEAKERS = {"USER": "user", "SYSTEM": "system"}


def _files(root: Path, split: str) -> list[Path]:
    folder = root / _FOLDER[split]
    return sorted(folder.glob("dialogues_*.json")) if folder.is_dir() else []


def available_splits(root: str | Path) -> list[str]:
    return [s for s in SPLITS if _files(Path(root), s)]


def _in_order(found: set[str], labels: list[str]) -> list[str]:
    return [lab for lab in labels if lab in found]


def _user_labels(frames: list[Any], where: str, path: Path, report: LoadReport) -> dict[str, str | list[str]]:
    intent = NO_INTENT
    acts: set[str] = set()
    slots: set[str] = set()
    for frame in frames:
        state = frame.get("state")
        if not isinstance(state, dict):
            raise DataError(f"{where}: user frame without a 'state' object", path=str(path))
        if intent == NO_INTENT:
            intent = str(state.get("active_intent") or NO_INTENT)
        for action in frame.get("actions") or []:
            acts.add(action["act"])
            if action["act"] == "INFORM" and action.get("slot") and action.get("values"):
                slots.add(action["slot"])
        slots.update(span["slot"] for span in frame.get("slots") or [])
    labels: dict[str, str | list[str]] = {}
    if intent in _INTENT_SET:
        labels["active_intent"] = intent
    else:
        report.add("unknown_label", f"{path.name} {where}: active_intent '{intent}'")
    for task, found, known, order in (
        ("user_act", acts, _ACT_SET, USER_ACT_LABELS),
        ("slots", slots, _SLOT_SET, SLOT_LABELS),
    ):
        for unknown in sorted(found - known):
            report.add("unknown_label", f"{path.name} {where}: {task} '{unknown}'")
        labels[task] = _in_order(found, order)
    return labels


def intent_service(frames: Any) -> str | None:
    """The service of the frame that gives a user turn its ``active_intent`` (the first not ``NONE``)."""
    for frame in frames or []:
        state = frame.get("state") or {}
        if str(state.get("active_intent") or NO_INTENT) != NO_INTENT:
            return str(frame.get("service")) if frame.get("service") else None
    return None


def next_action(system_frames: Any) -> str:
    """``action`` of a user turn from the frames of the system turn after it."""
    acts = {str(a.get("act")) for f in system_frames or [] for a in f.get("actions") or []}
    if acts & CLARIFY_ACTS:
        return "clarify"
    return "answer" if acts & ANSWER_ACTS else "other"


def _convert(raw: Any, split: str, path: Path, report: LoadReport) -> Dialogue:
    if not isinstance(raw, dict) or not isinstance(raw.get("turns"), list) or "dialogue_id" not in raw:
        raise DataError("expected dialogue objects with 'dialogue_id' and 'turns'", path=str(path))
    did = str(raw["dialogue_id"])
    turns: list[Turn] = []
    intent_services: dict[str, str] = {}  # user turn index -> the service of its active intent
    for i, t in enumerate(raw["turns"]):
        where = f"dialogue {did} turn {i}"
        try:
            speaker = _SPEAKERS[t["speaker"]]
            text = clean_text(t["utterance"])
            frames = t["frames"]
            if speaker == "user":
                labels = _user_labels(frames, where, path, report)
                if (service := intent_service(frames)) is not None:
                    intent_services[str(i)] = service
                nxt = raw["turns"][i + 1] if i + 1 < len(raw["turns"]) else None
                if nxt is not None and nxt.get("speaker") == "SYSTEM":
                    labels["action"] = next_action(nxt.get("frames"))
            else:
                labels = {}
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(
                f"dialogue '{did}' turn {i}: missing or malformed field ({err!r})", path=str(path)
            ) from None
        if not text:
            report.add("empty_utterance", f"{path.name} {where}")
        turns.append(Turn(speaker=speaker, text=text, labels=labels))
    return Dialogue(
        dialogue_id=f"{NAME}-{split}-{did}",
        turns=turns,
        meta={
            "source": NAME,
            "split": split,
            "file": path.name,
            "sgd_dialogue_id": did,
            "services": list(raw.get("services") or []),
            "intent_services": intent_services,
        },
    )


def load(
    root: str | Path,
    split: str,
    *,
    max_dialogues: int | None = None,
    report: LoadReport | None = None,
) -> list[Dialogue]:
    root = require_dir(Path(root), "SGD folder")
    split = normalise_split(split)
    report = report if report is not None else LoadReport()
    files = _files(root, split)
    if not files:
        raise DataError(
            f"no dialogues_*.json for split '{split}' (available: {available_splits(root) or 'none'})",
            path=str(root / _FOLDER[split]),
        )
    out: list[Dialogue] = []
    for path in files:
        if max_dialogues is not None and len(out) >= max_dialogues:
            break
        try:
            raw = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"invalid JSON ({err})", path=str(path)) from None
        if not isinstance(raw, list):
            raise DataError("expected a JSON list of dialogues", path=str(path))
        for d in raw:
            if max_dialogues is not None and len(out) >= max_dialogues:
                break
            out.append(_convert(d, split, path, report))
    return take(out, max_dialogues)
