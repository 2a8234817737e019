"""Alert webhooks: a JSON POST per alert and URL, signed, retried with backoff, off the scoring path.

Each delivery carries ``X-Turnwise-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`` (with
``TURNWISE_WEBHOOK_SECRET``; no header without a secret), ``X-Turnwise-Event: alert`` and
``X-Turnwise-Delivery`` (one id for all attempts, so a receiver can drop a repeat). Attempts back off
exponentially (tenacity); a 2xx is delivered, a 4xx other than 408/429 is failed at once, anything else
is retried. Alerts wait in a bounded queue: when it is full an alert is dropped and counted, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt, wait_exponential

if TYPE_CHECKING:
    from service.metrics import Metrics

log = logging.getLogger("turnwise.service")
QUEUE = 1000
WORKERS = 2
SIGNATURE_HEADER = "X-Turnwise-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header value of ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class DeliveryFailed(Exception):
    def __init__(self, status: int | None, why: str, *, retry: bool):
        super().__init__(why)
        self.status, self.retry = status, retry


def _retryable(err: BaseException) -> bool:
    return isinstance(err, httpx.TransportError) or (isinstance(err, DeliveryFailed) and err.retry)


class WebhookSender:
    def __init__(self, urls: list[str], secret: str | None, metrics: Metrics, *, attempts: int = 5,
                 timeout_s: float = 5.0, backoff_s: float = 0.2, max_backoff_s: float = 10.0):
        self.urls, self.secret, self.metrics = list(urls), secret, metrics
        self.attempts, self.backoff_s, self.max_backoff_s = attempts, backoff_s, max_backoff_s
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue(QUEUE)
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def start(self) -> None:
        if not self.enabled:
            return
        self._client = httpx.AsyncClient(timeout=self.timeout_s)
        self._workers = [asyncio.create_task(self._work(), name=f"turnwise-webhook-{i}") for i in range(WORKERS)]

    def submit(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every URL; returns at once."""
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        delivery = uuid.uuid4().hex
        for url in self.urls:
            try:
                self._queue.put_nowait((url, body, delivery))
            except asyncio.QueueFull:
                self.metrics.webhook_deliveries.labels(outcome="dropped").inc()
                log.warning("webhook queue full: alert dropped for %s", url)

    async def _work(self) -> None:
        while True:
            url, body, delivery = await self._queue.get()
            try:
                await self._deliver(url, body, delivery)
                self.metrics.webhook_deliveries.labels(outcome="delivered").inc()
            except Exception as err:  # every attempt failed, or a status that retrying cannot fix
                self.metrics.webhook_deliveries.labels(outcome="failed").inc()
                log.warning("webhook delivery to %s failed: %s", url, err)
            finally:
                self._queue.task_done()

    async def _deliver(self, url: str, body: bytes, delivery: str) -> None:
        headers = {"Content-Type": "application/json", "X-Turnwise-Event": "alert", "X-Turnwise-Delivery": delivery}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        assert self._client is not None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception(_retryable),
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.metrics.webhook_deliveries.labels(outcome="retried").inc()
                    resp = await self._client.post(url, content=body, headers=headers)
                    if resp.status_code >= 300:
                        retry = resp.status_code >= 500 or resp.status_code in (408, 429)
                        raise DeliveryFailed(resp.status_code, f"HTTP {resp.status_code}", retry=retry)
        except RetryError as err:
            raise RuntimeError(f"{self.attempts} attempts: {err.last_attempt.exception()}") from None

    async def stop(self, grace_s: float = 2.0) -> None:
        """Deliver what is queued for up to ``grace_s``, then cancel."""
        if self._workers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), grace_s)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
