"""The LLM teacher's async fetch loop: concurrency, rate limit, the ``n`` probe, accounting and caching.

- Samples: one request with ``n`` = the missing samples where the server honours ``n``; when it refuses
  ``n`` > 1 (HTTP 400) or returns fewer choices (Ollama ignores ``n``), that is remembered
  (:attr:`Fetcher.n_supported`) and every sample becomes its own request with seed
  ``seed * SEED_STRIDE + sample_index``. Only the first ``n`` > 1 request probes; the others wait for its verdict.
- Retries (backoff, ``Retry-After``) are the SDK's own. A request that still fails is counted in
  ``failed_requests``; its votes abstain and it is not cached, so a rerun asks again.
- Bounded concurrency (an asyncio semaphore of ``concurrency``) and a request-rate limit
  (``aiolimiter.AsyncLimiter``, ``rate`` requests per second).
- Every answer goes to ``answers`` and to the response cache the moment it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from trainer.teachers.cache import CachedAnswer, ResponseCache
from trainer.teachers.llm_requests import LLMConfig, Unit
from trainer.teachers.scores import ProgressFn

log = logging.getLogger(__name__)

SEED_STRIDE = 100_003


@dataclass
class Usage:
    requests: int = 0
    failed_requests: int = 0
    n_refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    responses_without_usage: int = 0
    samples_cached: int = 0
    samples_fetched: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Fetcher:
    """Fetches the missing samples of a run's units into ``answers`` (and the cache), counting into ``usage``.

    ``n_supported`` is what is known about the server's ``n`` (None: not probed yet); read it back after
    :meth:`run`. The client is closed at the end when ``close_client`` is set.
    """

    def __init__(self, cfg: LLMConfig, client: Any, usage: Usage, answers: dict[str, CachedAnswer], *,
                 cache: ResponseCache | None = None, progress: ProgressFn | None = None,
                 n_supported: bool | None = None, close_client: bool = False):
        from aiolimiter import AsyncLimiter

        self.cfg = cfg
        self.client = client
        self.usage = usage
        self.answers = answers
        self.cache = cache
        self.progress = progress
        self.n_supported = n_supported
        self.close_client = close_client
        # asyncio primitives bind to the running loop on first use (run() is awaited inside asyncio.run)
        self._sem = asyncio.Semaphore(cfg.concurrency)
        self._limiter = AsyncLimiter(1, 1.0 / cfg.rate) if cfg.rate else None
        self._probe = asyncio.Lock()  # the first n>1 request finds out whether the server honours n

    async def run(self, todo: list[tuple[Unit, list[int]]]) -> None:
        """``todo``: each unit with the sample indices it still misses."""
        try:
            await asyncio.gather(*(self.fetch(u, miss) for u, miss in todo))
        finally:
            if self.close_client:
                await self.client.close()

    async def fetch(self, unit: Unit, missing: list[int]) -> None:
        rest = missing
        if len(missing) > 1 and self.n_supported is not False:
            probed = False
            if self.n_supported is None:
                async with self._probe:  # only the first request probes; the others wait for its verdict
                    if self.n_supported is None:
                        rest = await self._with_n(unit, missing)
                        probed = True
            if not probed and self.n_supported:
                rest = await self._with_n(unit, missing)
        await asyncio.gather(*(self._one(unit, k) for k in rest))

    # -- requests -----------------------------------------------------------------------------------

    def _seed(self, sample: int) -> int:
        return self.cfg.seed * SEED_STRIDE + sample

    async def _call(self, unit: Unit, n: int, seed: int) -> Any:
        async with self._sem:
            if self._limiter is not None:
                await self._limiter.acquire()
            self.usage.requests += 1  # logical requests; the SDK's retries are not counted here
            return await self.client.chat.completions.create(
                model=self.cfg.model, messages=unit.messages, temperature=self.cfg.temperature,
                top_p=self.cfg.top_p, max_tokens=unit.prompt.max_tokens, n=n, seed=seed,
            )

    async def _with_n(self, unit: Unit, missing: list[int]) -> list[int]:
        """Try one request with n = len(missing); returns the sample indices still missing."""
        import openai

        try:
            resp = await self._call(unit, len(missing), self._seed(missing[0]))
        except openai.BadRequestError as err:
            if self.n_supported:  # n worked before: this 400 is about something else
                self._failed(unit, err)
                return []
            log.info("server refused n=%d (%s); falling back to one request per sample", len(missing), err)
            self.n_supported = False
            self.usage.n_refused += 1
            return missing
        except (openai.APIError, ValueError) as err:
            self._failed(unit, err)
            return []
        choices = sorted(resp.choices or [], key=lambda c: c.index or 0)
        ptok, ctok = self._account(resp)
        self.n_supported = len(choices) >= len(missing)
        got = choices[: len(missing)]
        for j, (k, ch) in enumerate(zip(missing, got, strict=False)):
            # Prompt tokens are billed once per request: book them on its first sample.
            share = ctok // len(got) + (ctok % len(got) if j == 0 else 0)
            self._store(unit, k, ch.message.content if ch.message else None, ch.finish_reason,
                        ptok if j == 0 else 0, share)
        return missing[len(got) :]

    async def _one(self, unit: Unit, k: int) -> None:
        import openai

        try:
            resp = await self._call(unit, 1, self._seed(k))
        except (openai.APIError, ValueError) as err:
            self._failed(unit, err)
            return
        ptok, ctok = self._account(resp)
        ch = (resp.choices or [None])[0]
        self._store(unit, k, ch.message.content if ch is not None and ch.message else None,
                    ch.finish_reason if ch is not None else None, ptok, ctok)

    # -- bookkeeping --------------------------------------------------------------------------------

    def _store(self, unit: Unit, k: int, content: str | None, finish: str | None, ptok: int, ctok: int) -> None:
        self.answers[unit.keys[k]] = CachedAnswer(content, finish, ptok, ctok)
        self.usage.samples_fetched += 1
        if self.cache is not None:
            self.cache.put(unit.keys[k], model=self.cfg.model, endpoint=self.cfg.endpoint, prompt_id=unit.prompt.id,
                           sample=k, content=content, finish_reason=finish, prompt_tokens=ptok,
                           completion_tokens=ctok)
        if self.progress is not None:
            self.progress(1)

    def _account(self, resp: Any) -> tuple[int, int]:
        usage = getattr(resp, "usage", None)
        if usage is None:
            self.usage.responses_without_usage += 1
            return 0, 0
        ptok, ctok = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
        self.usage.prompt_tokens += ptok
        self.usage.completion_tokens += ctok
        return ptok, ctok

    def _failed(self, unit: Unit, err: Exception) -> None:
        self.usage.failed_requests += 1
        log.warning("request for prompt %s failed after retries: %s", unit.prompt.id, err)
