"""MultiDoGO (Peskov et al., EMNLP 2019), turn-level paper splits:
``<root>/turn_level/<domain>/{train,dev,test}.tsv`` for the domains airline, fastfood, finance,
insurance, media, software. The files hold customer turns only.

Which domains load:
- ``path`` = the corpus folder (holding ``turn_level/``) or the ``turn_level`` folder: every domain
  found, in sorted order, unless ``domains=[...]`` names some of them;
- ``path`` = one domain folder (holding ``train.tsv`` ...): that domain only.

Mapping:
- one dialogue per ``conversationId`` (the dialogue id), in file order; turns ordered by ``turnNumber``
  (the gaps are the agent turns, which the release does not include), speaker ``customer``.
  meta ``{"source", "split", "domain", "turn_numbers"}``.
- task ``intent`` (multiclass over the union of the intents of all six domains): a ``<div>``-joined
  multi-intent keeps its first intent and is counted as ``multi_intent``.
- task ``slots`` (multilabel over the 64 slot names): the distinct non-``O`` slot labels of the turn.
  Rows whose label count differs from their token count are counted as ``slot_label_count_mismatch``
  and keep their slot set.
- text: the corpus text (lower-cased, no punctuation) with whitespace, including the newlines and tabs
  inside quoted fields, collapsed to single spaces. Empty utterances are kept and counted.
- finance writes ``turnNumber`` as a float (``"3.0"``); it is read as an integer and counted.

The ``domain/intent`` taxonomy: :func:`with_intent_paths` adds a label ``intent_path`` =
``<domain>/<intent>`` to every turn with an intent (task :data:`PATH_TASK`, hierarchical, levels
``[domain, intent]``, the 85 paths of the release); :data:`FLAT_PATH_TASK` is the same label set as
one multiclass task (the flat classifier it is compared with). Neither is in the default schema.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from trainer.data.common import LoadReport, clean_text, normalise_split, require_dir, take
from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError
from turnwise.tasks import Task, TaskSchema, TaskType

NAME = "multidogo"
SPLITS = ("train", "validation", "test")
DOMAINS = ("airline", "fastfood", "finance", "insurance", "media", "software")
_FILE_SPLIT = {"train": "train", "validation": "dev", "test": "test"}
_HEADER = ["conversationId", "turnNumber", "utteranceId", "utterance", "slot-labels", "intent"]
SPEAKER = "customer"
MULTI_INTENT_SEP = "<div>"

# Union over the six domains and three splits of the release.
_INTENT_NAMES = """
bookflight cancelserviceintent changeorder changeseatassignment checkbalance checkclaimstatus
checkoffereligibility checkserverstatus closeaccount closinggreeting confirmation contentonly
disputecharge expensereport getboardingpass getchannelpackageintent getinformationintent getpromotions
getproofofinsurance getroutingnumber getseatinfo openaccount openinggreeting orderbreakfastintent
orderburgerintent orderchecks orderdessertintent orderdrinkintent orderpizzaintent ordersaladintent
ordersideintent outofdomain providereceipt rejection replacecard reportbrokenphone reportbrokensoftware
reportlostcard softwareupdate startorder startserviceintent stoporder thankyou transfermoney
transferserviceintent updateaccountinfo updateaddress upgradeserviceintent viewbillsintent
viewdatausageintent
"""
INTENT_LABELS = _INTENT_NAMES.split()
_SLOT_NAMES = """
account_id account_number address approver_name arrival_city arrival_time booking_confirmation_number
car_brand car_model car_year card_number channel_package charge_amount charge_date charge_time claimid
company_name cost current_city current_zipcode datacategoryvalues date departure_city departure_time
drink_item email_address end_date excluded_ingredient expense_type flight_number food_item frequency
ingredient item_code item_name lastuseddate lastusedtime name new_city new_seat_number new_zipcode
number_of_passengers offer old_seat_number order_number password payment_type phone_number phonenumber
police_notified policyid price promotion quantity replacement_reason seat_type service_type size
software_name ssn start_date target_account_number transferamount username
"""
SLOT_LABELS = _SLOT_NAMES.split()

TASKS = TaskSchema(
    tasks={
        "intent": Task(
            type=TaskType.multiclass, labels=INTENT_LABELS, description="MultiDoGO customer intent"
        ),
        "slots": Task(
            type=TaskType.multilabel, labels=SLOT_LABELS, description="MultiDoGO slots in the turn"
        ),
    }
)
# Intents per domain, over the three splits of the release.
_DOMAIN_INTENTS = {
    "airline": "bookflight changeseatassignment getboardingpass getseatinfo",
    "fastfood": "orderbreakfastintent orderburgerintent orderdessertintent orderdrinkintent orderpizzaintent "
                "ordersaladintent ordersideintent",
    "finance": "checkbalance checkoffereligibility closeaccount disputecharge getroutingnumber openaccount "
               "orderchecks replacecard reportlostcard transfermoney updateaddress",
    "insurance": "checkclaimstatus getproofofinsurance reportbrokenphone",
    "media": "cancelserviceintent getchannelpackageintent getinformationintent startserviceintent "
             "transferserviceintent updateaccountinfo upgradeserviceintent viewbillsintent viewdatausageintent",
    "software": "changeorder checkserverstatus expensereport getpromotions providereceipt reportbrokensoftware "
                "softwareupdate startorder stoporder",
}
SHARED_INTENTS = ("closinggreeting", "confirmation", "contentonly", "openinggreeting", "outofdomain", "rejection",
                  "thankyou")  # in every domain
PATH_LABELS = [f"{d}/{i}" for d in DOMAINS for i in sorted([*_DOMAIN_INTENTS[d].split(), *SHARED_INTENTS])]
PATH_TASK_NAME = "intent_path"
PATH_TASK = Task(type=TaskType.hierarchical, labels=PATH_LABELS, levels=["domain", "intent"],
                 description="MultiDoGO domain/intent path")
FLAT_PATH_TASK = Task(type=TaskType.multiclass, labels=PATH_LABELS,
                      description="MultiDoGO domain/intent path as one flat label")
_INTENT_SET = frozenset(INTENT_LABELS)
_SLOT_SET = frozenset(SLOT_LABELS)


def _is_domain_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f"{s}.tsv").is_file() for s in _FILE_SPLIT.values())


def domain_dirs(root: str | Path, domains: Sequence[str] | None = None) -> list[Path]:
    """The domain folders ``root`` stands for (see the module docstring)."""
    root = require_dir(Path(root), "MultiDoGO folder")
    if _is_domain_dir(root):
        if domains and list(domains) != [root.name]:
            raise DataError(
                f"path is the '{root.name}' domain folder, cannot select domains {list(domains)}",
                path=str(root),
            )
        return [root]
    base = root / "turn_level" if (root / "turn_level").is_dir() else root
    found = {p.name: p for p in sorted(base.iterdir()) if _is_domain_dir(p)}
    if not found:
        raise DataError("no MultiDoGO domain folders (<domain>/{train,dev,test}.tsv) found", path=str(base))
    if not domains:
        return list(found.values())
    unknown = [d for d in domains if d not in found]
    if unknown:
        raise DataError(f"unknown domain(s) {unknown} (available: {sorted(found)})", path=str(base))
    return [found[d] for d in domains]


def available_splits(root: str | Path, domains: Sequence[str] | None = None) -> list[str]:
    dirs = domain_dirs(root, domains)
    return [s for s in SPLITS if all((d / f"{_FILE_SPLIT[s]}.tsv").is_file() for d in dirs)]


def _turn_number(raw: str, path: Path, line: int, report: LoadReport) -> int:
    raw = raw.strip()
    if raw.isdigit():
        return int(raw)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise DataError(f"column 'turnNumber': expected an integer, got {raw!r}", path=str(path), line=line)
    report.add("float_turn_number", f"{path}:{line}")
    return int(value)


def _read_domain(path: Path, split: str, domain: str, report: LoadReport) -> list[Dialogue]:
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    convs: dict[str, list[tuple[int, Turn]]] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if header != _HEADER:
                raise DataError(f"expected header {_HEADER}, got {header}", path=str(path), line=1)
            for row in reader:
                line = reader.line_num
                if len(row) != len(_HEADER):
                    raise DataError(
                        f"expected {len(_HEADER)} tab-separated fields, got {len(row)}",
                        path=str(path),
                        line=line,
                    )
                conv_id, turn_no, _, utterance, slot_labels, intent_field = row
                if not conv_id.strip():
                    raise DataError("empty conversationId", path=str(path), line=line)
                where = f"{path}:{line}"
                number = _turn_number(turn_no, path, line, report)
                text = clean_text(utterance)
                if not text:
                    report.add("empty_utterance", where)
                labels: dict[str, str | list[str]] = {}
                intents = [i.strip() for i in intent_field.split(MULTI_INTENT_SEP) if i.strip()]
                if len(intents) > 1:
                    report.add("multi_intent", where)
                if not intents:
                    report.add("missing_label", where)
                elif intents[0] in _INTENT_SET:
                    labels["intent"] = intents[0]
                else:
                    report.add("unknown_label", f"{where}: intent '{intents[0]}'")
                tags = slot_labels.split()
                if len(tags) != len(utterance.split()):
                    report.add("slot_label_count_mismatch", where)
                found = {t for t in tags if t != "O"}
                for unknown in sorted(found - _SLOT_SET):
                    report.add("unknown_label", f"{where}: slot '{unknown}'")
                labels["slots"] = [s for s in SLOT_LABELS if s in found]
                convs.setdefault(conv_id.strip(), []).append(
                    (number, Turn(speaker=SPEAKER, text=text, labels=labels))
                )
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=str(path)) from None
    except csv.Error as err:
        raise DataError(f"malformed TSV: {err}", path=str(path)) from None

    out = []
    for conv_id, numbered in convs.items():
        numbered.sort(key=lambda nt: nt[0])  # stable: equal numbers keep file order
        out.append(
            Dialogue(
                dialogue_id=conv_id,
                turns=[t for _, t in numbered],
                meta={
                    "source": NAME,
                    "split": split,
                    "domain": domain,
                    "turn_numbers": [n for n, _ in numbered],
                },
            )
        )
    return out


def load(
    root: str | Path,
    split: str,
    *,
    max_dialogues: int | None = None,
    report: LoadReport | None = None,
    domains: Sequence[str] | None = None,
) -> list[Dialogue]:
    split = normalise_split(split)
    report = report if report is not None else LoadReport()
    out: list[Dialogue] = []
    seen: dict[str, str] = {}
    for d in domain_dirs(root, domains):
        if max_dialogues is not None and len(out) >= max_dialogues:
            break
        for dia in _read_domain(d / f"{_FILE_SPLIT[split]}.tsv", split, d.name, report):
            if dia.dialogue_id in seen:
                raise DataError(
                    f"conversationId '{dia.dialogue_id}' appears in domains '{seen[dia.dialogue_id]}' "
                    f"and '{d.name}'",
                    path=str(d),
                )
            seen[dia.dialogue_id] = d.name
            out.append(dia)
    return take(out, max_dialogues)


def with_intent_paths(dialogues: Sequence[Dialogue], task: str = PATH_TASK_NAME) -> list[Dialogue]:
    """Copies of ``dialogues`` whose turns with an ``intent`` also carry ``task`` = ``<domain>/<intent>``."""
    out = []
    for d in dialogues:
        domain = d.meta.get("domain")
        if domain not in _DOMAIN_INTENTS:
            raise DataError(f"dialogue '{d.dialogue_id}' has no MultiDoGO domain in its meta")
        turns = [t.model_copy(update={"labels": {**t.labels, task: f"{domain}/{t.labels['intent']}"}})
                 if "intent" in t.labels else t for t in d.turns]
        out.append(d.model_copy(update={"turns": turns}))
    return out
