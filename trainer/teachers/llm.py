"""The LLM teacher: an ensemble of prompts x samples against any OpenAI-compatible chat-completions endpoint.

N votes per turn (``--samples N``) are split over the task's prompts in the bank (N=30 with 3 prompts:
10 samples each; prompt p gets ``N // P`` plus one of the remainder). A ``turn`` prompt is one request
per turn (the turn's window); a ``dialogue`` prompt (``lines_json``) is one request per dialogue that
votes on every turn at once.

Transport (the ``openai`` SDK with ``base_url``; the key comes from ``$OPENAI_API_KEY`` or the env var
named by ``api_key_env``; local servers accept any key):
- Samples: one request with ``n`` = the missing samples where the server honours ``n``; when it refuses
  ``n`` > 1 (HTTP 400) or returns fewer choices (Ollama ignores ``n``), the teacher remembers that and
  makes one request per sample with seed ``seed * 100003 + sample_index`` instead.
- Retries with exponential backoff and jitter on 408/409/429/5xx, connection errors and timeouts are the
  SDK's own (``max_retries``; it honours ``Retry-After``). A request that still fails is counted in
  ``failed_requests``; its votes abstain and it is not cached, so a rerun asks again.
- Bounded concurrency (an asyncio semaphore of ``concurrency``) and a request-rate limit
  (``aiolimiter.AsyncLimiter``, ``rate`` requests per second).
- Every answer goes to the SQLite cache (:mod:`trainer.teachers.cache`) the moment it arrives.
- Usage: token counts from each response's ``usage``; cost from a price table (USD per million tokens).
- ``plan()`` counts requests, cache hits, tokens and cost without sending anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainer.teachers.cache import CachedAnswer, ResponseCache, cache_key
from trainer.teachers.prompts import (
    PromptBank,
    PromptTemplate,
    TaskPrompts,
    parse_lines_json,
    parse_turn_answer,
    render_dialogue,
    render_turn,
)
from trainer.teachers.scores import ABSTAIN, ProgressFn, ScoreRecord, make_record
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError, TurnwiseError
from turnwise.tasks import TaskSchema, TaskType
from turnwise.window import WindowConfig

log = logging.getLogger(__name__)

SEED_STRIDE = 100_003
CHARS_PER_TOKEN = 4.0  # rough planning estimate for English text; the bill uses the server's usage counts


class TeacherError(TurnwiseError):
    """The teacher could not produce scores (e.g. every request to the endpoint failed)."""


# --------------------------------------------------------------------------------------------------
# Prices


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


def load_price_table(path: str | Path | None) -> dict[str, Price]:
    """YAML or JSON: ``{model: {input: USD per 1M prompt tokens, output: USD per 1M completion tokens}}``;
    the key ``"*"`` prices every model not listed."""
    if path is None:
        return {}
    p = Path(path)
    if not p.exists():
        raise DataError("price table not found", path=str(p))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise DataError(f"invalid YAML/JSON: {err}", path=str(p)) from None
    table = {}
    if not isinstance(raw, dict):
        raise DataError("a price table maps model names to {input, output}", path=str(p))
    for model, v in raw.items():
        try:
            table[str(model)] = Price(float(v["input"]), float(v["output"]))
        except (TypeError, KeyError, ValueError):
            raise DataError(f"model '{model}': expected {{input: float, output: float}} (USD per 1M tokens)",
                            path=str(p)) from None
    return table


def price_for(table: dict[str, Price], model: str) -> Price | None:
    return table.get(model, table.get("*"))


# --------------------------------------------------------------------------------------------------
# Work units


def split_samples(n: int, parts: int) -> list[int]:
    """N votes over P prompts: ``N // P`` each, the remainder to the first prompts (N=1 -> first prompt only)."""
    return [n // parts + (1 if p < n % parts else 0) for p in range(parts)]


@dataclass
class Target:
    record: int  # index into the records being built
    turn: int | None  # turn index, or None for a dialogue-level prompt
    column: int  # first vote column of this prompt


@dataclass
class Unit:
    """One distinct prompt text; several (dialogue, turn) targets may share it."""

    prompt: PromptTemplate
    task_prompts: TaskPrompts
    messages: list[dict[str, str]]
    samples: int
    n_lines: int
    targets: list[Target] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


@dataclass
class RecordPlan:
    dialogue: Dialogue
    task: str
    task_type: TaskType
    labels: list[str]
    prompt_ids: list[str]


@dataclass
class LLMConfig:
    model: str
    endpoint: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    concurrency: int = 4
    rate: float | None = None  # requests per second; None = only the concurrency bound
    max_retries: int = 6  # SDK backoff: 0.5 s doubling to 8 s, so 6 retries ride out ~30 s of 429s
    timeout: float = 120.0
    n_mode: str = "auto"  # auto: try n, fall back to seeds; never: always one request per sample
    window: WindowConfig = field(default_factory=WindowConfig)

    def __post_init__(self) -> None:
        if self.n_mode not in ("auto", "never"):
            raise ValueError("n_mode must be 'auto' or 'never'")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0 requests per second")


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


class LLMTeacher:
    kind = "llm"

    def __init__(self, config: LLMConfig, bank: PromptBank, cache: ResponseCache | None = None,
                 price_table: dict[str, Price] | None = None, client: Any = None):
        self.cfg = config
        self.bank = bank
        self.cache = cache
        self.prices = price_table or {}
        self._client = client
        self._n_supported: bool | None = None if config.n_mode == "auto" else False
        self.usage = Usage()

    # -- building the work ------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        return {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p, "seed": self.cfg.seed}

    def _key_params(self, prompt: PromptTemplate) -> dict[str, Any]:
        return {**self.params, "max_tokens": prompt.max_tokens}

    def build(self, dialogues: Sequence[Dialogue], schema: TaskSchema,
              samples: int) -> tuple[list[RecordPlan], list[Unit]]:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        plans: list[RecordPlan] = []
        units: dict[str, Unit] = {}
        for name in schema.names():
            task = schema[name]
            tp = self.bank.for_task(name, task)
            # Bank labels may be listed in another order than the schema's: votes use the schema's order.
            if tp.labels != task.labels:
                tp = tp.model_copy(update={"labels": list(task.labels)})
            per_prompt = split_samples(samples, len(tp.prompts))
            active = [(p, s) for p, s in zip(tp.prompts, per_prompt, strict=True) if s > 0]
            for d in dialogues:
                if not d.turns:
                    continue
                rec = len(plans)
                plans.append(RecordPlan(d, name, task.type, list(task.labels), [p.id for p, _ in active]))
                column = 0
                for prompt, s in active:
                    jobs: list[tuple[int | None, list[dict[str, str]]]]
                    if prompt.unit == "dialogue":
                        jobs = [(None, render_dialogue(tp, prompt, d.turns))]
                    else:
                        jobs = [(i, render_turn(tp, prompt, d.turns, i, self.cfg.window)) for i in range(len(d.turns))]
                    for turn, messages in jobs:
                        base = cache_key(self.cfg.model, messages, self._key_params(prompt), -1)
                        unit = units.get(base)
                        if unit is None:
                            unit = Unit(prompt, tp, messages, s, len(d.turns))
                            unit.keys = [cache_key(self.cfg.model, messages, self._key_params(prompt), k)
                                         for k in range(s)]
                            units[base] = unit
                        unit.targets.append(Target(rec, turn, column))
                    column += s
        return plans, list(units.values())

    # -- plan ---------------------------------------------------------------------------------------

    def plan(self, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int) -> dict[str, Any]:
        """What a run would cost, without a single request: calls, cache hits, tokens, dollars."""
        plans, units = self.build(dialogues, schema, samples)
        cached = self.cache.get_many(k for u in units for k in u.keys) if self.cache else {}
        calls_n = calls_seed = 0
        ptok_n = ptok_seed = ctok_max = 0
        to_fetch = 0
        per_prompt: dict[str, dict[str, int]] = {}
        for u in units:
            missing = sum(1 for k in u.keys if k not in cached)
            to_fetch += missing
            stats = per_prompt.setdefault(u.prompt.id, {"distinct_prompts": 0, "samples_to_fetch": 0})
            stats["distinct_prompts"] += 1
            stats["samples_to_fetch"] += missing
            if not missing:
                continue
            ptok = math.ceil(sum(len(m["content"]) for m in u.messages) / CHARS_PER_TOKEN) + 4 * len(u.messages)
            calls_n += 1
            calls_seed += missing
            ptok_n += ptok
            ptok_seed += ptok * missing
            ctok_max += u.prompt.max_tokens * missing
        price = price_for(self.prices, self.cfg.model)
        total = sum(u.samples for u in units)
        out: dict[str, Any] = {
            "teacher": "llm", "model": self.cfg.model, "endpoint": self.cfg.endpoint,
            "dialogues": len({p.dialogue.dialogue_id for p in plans}), "records": len(plans),
            "turns": sum(len(d.turns) for d in {p.dialogue.dialogue_id: p.dialogue for p in plans}.values()),
            "samples_per_turn": samples, "distinct_prompts": len(units), "samples_total": total,
            "samples_cached": total - to_fetch, "samples_to_fetch": to_fetch,
            "calls_if_n_supported": calls_n, "calls_if_n_unsupported": calls_seed,
            "est_prompt_tokens_if_n_supported": ptok_n, "est_prompt_tokens_if_n_unsupported": ptok_seed,
            "max_completion_tokens": ctok_max, "per_prompt": per_prompt,
            "note": f"token estimate: characters / {CHARS_PER_TOKEN:g}; completion tokens are an upper bound "
                    "(max_tokens)",
        }
        if price is None:
            out["est_cost_usd"] = None
            out["price"] = f"no price for model '{self.cfg.model}' (pass a price table)"
        else:
            out["est_cost_usd"] = {
                "if_n_supported_max": round(price.cost(ptok_n, ctok_max), 6),
                "if_n_unsupported_max": round(price.cost(ptok_seed, ctok_max), 6),
            }
        return out

    # -- labelling ----------------------------------------------------------------------------------

    def label(self, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int,
              progress: ProgressFn | None = None) -> list[ScoreRecord]:
        plans, units = self.build(dialogues, schema, samples)
        self.usage = Usage()  # per run: summary() reports this run only
        answers: dict[str, CachedAnswer] = self.cache.get_many(k for u in units for k in u.keys) if self.cache else {}
        self.usage.samples_cached = sum(1 for u in units for k in u.keys if k in answers)
        for a in answers.values():
            self.usage.cached_prompt_tokens += a.prompt_tokens
            self.usage.cached_completion_tokens += a.completion_tokens
        todo = [(u, [k for k in range(u.samples) if u.keys[k] not in answers]) for u in units]
        todo = [(u, miss) for u, miss in todo if miss]
        if progress is not None:
            progress(self.usage.samples_cached, total=sum(u.samples for u in units))
        if todo:
            asyncio.run(self._fetch_all(todo, answers, progress))
            if self.usage.samples_fetched == 0 and self.usage.failed_requests > 0:
                raise TeacherError(f"every request to {self.cfg.endpoint or 'the endpoint'} failed "
                                   f"({self.usage.failed_requests} failures); see the log for the errors")
        return self._assemble(plans, units, answers, samples)

    def _assemble(self, plans: list[RecordPlan], units: list[Unit], answers: dict[str, CachedAnswer],
                  samples: int) -> list[ScoreRecord]:
        votes = [np.full((len(p.dialogue.turns), samples), ABSTAIN, dtype=np.int64) for p in plans]
        for u in units:
            for k, key in enumerate(u.keys):
                ans = answers.get(key)
                text = ans.content if ans is not None else None
                for t in u.targets:
                    labels = plans[t.record].labels
                    ttype = plans[t.record].task_type
                    if t.turn is None:
                        col = parse_lines_json(text, labels, u.n_lines, ttype is TaskType.multilabel,
                                               u.prompt.default_label)
                        votes[t.record][:, t.column + k] = col
                    else:
                        votes[t.record][t.turn, t.column + k] = parse_turn_answer(u.prompt, text, labels, ttype)
        teacher_params = {**self.params, "samples": samples, "endpoint": self.cfg.endpoint,
                          "window": self.cfg.window.to_dict()}
        return [
            make_record(p.dialogue.dialogue_id, p.task, p.labels, p.task_type, v,
                        {"kind": self.kind, "model": self.cfg.model, "prompts": p.prompt_ids, "params": teacher_params})
            for p, v in zip(plans, votes, strict=True)
        ]

    # -- transport ----------------------------------------------------------------------------------

    def _make_client(self) -> Any:
        import openai

        key = os.environ.get(self.cfg.api_key_env) or ("not-needed" if self.cfg.endpoint else None)
        return openai.AsyncOpenAI(base_url=self.cfg.endpoint, api_key=key, max_retries=self.cfg.max_retries,
                                  timeout=self.cfg.timeout)

    async def _fetch_all(self, todo: list[tuple[Unit, list[int]]], answers: dict[str, CachedAnswer],
                         progress: ProgressFn | None) -> None:
        from aiolimiter import AsyncLimiter

        client = self._client or self._make_client()
        sem = asyncio.Semaphore(self.cfg.concurrency)
        limiter = AsyncLimiter(1, 1.0 / self.cfg.rate) if self.cfg.rate else None
        probe = asyncio.Lock()  # the first n>1 request finds out whether the server honours n

        async def call(unit: Unit, n: int, seed: int) -> Any:
            async with sem:
                if limiter is not None:
                    await limiter.acquire()
                self.usage.requests += 1  # logical requests; the SDK's retries are not counted here
                return await client.chat.completions.create(
                    model=self.cfg.model, messages=unit.messages, temperature=self.cfg.temperature,
                    top_p=self.cfg.top_p, max_tokens=unit.prompt.max_tokens, n=n, seed=seed,
                )

        def store(unit: Unit, k: int, content: str | None, finish: str | None, ptok: int, ctok: int) -> None:
            ans = CachedAnswer(content, finish, ptok, ctok)
            answers[unit.keys[k]] = ans
            self.usage.samples_fetched += 1
            if self.cache is not None:
                self.cache.put(unit.keys[k], model=self.cfg.model, endpoint=self.cfg.endpoint,
                               prompt_id=unit.prompt.id, sample=k, content=content, finish_reason=finish,
                               prompt_tokens=ptok, completion_tokens=ctok)
            if progress is not None:
                progress(1)

        def account(resp: Any) -> tuple[int, int]:
            usage = getattr(resp, "usage", None)
            if usage is None:
                self.usage.responses_without_usage += 1
                return 0, 0
            ptok, ctok = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
            self.usage.prompt_tokens += ptok
            self.usage.completion_tokens += ctok
            return ptok, ctok

        def failed(unit: Unit, err: Exception) -> None:
            self.usage.failed_requests += 1
            log.warning("request for prompt %s failed after retries: %s", unit.prompt.id, err)

        async def with_n(unit: Unit, missing: list[int]) -> list[int]:
            """Try one request with n = len(missing); returns the sample indices still missing."""
            import openai

            try:
                resp = await call(unit, len(missing), self.cfg.seed * SEED_STRIDE + missing[0])
            except openai.BadRequestError as err:
                if self._n_supported:  # n worked before: this 400 is about something else
                    failed(unit, err)
                    return []
                log.info("server refused n=%d (%s); falling back to one request per sample", len(missing), err)
                self._n_supported = False
                self.usage.n_refused += 1
                return missing
            except (openai.APIError, ValueError) as err:
                failed(unit, err)
                return []
            choices = sorted(resp.choices or [], key=lambda c: c.index or 0)
            ptok, ctok = account(resp)
            if len(choices) < len(missing):
                self._n_supported = False
            else:
                self._n_supported = True
            got = choices[: len(missing)]
            for j, (k, ch) in enumerate(zip(missing, got, strict=False)):
                # Prompt tokens are billed once per request: book them on its first sample.
                share = ctok // len(got) + (ctok % len(got) if j == 0 else 0)
                store(unit, k, ch.message.content if ch.message else None, ch.finish_reason,
                      ptok if j == 0 else 0, share)
            return missing[len(got) :]

        async def one(unit: Unit, k: int) -> None:
            import openai

            try:
                resp = await call(unit, 1, self.cfg.seed * SEED_STRIDE + k)
            except (openai.APIError, ValueError) as err:
                failed(unit, err)
                return
            ptok, ctok = account(resp)
            ch = (resp.choices or [None])[0]
            store(unit, k, ch.message.content if ch is not None and ch.message else None,
                  ch.finish_reason if ch is not None else None, ptok, ctok)

        async def fetch(unit: Unit, missing: list[int]) -> None:
            rest = missing
            if len(missing) > 1 and self._n_supported is not False:
                probed = False
                if self._n_supported is None:
                    async with probe:  # only the first request probes; the others wait for its verdict
                        if self._n_supported is None:
                            rest = await with_n(unit, missing)
                            probed = True
                if not probed and self._n_supported:
                    rest = await with_n(unit, missing)
            await asyncio.gather(*(one(unit, k) for k in rest))

        try:
            await asyncio.gather(*(fetch(u, miss) for u, miss in todo))
        finally:
            if self._client is None:
                await client.close()

    def summary(self) -> dict[str, Any]:
        u = self.usage.to_dict()
        price = price_for(self.prices, self.cfg.model)
        out: dict[str, Any] = {"usage": u, "n_supported": self._n_supported}
        if price is None:
            out["cost_usd"] = None
            out["price"] = f"no price for model '{self.cfg.model}' (pass a price table)"
        else:
            out["cost_usd"] = round(price.cost(u["prompt_tokens"], u["completion_tokens"]), 6)
            saved = price.cost(u["cached_prompt_tokens"], u["cached_completion_tokens"])
            out["cost_saved_by_cache_usd"] = round(saved, 6)
        return out

