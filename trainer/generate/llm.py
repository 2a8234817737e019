"""The LLM emission of Chain-of-Intent (eq. 3): each turn's user utterance and agent answer from an
OpenAI-compatible chat-completions endpoint, and optionally a judged second answer for the last turn.

For turn ``t`` of a chain with intent ``s_t``: the user utterance is asked for given the intent, one real
example utterance of that intent (drawn from the data) and the conversation so far; then the agent's
answer given the conversation and that utterance. With a second model, the last turn gets a second answer;
a judge prompt rates both 1-10 and, when the scores differ, the dialogue records a ranked pair in
``meta.ranked_pairs`` (``{"context_turns": k, "better": a+, "worse": a-, ...}``: the answer follows the
first ``k`` turns) and keeps the better answer as its last agent turn.

Transport and accounting are those of the LLM teacher: the ``openai`` SDK (its retries and backoff), the
SQLite response cache (:class:`trainer.teachers.cache.ResponseCache`; key = model, messages, sampling
parameters, and the dialogue's index as the sample index, so a rerun with the same seed is free and two
dialogues never share an answer), bounded concurrency, a request-rate limit, token usage and cost per
model. ``plan`` mode sends nothing: cached answers are followed, every other request is counted with its
token estimate (a missing answer is replaced by a placeholder of ``max_tokens`` tokens).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainer.generate.emission import DEFAULT_AGENT, ExamplePool
from trainer.teachers.cache import ResponseCache, cache_key
from trainer.teachers.llm import CHARS_PER_TOKEN, Price, TeacherError, price_for
from trainer.teachers.llm_fetch import SEED_STRIDE, Usage
from trainer.teachers.llm_requests import LLMConfig
from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError
from turnwise.jsonl import validation_message

log = logging.getLogger(__name__)
DEFAULT_PROMPTS = Path(__file__).with_name("prompts.yaml")
NO_HISTORY = "(the conversation starts here)"
_PREFIX = re.compile(r"^\s*(?:user|customer|agent|assistant|system)\s*:\s*", re.IGNORECASE)
_VARS = ("intent", "intent_description", "example", "history", "utterance", "answer")


class GenPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    system: str = ""
    user: str = Field(min_length=1)
    max_tokens: int = Field(default=96, ge=1)

    def messages(self, values: dict[str, str]) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": Template(self.system).substitute(values).strip()}] \
            if self.system.strip() else []
        return [*msgs, {"role": "user", "content": Template(self.user).substitute(values).strip()}]


class GenPrompts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_turn: GenPrompt
    agent_turn: GenPrompt
    judge: GenPrompt
    path: str | None = None
    sha256: str | None = None

    @classmethod
    def load(cls, path: str | Path | None = None) -> GenPrompts:
        p = Path(path) if path is not None else DEFAULT_PROMPTS
        if not p.is_file():
            raise DataError("generation prompt file not found", path=str(p))
        text = p.read_text(encoding="utf-8")
        try:
            raw = yaml.safe_load(text)
            out = cls.model_validate({**(raw or {}), "path": str(p),
                                      "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
        except yaml.YAMLError as err:
            raise DataError(f"invalid YAML: {err}", path=str(p)) from None
        except (ValidationError, TypeError) as err:
            msg = validation_message(err) if isinstance(err, ValidationError) else str(err)
            raise DataError(msg, path=str(p)) from None
        for prompt in (out.user_turn, out.agent_turn, out.judge):
            for t in (prompt.system, prompt.user):
                try:
                    Template(t).substitute(dict.fromkeys(_VARS, "x"))
                except (KeyError, ValueError) as err:
                    raise DataError(f"prompt {prompt.id}: bad placeholder {err}", path=str(p)) from None
        return out

    def record(self) -> dict[str, Any]:
        return {"file": Path(self.path).name if self.path else None, "sha256": self.sha256,
                "ids": [self.user_turn.id, self.agent_turn.id, self.judge.id]}


def intent_words(label: str) -> str:
    words = re.sub(r"[_\-.:/]+", " ", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)).strip().lower()
    return re.sub(r"\s*intent$", "", words) or label


def clean_answer(text: str | None) -> str | None:
    """An LLM answer as one utterance: whitespace collapsed, a speaker prefix and enclosing quotes removed."""
    if text is None:
        return None
    t = " ".join(text.split())
    for _ in range(2):  # "User: 'hello'" and '"User: hello"' alike
        t = _PREFIX.sub("", t)
        if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
            t = t[1:-1].strip()
    return t or None


def parse_score(text: str | None) -> int | None:
    m = re.search(r"\b(10|[1-9])\b", text or "")
    return int(m.group(1)) if m else None


@dataclass
class Endpoint:
    """One model behind one endpoint, with the usage it accumulated in this run."""

    cfg: LLMConfig
    usage: Usage = field(default_factory=Usage)
    client: Any = None

    def open(self) -> None:
        if self.client is None:
            import openai

            key = os.environ.get(self.cfg.api_key_env) or ("not-needed" if self.cfg.endpoint else None)
            self.client = openai.AsyncOpenAI(base_url=self.cfg.endpoint, api_key=key,
                                             max_retries=self.cfg.max_retries, timeout=self.cfg.timeout)

    def summary(self, prices: dict[str, Price]) -> dict[str, Any]:
        u = self.usage.to_dict()
        price = price_for(prices, self.cfg.model)
        cost = None if price is None else round(price.cost(u["prompt_tokens"], u["completion_tokens"]), 6)
        return {"model": self.cfg.model, "endpoint": self.cfg.endpoint, "usage": u, "cost_usd": cost}


class Asker:
    """Cache lookup, then one request (n = 1, seeded); bounded concurrency and rate; plan mode sends nothing."""

    def __init__(self, cache: ResponseCache | None, *, plan: bool, concurrency: int, rate: float | None):
        from aiolimiter import AsyncLimiter

        self.cache = cache
        self.plan = plan
        self.sem = asyncio.Semaphore(concurrency)
        self.limiter = AsyncLimiter(1, 1.0 / rate) if rate else None
        self.est = {"requests_to_fetch": 0, "est_prompt_tokens": 0, "max_completion_tokens": 0}

    async def ask(self, ep: Endpoint, prompt: GenPrompt, values: dict[str, str], sample: int) -> str | None:
        messages = prompt.messages(values)
        key = cache_key(ep.cfg.model, messages, {**ep.cfg.params, "max_tokens": prompt.max_tokens}, sample)
        hit = self.cache.get_many([key]).get(key) if self.cache is not None else None
        if hit is not None:
            ep.usage.samples_cached += 1
            ep.usage.cached_prompt_tokens += hit.prompt_tokens
            ep.usage.cached_completion_tokens += hit.completion_tokens
            return hit.content
        if self.plan:
            self.est["requests_to_fetch"] += 1
            chars = sum(len(m["content"]) for m in messages)
            self.est["est_prompt_tokens"] += math.ceil(chars / CHARS_PER_TOKEN) + 4 * len(messages)
            self.est["max_completion_tokens"] += prompt.max_tokens
            return "x" * int(prompt.max_tokens * CHARS_PER_TOKEN)
        return await self._request(ep, prompt, messages, key, sample)

    async def _request(self, ep: Endpoint, prompt: GenPrompt, messages: list[dict[str, str]], key: str,
                       sample: int) -> str | None:
        import openai

        ep.open()
        async with self.sem:
            if self.limiter is not None:
                await self.limiter.acquire()
            ep.usage.requests += 1
            try:
                resp = await ep.client.chat.completions.create(
                    model=ep.cfg.model, messages=messages, temperature=ep.cfg.temperature, top_p=ep.cfg.top_p,
                    max_tokens=prompt.max_tokens, n=1, seed=ep.cfg.seed * SEED_STRIDE + sample)
            except (openai.APIError, ValueError) as err:
                ep.usage.failed_requests += 1
                log.warning("request for prompt %s failed after retries: %s", prompt.id, err)
                return None
        usage = getattr(resp, "usage", None)
        ptok = int(usage.prompt_tokens or 0) if usage is not None else 0
        ctok = int(usage.completion_tokens or 0) if usage is not None else 0
        if usage is None:
            ep.usage.responses_without_usage += 1
        ep.usage.prompt_tokens += ptok
        ep.usage.completion_tokens += ctok
        ch = (resp.choices or [None])[0]
        content = ch.message.content if ch is not None and ch.message else None
        ep.usage.samples_fetched += 1
        if self.cache is not None:
            self.cache.put(key, model=ep.cfg.model, endpoint=ep.cfg.endpoint, prompt_id=prompt.id, sample=sample,
                           content=content, finish_reason=ch.finish_reason if ch is not None else None,
                           prompt_tokens=ptok, completion_tokens=ctok)
        return content


@dataclass
class LLMEmission:
    prompts: GenPrompts
    pool: ExamplePool
    asker: Asker
    main: Endpoint
    second: Endpoint | None = None
    judge: Endpoint | None = None
    seed: int = 0
    failed_dialogues: int = 0
    tied_pairs: int = 0

    def _history(self, turns: list[Turn]) -> str:
        return "\n".join(f"{'User' if t.speaker == self.pool.user_speaker else 'Agent'}: {t.text}"
                         for t in turns) or NO_HISTORY

    async def dialogue(self, idx: int, chain: list[str], dialogue_id: str, meta: dict[str, Any]) -> Dialogue | None:
        rng = np.random.default_rng([self.seed, idx, 17])
        turns: list[Turn] = []
        agent = self.pool.agent_speaker or DEFAULT_AGENT
        pairs: list[dict[str, Any]] = []
        for t, intent in enumerate(chain):
            history = self._history(turns)
            values = {"intent": intent, "intent_description": intent_words(intent),
                      "example": self.pool.draw(intent, rng).text, "history": history, "utterance": "", "answer": ""}
            user = clean_answer(await self.asker.ask(self.main, self.prompts.user_turn, values, idx))
            if user is None:
                self.failed_dialogues += 1
                return None
            values["utterance"] = user
            answer = clean_answer(await self.asker.ask(self.main, self.prompts.agent_turn, values, idx))
            if answer is None:
                self.failed_dialogues += 1
                return None
            turns.append(Turn(speaker=self.pool.user_speaker, text=user, labels={self.pool.task: intent}))
            if t == len(chain) - 1 and self.second is not None:
                pair = await self._ranked(idx, values, answer, len(turns))
                if pair is not None:
                    pairs.append(pair)
                    answer = pair["better"]
            turns.append(Turn(speaker=agent, text=answer))
        return Dialogue(dialogue_id=dialogue_id, turns=turns,
                        meta={**meta, "intents": list(chain), "ranked_pairs": pairs})

    async def _ranked(self, idx: int, values: dict[str, str], first: str, turn: int) -> dict[str, Any] | None:
        assert self.second is not None
        judge = self.judge or self.main
        other = clean_answer(await self.asker.ask(self.second, self.prompts.agent_turn, values, idx))
        if other is None:
            return None
        scores = [parse_score(await self.asker.ask(judge, self.prompts.judge, {**values, "answer": a}, idx))
                  for a in (first, other)]
        if scores[0] is None or scores[1] is None or scores[0] == scores[1]:
            self.tied_pairs += 1
            return None
        models = [self.main.cfg.model, self.second.cfg.model]
        w = 0 if scores[0] > scores[1] else 1
        texts = [first, other]
        return {"context_turns": turn, "better": texts[w], "worse": texts[1 - w], "better_score": scores[w],
                "worse_score": scores[1 - w], "better_model": models[w], "worse_model": models[1 - w],
                "judge_model": judge.cfg.model}

    async def run(self, chains: list[list[str]], ids: list[str], meta: dict[str, Any],
                  progress: Any = None) -> list[Dialogue | None]:
        async def one(i: int) -> Dialogue | None:
            d = await self.dialogue(i, chains[i], ids[i], meta)
            if progress is not None:
                progress(1)
            return d

        try:
            return list(await asyncio.gather(*(one(i) for i in range(len(chains)))))
        finally:
            for ep in {id(e): e for e in (self.main, self.second, self.judge) if e is not None}.values():
                if ep.client is not None:
                    await ep.client.close()
                    ep.client = None


def probe(cfg: LLMConfig) -> None:
    """One request without retries before a run: an endpoint that refuses connections fails now."""
    if not cfg.endpoint:
        return
    import openai

    client = openai.OpenAI(base_url=cfg.endpoint, api_key=os.environ.get(cfg.api_key_env) or "not-needed",
                           max_retries=0, timeout=min(10.0, cfg.timeout))
    try:
        client.models.list()
    except openai.APIConnectionError as err:
        if isinstance(err, openai.APITimeoutError):
            return
        raise TeacherError(f"cannot reach the endpoint {cfg.endpoint} ({err.__cause__ or err}); nothing was sent "
                           "(is the server running, and is --endpoint its /v1 base URL?)") from None
    except openai.APIError:
        pass
    finally:
        client.close()
