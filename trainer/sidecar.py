"""The training sidecar (``turnwise sidecar``): feedback stream -> finetune -> a new bundle version.

One cycle::

    XREADGROUP <prefix>feedback  ->  join with <prefix>{<id>}:turns  ->  ledger (SQLite, committed)  ->  XACK
    enough new gold labels?  ->  finetune from the serving checkpoint  ->  export a candidate bundle
    ->  evaluate serving and candidate bundles on the held-out set  ->  publish only if not worse

**Delivery.** The sidecar reads the stream in a consumer group (``group``/``consumer``) and acks an
entry only after its joined record is committed to the ledger. A crash between commit and ack
leaves the entry pending; on start the sidecar re-reads its own pending entries (``XREADGROUP`` from
id 0), claims entries left pending by other consumer names (``XAUTOCLAIM`` after ``claim_idle_s``,
e.g. a pod that restarted under another name), and the ledger's primary key on the stream id makes
the re-delivery a no-op: nothing is lost, nothing is counted twice.

**Join.** Feedback names ``(dialogue_id, seq, task, label)``; the turn's text lives in the dialogue's
window list. The context stored is the window up to and including ``seq`` -- exactly what the model
saw, since the service keeps ``window.max_turns`` turns. The join happens when the sidecar reads the
entry, so an expired or ended dialogue (``window_missing``), a turn trimmed out of the window by the
turns that followed it (``turn_trimmed``) or a seq the window never held (``turn_missing``) is
recorded, counted and skipped: feedback posted after a call ended (DELETE / ``end`` frame) cannot be
used, and the loop keeps consuming while a finetune runs so the lag stays at about ``block_ms``. An
entry that carries a ``window`` field (the JSON list of window turns, as the service held them when
the feedback arrived) is joined from that snapshot instead, which removes both races. The service
attaches that snapshot whenever the turn is still in the call's window (its 202 answer says
``"context": "window"``), so in practice only feedback for an already ended or expired call is skipped.

**Checkpoints.** A bundle holds ONNX graphs, not PyTorch weights. The sidecar keeps the checkpoint of
every version it publishes in ``<state_dir>/checkpoints/<version>/``; for a version it did not
build (the seed bundle) it uses ``checkpoint`` (``TURNWISE_SIDECAR_CHECKPOINT``) or, if that path
exists, the ``source_checkpoint.path`` recorded in the bundle's ``bundle.json``. The state dir
defaults to ``<bundle root>/.sidecar`` -- on the bundle volume, so the ledger and checkpoints survive
restarts.

**Training.** An attempt starts once ``min_new_labels`` joined labels arrived since the last attempt
(and ``cooldown_s`` passed). It finetunes the serving checkpoint (``objective="none"``, small
learning rates, ``epochs``/``max_steps``) on every joined training label so far (the latest label per
turn and task wins; the newest ``max_train_examples``), one dialogue per labelled turn holding its
stored window. Held-out set: the ``heldout`` JSONL of gold dialogues if given, else the feedback of
a deterministic ``heldout_fraction`` of calls (by a hash of ``dialogue_id``, so a call never feeds
both sides); it is never trained on. A finetune runs on a worker thread; SIGTERM abandons it at
the next step and nothing is published; half-written candidates are removed at the next start.

**Publishing.** The candidate is exported next to the versions (same filesystem), evaluated, then
``rename(.candidate-<v>, <root>/<v>)`` and the ``current`` symlink is swapped by renaming a fresh
relative symlink over it: a reader sees the old or the new version, never neither. The service's
bundle watcher hot-reloads it. "Not worse": candidate score >= serving score - ``max_regression``
(score = mean accuracy over the tasks with held-out gold), on at least ``min_heldout_labels`` labels.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.exceptions import ResponseError

from turnwise.dialogue import Dialogue, Turn, read_jsonl
from turnwise.errors import TurnwiseError
from turnwise.tasks import TaskSchema, TaskType, parse_tasks

log = logging.getLogger("turnwise.sidecar")

MANIFEST = "bundle.json"
CKPT_META = "turnwise.json"
# Ledger statuses: joined, or why a record was skipped (window_missing, turn_trimmed, turn_missing,
# invalid: an entry without dialogue_id/seq/task, deleted: trimmed out of the stream while pending).
JOINED = "joined"


class SidecarError(TurnwiseError):
    """The sidecar cannot do what it was configured to do (the message says what to set)."""


class Interrupted(Exception):
    """Raised inside a finetune when the sidecar was asked to stop."""


class SidecarSettings(BaseSettings):
    """``TURNWISE_SIDECAR_*`` settings; Redis, key prefix and bundle are the service's own variables."""

    model_config = SettingsConfigDict(env_prefix="TURNWISE_SIDECAR_", extra="ignore", populate_by_name=True)

    # --- shared with the service (same environment in the chart) ---------------------------------
    redis_url: str | None = Field(None, validation_alias="TURNWISE_REDIS_URL", description="Redis URL.")
    key_prefix: str = Field("tw:", validation_alias="TURNWISE_KEY_PREFIX", description="Redis key prefix.")
    bundle: Path | None = Field(
        None,
        validation_alias="TURNWISE_BUNDLE",
        description="The served bundle: a symlink (e.g. /models/current) to <root>/<version>/; new versions "
        "are written to <root> and the link is re-pointed.",
    )

    # --- consuming -------------------------------------------------------------------------------
    state_dir: Path | None = Field(None, description="Ledger + checkpoints (default <bundle root>/.sidecar).")
    work_dir: Path | None = Field(
        None, description="Scratch space for a finetune (the chart's /scratch); default <state_dir>/work."
    )
    group: str = Field("turnwise-trainer", description="Consumer group on the feedback stream.")
    consumer: str = Field("trainer", description="Consumer name (one trainer per release: keep it fixed).")
    batch: int = Field(200, ge=1, description="Stream entries read per XREADGROUP.")
    block_ms: int = Field(5000, ge=0, description="How long one XREADGROUP waits for new feedback.")
    claim_idle_s: float = Field(300.0, ge=0, description="Claim entries another consumer left pending this long.")
    redis_timeout_s: float = Field(5.0, gt=0, description="Redis connect timeout (reads allow block_ms more).")

    # --- when and how to finetune ----------------------------------------------------------------
    min_new_labels: int = Field(200, ge=1, description="New joined gold labels that trigger a finetune.")
    cooldown_s: float = Field(60.0, ge=0, description="Least seconds between two finetune attempts.")
    checkpoint: Path | None = Field(None, description="PyTorch checkpoint of the seed bundle (see module doc).")
    heldout: Path | None = Field(None, description="Held-out gold dialogues (JSONL); default: a feedback slice.")
    heldout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of feedback dialogues (by a hash of dialogue_id) held out."
    )
    min_heldout_labels: int = Field(30, ge=1, description="Fewer held-out labels than this: never publish.")
    max_regression: float = Field(0.0, ge=0, description="Publish if candidate >= serving - this (score in [0,1]).")
    max_train_examples: int = Field(50_000, ge=1, description="Most recent labelled turns used for training.")
    epochs: int = Field(3, ge=1, description="Finetuning epochs over the feedback.")
    batch_size: int = Field(16, ge=1)
    # Small steps: the serving model is already trained; a few hundred corrections must not erase it.
    lr: float = Field(2e-5, gt=0, description="Encoder learning rate.")
    head_lr: float = Field(1e-4, gt=0, description="Head learning rate (the heads are trained already).")
    max_steps: int | None = Field(500, ge=1, description="Cap on finetuning steps per attempt.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="As in turnwise train.")
    seed: int = 0
    variants: str = Field("", description="Variants to export (comma-separated); empty = the serving bundle's.")
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept besides the serving one.")


# --- the ledger ------------------------------------------------------------------------------------
@dataclass
class FeedbackRecord:
    stream_id: str
    dialogue_id: str
    seq: int
    task: str
    label: str
    model: str
    ts: float
    status: str
    context: list[dict[str, Any]] | None = None  # window turns up to and including seq (joined only)


SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of durable arrival: the attempt watermark
  stream_id TEXT NOT NULL UNIQUE,        -- dedupe: a re-delivered entry is ignored
  dialogue_id TEXT NOT NULL, seq INTEGER NOT NULL, task TEXT NOT NULL, label TEXT NOT NULL,
  model TEXT, ts REAL, status TEXT NOT NULL, context TEXT, received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL, finished_at REAL,
  watermark INTEGER NOT NULL, decision TEXT NOT NULL, parent_version TEXT, version TEXT,
  serving_score REAL, candidate_score REAL, n_train INTEGER, n_heldout INTEGER, detail TEXT
);
"""


class FeedbackLedger:
    """The durable record of consumed feedback (SQLite, rollback journal, synchronous=FULL).

    A rollback journal rather than WAL: WAL needs shared memory, which network volumes (the chart's
    ReadWriteMany PVC) may not provide; there is exactly one writer.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the consuming loop and a finetune thread, serialised by this lock.
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA_SQL)

    def add(self, records: Sequence[FeedbackRecord]) -> int:
        """Commit ``records`` in one transaction; entries already recorded are ignored. Returns new rows."""
        now = time.time()
        rows = [(r.stream_id, r.dialogue_id, r.seq, r.task, r.label, r.model, r.ts, r.status,
                 json.dumps(r.context, ensure_ascii=False) if r.context is not None else None, now) for r in records]
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                before = self.db.total_changes
                self.db.executemany(
                    "INSERT OR IGNORE INTO feedback (stream_id, dialogue_id, seq, task, label, model, ts, status, "
                    "context, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                added = self.db.total_changes - before
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return added

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def counts(self) -> dict[str, int]:
        return dict(self._all("SELECT status, COUNT(*) FROM feedback GROUP BY status"))

    def max_id(self) -> int:
        return int(self._all("SELECT COALESCE(MAX(id), 0) FROM feedback")[0][0])

    def watermark(self) -> int:
        """Feedback up to this id was already offered to a finetune attempt."""
        return int(self._all("SELECT COALESCE(MAX(watermark), 0) FROM attempts")[0][0])

    def new_labels(self) -> int:
        with self.lock:
            return int(self._all("SELECT COUNT(*) FROM feedback WHERE status = ? AND id > ?",
                                 (JOINED, self.watermark()))[0][0])

    def labelled(self, limit: int) -> list[FeedbackRecord]:
        """The most recent ``limit`` joined records, oldest first."""
        rows = self._all(
            "SELECT stream_id, dialogue_id, seq, task, label, model, ts, status, context FROM feedback "
            "WHERE status = ? ORDER BY id DESC LIMIT ?", (JOINED, limit))
        return [FeedbackRecord(stream_id=r[0], dialogue_id=r[1], seq=int(r[2]), task=r[3], label=r[4], model=r[5] or "",
                               ts=float(r[6] or 0.0), status=r[7], context=json.loads(r[8])) for r in reversed(rows)]

    def record_attempt(self, report: AttemptReport) -> None:
        self._all(
            "INSERT INTO attempts (started_at, finished_at, watermark, decision, parent_version, version, "
            "serving_score, candidate_score, n_train, n_heldout, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (report.started_at, report.finished_at, report.watermark, report.decision, report.parent_version,
             report.version, report.serving_score, report.candidate_score, report.n_train, report.n_heldout,
             report.detail))

    def last_attempt_at(self) -> float | None:
        (row,) = self._all("SELECT MAX(started_at) FROM attempts")
        return float(row[0]) if row[0] is not None else None

    def close(self) -> None:
        with self.lock:
            self.db.close()


# --- the consumer ----------------------------------------------------------------------------------
def join_window(window: Sequence[str | dict[str, Any]], seq: int) -> tuple[str, list[dict[str, Any]] | None]:
    """(status, context) for the turn ``seq`` in a dialogue's window (turns as JSON or dicts, oldest first)."""
    if not window:
        return "window_missing", None
    turns = [json.loads(t) if isinstance(t, str) else t for t in window]
    seqs = [int(t["seq"]) for t in turns]
    if seq < seqs[0]:
        return "turn_trimmed", None
    if seq not in seqs:
        return "turn_missing", None
    end = seqs.index(seq) + 1
    return JOINED, [{"seq": int(t["seq"]), "speaker": str(t["speaker"]), "text": str(t["text"])} for t in turns[:end]]


class FeedbackConsumer:
    """Reads ``<prefix>feedback`` in a consumer group; joins, records durably, then acks."""

    def __init__(self, client: redis.Redis, ledger: FeedbackLedger, *, prefix: str, group: str, consumer: str,
                 batch: int = 200, claim_idle_ms: int = 300_000):
        self.client = client
        self.ledger = ledger
        self.prefix = prefix
        self.stream = f"{prefix}feedback"
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.stats: dict[str, int] = {"read": 0, "stored": 0, "duplicates": 0}

    def turns_key(self, dialogue_id: str) -> str:
        return f"{self.prefix}{{{dialogue_id}}}:turns"

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def recover(self) -> int:
        """Process what this consumer read but never acked, then what others left pending too long."""
        n, cursor = 0, "0"
        while True:
            entries = self._read(cursor, block_ms=None)
            if not entries:
                break
            n += self._process(entries)
            cursor = entries[-1][0]
        start = "0-0"
        while True:
            reply = self.client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                           start_id=start, count=self.batch)
            start, claimed = reply[0], reply[1]
            deleted = list(reply[2]) if len(reply) > 2 else []
            if deleted:  # trimmed out of the stream while pending: nothing left to record
                self._ack(deleted)
            if claimed:
                n += self._process(claimed)
            if start in ("0-0", b"0-0"):
                break
        return n

    def poll(self, block_ms: int | None) -> int:
        """Read new entries (waiting up to ``block_ms``; None = don't wait) and process them."""
        return self._process(self._read(">", block_ms=block_ms))

    def drain(self) -> int:
        """Process everything available now, without waiting."""
        total = 0
        while (n := self.poll(None)) > 0:
            total += n
        return total

    def _read(self, cursor: str, block_ms: int | None) -> list[tuple[str, dict[str, str] | None]]:
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: cursor}, count=self.batch,
                                       block=block_ms)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            return [(i, f) for i, f in next(iter(reply.values()))[0]]
        return [(i, f) for i, f in reply[0][1]]

    def _process(self, entries: Sequence[tuple[str, dict[str, str] | None]]) -> int:
        if not entries:
            return 0
        parsed: list[FeedbackRecord] = [parse_entry(i, f) for i, f in entries]
        wanted = sorted({r.dialogue_id for r in parsed if r.status == "pending"})
        pipe = self.client.pipeline(transaction=False)
        for did in wanted:
            pipe.lrange(self.turns_key(did), 0, -1)
        windows = dict(zip(wanted, pipe.execute(), strict=True)) if wanted else {}
        for r in parsed:
            if r.status == "pending":
                r.status, r.context = join_window(windows[r.dialogue_id], r.seq)
        added = self.ledger.add(parsed)  # committed (fsync) before the ack below
        self._ack([r.stream_id for r in parsed])
        self.stats["read"] += len(parsed)
        self.stats["stored"] += added
        self.stats["duplicates"] += len(parsed) - added
        return len(parsed)

    def _ack(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.xack(self.stream, self.group, *ids)

    def pending(self) -> int:
        return int(self.client.xpending(self.stream, self.group)["pending"])


def parse_entry(stream_id: str, fields: dict[str, str] | None) -> FeedbackRecord:
    """A stream entry as a record: ``pending`` (to join with the Redis window), ``invalid`` or ``deleted``;
    joined at once when the entry carries its own ``window`` snapshot (see the module docstring)."""
    if fields is None or not fields:
        return FeedbackRecord(stream_id, "", -1, "", "", "", 0.0, "deleted")
    try:
        rec = FeedbackRecord(stream_id, str(fields["dialogue_id"]), int(fields["seq"]), str(fields["task"]),
                             str(fields.get("label", "")), str(fields.get("model", "")),
                             float(fields.get("ts", 0.0)), "pending")
        if fields.get("window"):
            rec.status, rec.context = join_window(json.loads(fields["window"]), rec.seq)
        return rec
    except (KeyError, ValueError, TypeError):
        return FeedbackRecord(stream_id, str(fields.get("dialogue_id", "")), -1, str(fields.get("task", "")),
                              str(fields.get("label", "")), str(fields.get("model", "")), 0.0, "invalid")


# --- data for a finetune ---------------------------------------------------------------------------
def is_heldout(dialogue_id: str, fraction: float) -> bool:
    """Deterministic dialogue-level split: a call's turns never straddle training and held-out."""
    return int(hashlib.sha256(dialogue_id.encode()).hexdigest()[:8], 16) % 10_000 < fraction * 10_000


def feedback_dialogues(records: Iterable[FeedbackRecord], schema: TaskSchema) -> tuple[list[Dialogue], int]:
    """One dialogue per labelled turn (its stored window, labels on the last turn); later labels win.

    Returns (dialogues, records skipped for a task or label the serving model does not have)."""
    labels: dict[tuple[str, int], dict[str, str | list[str]]] = {}
    contexts: dict[tuple[str, int], list[dict[str, Any]]] = {}
    skipped = 0
    for r in records:
        task = schema.tasks.get(r.task)
        value: str | list[str] = r.label
        if task is not None and task.type is TaskType.multilabel:
            value = [v for v in r.label.split(",") if v]
        names = value if isinstance(value, list) else [value]
        if task is None or r.context is None or any(v not in task.labels for v in names):
            skipped += 1
            continue
        key = (r.dialogue_id, r.seq)
        labels.setdefault(key, {})[r.task] = value
        contexts[key] = r.context
    out = []
    for key, lab in labels.items():
        ctx = contexts[key]
        turns = [Turn(speaker=t["speaker"], text=t["text"]) for t in ctx[:-1]]
        turns.append(Turn(speaker=ctx[-1]["speaker"], text=ctx[-1]["text"], labels=lab))
        out.append(Dialogue(dialogue_id=f"{key[0]}#{key[1]}", turns=turns, meta={"source": "feedback"}))
    return out, skipped


def count_labels(dialogues: Iterable[Dialogue]) -> int:
    return sum(len(t.labels) for d in dialogues for t in d.turns)


# --- publishing ------------------------------------------------------------------------------------
def should_publish(serving_score: float, candidate_score: float, max_regression: float = 0.0) -> bool:
    """The rule: publish only if the candidate is not worse than the serving model (within tolerance)."""
    return candidate_score >= serving_score - max_regression - 1e-12


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` (a name in the same directory) atomically: rename a new symlink over it."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp, target_is_directory=True)  # relative: valid wherever the volume is mounted
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def publish_bundle(candidate: Path, link: Path, version: str) -> Path:
    """Move a verified candidate to ``<root>/<version>/`` and re-point ``link`` at it (both atomic)."""
    if not link.is_symlink():
        raise SidecarError(f"{link} is not a symlink; the sidecar publishes by re-pointing a symlink")
    final = link.parent / version
    if final.exists() or final.is_symlink():
        raise SidecarError(f"bundle version {final} already exists; refusing to overwrite it")
    os.rename(candidate, final)  # same filesystem: the candidate was exported next to the versions
    _fsync_dir(link.parent)
    swap_link(link, version)
    return final


def new_version(root: Path, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    base = f"ft-{now:%Y%m%dT%H%M%SZ}"
    version, n = base, 1
    while (root / version).exists() or (root / f".candidate-{version}").exists():
        n += 1
        version = f"{base}-{n}"
    return version


# --- the sidecar -----------------------------------------------------------------------------------
@dataclass
class AttemptReport:
    decision: str  # published | rejected | skipped | failed | interrupted
    started_at: float
    watermark: int
    finished_at: float | None = None
    parent_version: str | None = None
    version: str | None = None
    serving_score: float | None = None
    candidate_score: float | None = None
    n_train: int | None = None
    n_heldout: int | None = None
    detail: str = ""


@dataclass
class CycleReport:
    consumed: int
    new_labels: int
    ledger: dict[str, int]
    attempt: AttemptReport | None = None
    serving_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sidecar:
    def __init__(self, settings: SidecarSettings, client: redis.Redis | None = None):
        if settings.bundle is None:
            raise SidecarError("no bundle: set TURNWISE_BUNDLE to the served bundle symlink (e.g. /models/current)")
        if not settings.redis_url and client is None:
            raise SidecarError("no Redis: set TURNWISE_REDIS_URL (the sidecar reads the service's feedback stream)")
        self.settings = settings
        self.link = Path(settings.bundle)
        if not self.link.is_symlink():
            raise SidecarError(f"TURNWISE_BUNDLE={self.link} must be a symlink to a version directory "
                               "(<root>/<version>/), so new versions can be published by re-pointing it")
        self.root = self.link.parent
        self.state_dir = Path(settings.state_dir) if settings.state_dir else self.root / ".sidecar"
        self.ckpt_root = self.state_dir / "checkpoints"
        self.ckpt_root.mkdir(parents=True, exist_ok=True)
        self.client = client or redis.Redis.from_url(
            str(settings.redis_url), decode_responses=True, socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=settings.redis_timeout_s + settings.block_ms / 1000.0)
        self.ledger = FeedbackLedger(self.state_dir / "feedback.sqlite3")
        self.consumer = FeedbackConsumer(self.client, self.ledger, prefix=settings.key_prefix, group=settings.group,
                                         consumer=settings.consumer, batch=settings.batch,
                                         claim_idle_ms=int(settings.claim_idle_s * 1000))
        self.stop_event = threading.Event()
        self._started = False
        self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        """Remove what a killed attempt left half-done: candidates, export staging, partial checkpoints."""
        leftovers = ((self.root, ".candidate-*"), (self.root, ".*.partial-*"), (self.ckpt_root, ".partial-*"))
        for where, pattern in leftovers:
            for path in where.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    log.info("removing leftover %s", path)
                    shutil.rmtree(path, ignore_errors=True)

    # --- loop --------------------------------------------------------------------------------------
    def start(self) -> int:
        """Create the group if needed and process whatever was left pending by an earlier run."""
        self.consumer.ensure_group()
        recovered = self.consumer.recover()
        self._started = True
        if recovered:
            log.info("recovered %d pending feedback entries", recovered)
        return recovered

    def cycle(self, block_ms: int | None = None, *, force: bool = False) -> CycleReport:
        """Consume what is there (waiting up to ``block_ms`` for the first entries), then finetune if due."""
        consumed = 0 if self._started else self.start()
        consumed += self.consumer.poll(block_ms) if block_ms else 0
        consumed += self.consumer.drain()
        new = self.ledger.new_labels()
        attempt = None
        if new >= self.settings.min_new_labels and (force or self._cooled_down()):
            attempt = self.attempt()
        return CycleReport(consumed=consumed, new_labels=self.ledger.new_labels(), ledger=self.ledger.counts(),
                           attempt=attempt, serving_version=self.serving_version())

    def run(self) -> None:
        """Consume and finetune until :meth:`stop`. Finetunes run on a worker thread while the loop keeps
        consuming (windows are joined soon after the feedback arrives); a Redis outage is waited out."""
        log.info("sidecar: stream %sfeedback, group %s, state %s, publishing under %s",
                 self.settings.key_prefix, self.settings.group, self.state_dir, self.root)
        worker: threading.Thread | None = None
        while not self.stop_event.is_set():
            try:
                if not self._started:
                    self.start()
                self.consumer.poll(max(self.settings.block_ms, 100))  # XREADGROUP BLOCK 0 would wait forever
                idle = worker is None or not worker.is_alive()
                if idle and self.ledger.new_labels() >= self.settings.min_new_labels and self._cooled_down():
                    worker = threading.Thread(target=self._attempt_logged, name="turnwise-finetune", daemon=True)
                    worker.start()
            except (redis.ConnectionError, redis.TimeoutError) as err:
                log.warning("Redis unavailable (%s); retrying", type(err).__name__)
                self._started = False
                self.stop_event.wait(2.0)
        if worker is not None:
            worker.join()  # the stop event interrupts a finetune at its next step

    def _attempt_logged(self) -> None:
        report = self.attempt()
        log.info("attempt: %s", json.dumps(asdict(report)))

    def stop(self) -> None:
        self.stop_event.set()

    def _cooled_down(self) -> bool:
        last = self.ledger.last_attempt_at()
        return last is None or time.time() - last >= self.settings.cooldown_s

    # --- the serving model -------------------------------------------------------------------------
    def serving_dir(self) -> Path:
        return Path(os.path.realpath(self.link))

    def serving_manifest(self) -> dict[str, Any]:
        return json.loads((self.serving_dir() / MANIFEST).read_text(encoding="utf-8"))

    def serving_version(self) -> str | None:
        try:
            return str(self.serving_manifest()["version"])
        except (OSError, ValueError, KeyError):
            return None

    def serving_checkpoint(self, manifest: dict[str, Any]) -> Path:
        """The PyTorch checkpoint behind the serving bundle (see the module docstring for the order)."""
        from trainer.checkpoint import read_meta

        version = str(manifest["version"])
        candidates: list[tuple[str, Path]] = [("state dir", self.ckpt_root / version)]
        if self.settings.checkpoint:
            candidates.append(("TURNWISE_SIDECAR_CHECKPOINT", Path(self.settings.checkpoint)))
        src = (manifest.get("source_checkpoint") or {}).get("path")
        if src:
            candidates.append(("bundle.json source_checkpoint", Path(src)))
        for origin, path in candidates:
            if not (path / CKPT_META).exists():
                continue
            meta = read_meta(path)
            if meta.get("tasks", {}).get("tasks") != manifest.get("tasks") or meta.get("window") != manifest.get(
                    "window"):
                raise SidecarError(f"checkpoint {path} ({origin}) does not match the serving bundle {version}: "
                                   "different tasks or window")
            return path
        raise SidecarError(f"no PyTorch checkpoint for the serving bundle version {version}: set "
                           "TURNWISE_SIDECAR_CHECKPOINT to the checkpoint it was exported from")

    # --- one finetune attempt ----------------------------------------------------------------------
    def attempt(self) -> AttemptReport:
        s = self.settings
        report = AttemptReport(decision="failed", started_at=time.time(), watermark=self.ledger.max_id())
        cand_bundle: Path | None = None
        cand_ckpt: Path | None = None
        try:
            manifest = self.serving_manifest()
            report.parent_version = str(manifest["version"])
            parent_ckpt = self.serving_checkpoint(manifest)
            schema = parse_tasks({"tasks": manifest["tasks"]})
            train_d, heldout_d, skipped = self.datasets(schema)
            report.n_train, report.n_heldout = count_labels(train_d), count_labels(heldout_d)
            if skipped:
                report.detail = f"{skipped} feedback records name a task or label the model does not have; "
            if not train_d:
                report.decision = "skipped"
                report.detail += "no training labels (all feedback fell in the held-out slice)"
                return report
            if report.n_heldout < s.min_heldout_labels:
                report.decision = "skipped"
                report.detail += f"held-out set has {report.n_heldout} labels (< min_heldout_labels " \
                                 f"{s.min_heldout_labels}): cannot show the candidate is not worse"
                return report
            version = report.version = new_version(self.root)
            cand_ckpt = self.ckpt_root / version
            self.finetune(parent_ckpt, train_d, cand_ckpt, manifest, report)
            cand_bundle = self.root / f".candidate-{version}"
            self.export(cand_ckpt, cand_bundle, manifest, version)
            report.serving_score = self.evaluate(self.serving_dir(), heldout_d)
            report.candidate_score = self.evaluate(cand_bundle, heldout_d)
            if should_publish(report.serving_score, report.candidate_score, s.max_regression):
                publish_bundle(cand_bundle, self.link, version)
                cand_bundle = None
                report.decision = "published"
                log.info("published %s (held-out %.4f vs serving %s %.4f)", version, report.candidate_score,
                         report.parent_version, report.serving_score)
                self.prune_checkpoints()
            else:
                report.decision = "rejected"
                report.detail += "candidate is worse than the serving model on the held-out set"
                log.info("rejected %s (held-out %.4f < serving %.4f - %.4f)", version, report.candidate_score,
                         report.serving_score, s.max_regression)
            return report
        except Interrupted:
            report.decision = "interrupted"
            return report
        except Exception as err:
            report.detail += f"{type(err).__name__}: {err}"
            log.exception("finetune attempt failed")
            return report
        finally:
            report.finished_at = time.time()
            if report.decision != "published":
                for path in (cand_bundle, cand_ckpt):
                    if path is not None:
                        shutil.rmtree(path, ignore_errors=True)
            if report.decision != "interrupted":  # an interrupted attempt is retried on the same labels
                self.ledger.record_attempt(report)

    def datasets(self, schema: TaskSchema) -> tuple[list[Dialogue], list[Dialogue], int]:
        """(training dialogues, held-out dialogues, skipped records) from the ledger (and the held-out file)."""
        s = self.settings
        records = self.ledger.labelled(s.max_train_examples)
        if s.heldout is not None:
            train, skipped = feedback_dialogues(records, schema)
            return train, read_jsonl(s.heldout), skipped
        train_r = [r for r in records if not is_heldout(r.dialogue_id, s.heldout_fraction)]
        held_r = [r for r in records if is_heldout(r.dialogue_id, s.heldout_fraction)]
        train, skipped_t = feedback_dialogues(train_r, schema)
        held, skipped_h = feedback_dialogues(held_r, schema)
        return train, held, skipped_t + skipped_h

    def finetune(self, parent: Path, dialogues: list[Dialogue], out: Path, manifest: dict[str, Any],
                 report: AttemptReport) -> None:
        """Finetune ``parent`` on the feedback into checkpoint ``out`` (no optimizer state kept)."""
        from trainer.checkpoint import load_checkpoint, read_meta
        from trainer.train import TrainConfig, train

        s = self.settings
        parent_meta = read_meta(parent)
        partial = out.with_name(f".partial-{out.name}")
        shutil.rmtree(partial, ignore_errors=True)
        work = Path(s.work_dir) if s.work_dir else self.state_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="backbone-", dir=work) as tmp:
            # The parent's own encoder as the backbone: the run never needs the original backbone (an HF
            # id or a path on the build machine); init_from then loads encoder and heads strictly.
            ckpt = load_checkpoint(parent)
            ckpt.model.encoder.save_pretrained(tmp)
            ckpt.tokenizer.save_pretrained(tmp)
            del ckpt
            # The serving bundle's window is a flat one (streaming bundles are not exported yet).
            cfg = TrainConfig(objective="none", backbone=tmp, init_from=str(parent), encoder="flat",
                              pooling=parent_meta.get("pooling", "cls"), max_turns=manifest["window"]["max_turns"],
                              max_tokens=manifest["window"]["max_tokens"], finetune_epochs=s.epochs,
                              batch_size=s.batch_size, finetune_lr=s.lr, head_lr=s.head_lr, max_steps=s.max_steps,
                              precision=s.precision, seed=s.seed, save_every=10**9)

            def progress(phase: str, step: int, total: int, info: dict[str, float]) -> None:
                if self.stop_event.is_set():
                    raise Interrupted()

            log.info("finetuning %s on %d labelled turns", parent.name, count_labels(dialogues))
            result = train(cfg, dialogues, parse_tasks(parent_meta["tasks"]), partial, progress=progress)
        shutil.rmtree(partial / "state", ignore_errors=True)  # optimizer state: not needed to finetune again
        meta_path = partial / CKPT_META
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["train_config"]["backbone"] = meta["backbone"] = parent_meta.get("backbone")
        meta.update({
            "name": manifest.get("name"), "version": report.version, "parent_version": report.parent_version,
            "feedback": {"labels": count_labels(dialogues), "watermark": report.watermark,
                         "steps": result.steps},
        })
        tmp_meta = meta_path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(tmp_meta, meta_path)
        os.rename(partial, out)

    def export(self, ckpt: Path, out: Path, manifest: dict[str, Any], version: str) -> Path:
        from export.cli import run_export

        variants = [v.strip() for v in self.settings.variants.split(",") if v.strip()] or list(manifest["variants"])
        return run_export(ckpt, out, variants, name=str(manifest.get("name") or "turnwise"), version=version)

    def evaluate(self, bundle: Path, dialogues: list[Dialogue]) -> float:
        from trainer.evaluate import evaluate_path

        return float(evaluate_path(bundle, dialogues)["score"])

    def prune_checkpoints(self) -> None:
        """Keep the serving version's checkpoint and the newest ``keep_checkpoints`` others."""
        serving = self.serving_version()
        ckpts = sorted((p for p in self.ckpt_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in ckpts if p.name != serving][self.settings.keep_checkpoints:]:
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        self.ledger.close()
        self.client.close()
