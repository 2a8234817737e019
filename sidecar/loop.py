"""The sidecar loop: consume feedback, and when enough new labels arrived, one finetune attempt.

**Training.** An attempt starts once ``min_new_labels`` joined labels arrived since the last attempt
(and ``cooldown_s`` passed). It finetunes the serving checkpoint on the feedback
(:mod:`sidecar.data`), exports a candidate, scores serving and candidate bundles on the held-out set
and publishes the candidate only if it is not worse (:mod:`sidecar.publish`). A finetune runs on a
worker thread while the loop keeps consuming; SIGTERM abandons it at the next step and nothing is
published; half-written candidates are removed at the next start.

**State.** The ledger (``feedback.sqlite3``) and the checkpoints of published versions
(``checkpoints/<version>/``) live in the state dir, which defaults to ``<bundle root>/.sidecar`` --
on the bundle volume, so they survive restarts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from sidecar.consumer import FeedbackConsumer
from sidecar.data import count_labels, datasets
from sidecar.errors import Interrupted, SidecarError
from sidecar.ledger import AttemptReport, FeedbackLedger
from sidecar.publish import (
    evaluate_bundle,
    export_candidate,
    finetune_checkpoint,
    new_version,
    prune_checkpoints,
    publish_bundle,
    resolve_checkpoint,
    should_publish,
)
from sidecar.settings import SidecarSettings
from turnwise.dialogue import Dialogue
from turnwise.names import BUNDLE_MANIFEST, feedback_stream
from turnwise.tasks import TaskSchema, parse_tasks

log = logging.getLogger("turnwise.sidecar")


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
        log.info("sidecar: stream %s, group %s, state %s, publishing under %s",
                 feedback_stream(self.settings.key_prefix), self.settings.group, self.state_dir, self.root)
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
        return json.loads((self.serving_dir() / BUNDLE_MANIFEST).read_text(encoding="utf-8"))

    def serving_version(self) -> str | None:
        try:
            return str(self.serving_manifest()["version"])
        except (OSError, ValueError, KeyError):
            return None

    def serving_checkpoint(self, manifest: dict[str, Any]) -> Path:
        """The PyTorch checkpoint behind the serving bundle (see :func:`sidecar.publish.resolve_checkpoint`)."""
        return resolve_checkpoint(manifest, own=self.ckpt_root, setting=self.settings.checkpoint)

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

    # The steps of an attempt, as methods so a test (or a subclass) can replace one of them.
    def datasets(self, schema: TaskSchema) -> tuple[list[Dialogue], list[Dialogue], int]:
        """(training dialogues, held-out dialogues, skipped records) from the ledger (and the held-out file)."""
        return datasets(self.ledger, self.settings, schema)

    def finetune(self, parent: Path, dialogues: list[Dialogue], out: Path, manifest: dict[str, Any],
                 report: AttemptReport) -> None:
        """Finetune ``parent`` on the feedback into checkpoint ``out`` (no optimizer state kept)."""
        work = Path(self.settings.work_dir) if self.settings.work_dir else self.state_dir / "work"
        finetune_checkpoint(parent, dialogues, out, manifest, report, self.settings, work=work,
                            should_stop=self.stop_event.is_set)

    def export(self, ckpt: Path, out: Path, manifest: dict[str, Any], version: str) -> Path:
        return export_candidate(ckpt, out, manifest, version, self.settings.variants)

    def evaluate(self, bundle: Path, dialogues: list[Dialogue]) -> float:
        return evaluate_bundle(bundle, dialogues)

    def prune_checkpoints(self) -> None:
        """Keep the serving version's checkpoint and the newest ``keep_checkpoints`` others."""
        prune_checkpoints(self.ckpt_root, self.serving_version(), self.settings.keep_checkpoints)

    def close(self) -> None:
        self.ledger.close()
        self.client.close()
