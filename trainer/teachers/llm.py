"""The LLM teacher: an ensemble of prompts x samples against any OpenAI-compatible chat-completions endpoint.

N votes per turn (``--samples N``) are split over the task's prompts in the bank (N=30 with 3 prompts:
10 samples each; prompt p gets ``N // P`` plus one of the remainder). A ``turn`` prompt is one request
per turn (the turn's window); a ``dialogue`` prompt (``lines_json``) is one request per dialogue that
votes on every turn at once.

A run has three parts, one module each:

- :mod:`trainer.teachers.llm_requests` -- the configuration and the request planner: the distinct prompt
  texts (units) a run needs and each sample's cache key.
- :mod:`trainer.teachers.llm_fetch` -- the async fetch loop: ``n`` or one request per sample (seeded),
  the SDK's retries, bounded concurrency, a request-rate limit, token accounting, every answer cached as it
  arrives (:mod:`trainer.teachers.cache`).
- this module -- the teacher: cache lookup, fetch, parsing the answers into votes
  (:mod:`trainer.teachers.parsers`), the records; ``plan()`` counts requests, cache hits, tokens and cost
  without sending anything; prices (USD per million tokens) for the bill.

Transport: the ``openai`` SDK with ``base_url``; the key comes from ``$OPENAI_API_KEY`` or the env var
named by ``api_key_env``; local servers accept any key.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainer.teachers.cache import CachedAnswer, ResponseCache
from trainer.teachers.llm_fetch import SEED_STRIDE, Fetcher, Usage
from trainer.teachers.llm_requests import LLMConfig, RecordPlan, RequestPlanner, Unit, split_samples
from trainer.teachers.parsers import parse_lines_json, parse_turn_answer
from trainer.teachers.prompts import PromptBank
from trainer.teachers.scores import ABSTAIN, ProgressFn, ScoreRecord, make_record
from turnwise.dialogue import Dialogue
from turnwise.errors import DataError, TurnwiseError
from turnwise.tasks import TaskSchema, TaskType

__all__ = ["SEED_STRIDE", "LLMConfig", "LLMTeacher", "Price", "TeacherError", "Usage", "load_price_table",
           "price_for", "split_samples"]

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
# Planning estimate


@dataclass
class RequestEstimate:
    """Requests and tokens of the samples not in the cache, if the server honours ``n`` and if it does not."""

    to_fetch: int = 0
    calls_n: int = 0
    calls_seed: int = 0
    ptok_n: int = 0
    ptok_seed: int = 0
    ctok_max: int = 0
    per_prompt: dict[str, dict[str, int]] = field(default_factory=dict)


def estimate_requests(units: Sequence[Unit], cached: Container[str]) -> RequestEstimate:
    est = RequestEstimate()
    for u in units:
        missing = sum(1 for k in u.keys if k not in cached)
        est.to_fetch += missing
        stats = est.per_prompt.setdefault(u.prompt.id, {"distinct_prompts": 0, "samples_to_fetch": 0})
        stats["distinct_prompts"] += 1
        stats["samples_to_fetch"] += missing
        if not missing:
            continue
        ptok = math.ceil(sum(len(m["content"]) for m in u.messages) / CHARS_PER_TOKEN) + 4 * len(u.messages)
        est.calls_n += 1
        est.calls_seed += missing
        est.ptok_n += ptok
        est.ptok_seed += ptok * missing
        est.ctok_max += u.prompt.max_tokens * missing
    return est


# --------------------------------------------------------------------------------------------------
# The teacher


class LLMTeacher:
    kind = "llm"

    def __init__(self, config: LLMConfig, bank: PromptBank, cache: ResponseCache | None = None,
                 price_table: dict[str, Price] | None = None, client: Any = None):
        self.cfg = config
        self.bank = bank
        self.cache = cache
        self.prices = price_table or {}
        self.planner = RequestPlanner(config, bank)
        self._client = client
        self._n_supported: bool | None = None if config.n_mode == "auto" else False
        self.usage = Usage()

    @property
    def params(self) -> dict[str, Any]:
        return self.cfg.params

    def build(self, dialogues: Sequence[Dialogue], schema: TaskSchema,
              samples: int) -> tuple[list[RecordPlan], list[Unit]]:
        return self.planner.build(dialogues, schema, samples)

    # -- plan ---------------------------------------------------------------------------------------

    def plan(self, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int) -> dict[str, Any]:
        """What a run would cost, without a single request: calls, cache hits, tokens, dollars."""
        plans, units = self.build(dialogues, schema, samples)
        cached = self.cache.get_many(k for u in units for k in u.keys) if self.cache else {}
        est = estimate_requests(units, cached)
        price = price_for(self.prices, self.cfg.model)
        total = sum(u.samples for u in units)
        out: dict[str, Any] = {
            "teacher": "llm", "model": self.cfg.model, "endpoint": self.cfg.endpoint,
            "dialogues": len({p.dialogue.dialogue_id for p in plans}), "records": len(plans),
            "turns": sum(len(d.turns) for d in {p.dialogue.dialogue_id: p.dialogue for p in plans}.values()),
            "samples_per_turn": samples, "distinct_prompts": len(units), "samples_total": total,
            "samples_cached": total - est.to_fetch, "samples_to_fetch": est.to_fetch,
            "calls_if_n_supported": est.calls_n, "calls_if_n_unsupported": est.calls_seed,
            "est_prompt_tokens_if_n_supported": est.ptok_n, "est_prompt_tokens_if_n_unsupported": est.ptok_seed,
            "max_completion_tokens": est.ctok_max, "per_prompt": est.per_prompt,
            "note": f"token estimate: characters / {CHARS_PER_TOKEN:g}; completion tokens are an upper bound "
                    "(max_tokens)",
        }
        if price is None:
            out["est_cost_usd"] = None
            out["price"] = f"no price for model '{self.cfg.model}' (pass a price table)"
        else:
            out["est_cost_usd"] = {
                "if_n_supported_max": round(price.cost(est.ptok_n, est.ctok_max), 6),
                "if_n_unsupported_max": round(price.cost(est.ptok_seed, est.ctok_max), 6),
            }
        return out

    # -- labelling ----------------------------------------------------------------------------------

    def label(self, dialogues: Sequence[Dialogue], schema: TaskSchema, samples: int,
              progress: ProgressFn | None = None) -> list[ScoreRecord]:
        plans, units = self.build(dialogues, schema, samples)
        self.usage = Usage()  # per run: summary() reports this run only
        answers = self._cached_answers(units)
        todo = [(u, [k for k in range(u.samples) if u.keys[k] not in answers]) for u in units]
        todo = [(u, miss) for u, miss in todo if miss]
        if progress is not None:
            progress(self.usage.samples_cached, total=sum(u.samples for u in units))
        if todo:
            self.probe()
            self._fetch(todo, answers, progress)
            if self.usage.samples_fetched == 0 and self.usage.failed_requests > 0:
                raise TeacherError(f"every request to {self.cfg.endpoint or 'the endpoint'} failed "
                                   f"({self.usage.failed_requests} failures); see the log for the errors")
        return self._assemble(plans, units, answers, samples)

    def _cached_answers(self, units: list[Unit]) -> dict[str, CachedAnswer]:
        """The answers the cache already holds; counted (samples, tokens) into this run's usage."""
        answers = self.cache.get_many(k for u in units for k in u.keys) if self.cache else {}
        self.usage.samples_cached = sum(1 for u in units for k in u.keys if k in answers)
        for a in answers.values():
            self.usage.cached_prompt_tokens += a.prompt_tokens
            self.usage.cached_completion_tokens += a.completion_tokens
        return answers

    def _fetch(self, todo: list[tuple[Unit, list[int]]], answers: dict[str, CachedAnswer],
               progress: ProgressFn | None) -> None:
        fetcher = Fetcher(self.cfg, self._client or self._make_client(), self.usage, answers, cache=self.cache,
                          progress=progress, n_supported=self._n_supported, close_client=self._client is None)
        try:
            asyncio.run(fetcher.run(todo))
        finally:
            self._n_supported = fetcher.n_supported  # remembered for the next run of this teacher

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

    def probe(self) -> None:
        """One request before the run, without retries: an endpoint that refuses connections is an error
        now, not after every request has spent its retries (minutes). Any answer, even an error status,
        means the server is there; a slow one is left to the run's own timeouts."""
        if self._client is not None or not self.cfg.endpoint:
            return
        import openai

        key = os.environ.get(self.cfg.api_key_env) or "not-needed"
        client = openai.OpenAI(base_url=self.cfg.endpoint, api_key=key, max_retries=0,
                               timeout=min(10.0, self.cfg.timeout))
        try:
            client.models.list()
        except openai.APITimeoutError:
            pass
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            raise TeacherError(f"cannot reach the endpoint {self.cfg.endpoint} ({cause}); nothing was sent "
                               "(is the server running, and is --endpoint its /v1 base URL?)") from None
        except openai.APIError:
            pass
        finally:
            client.close()


    def _make_client(self) -> Any:
        import openai

        key = os.environ.get(self.cfg.api_key_env) or ("not-needed" if self.cfg.endpoint else None)
        return openai.AsyncOpenAI(base_url=self.cfg.endpoint, api_key=key, max_retries=self.cfg.max_retries,
                                  timeout=self.cfg.timeout)

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

