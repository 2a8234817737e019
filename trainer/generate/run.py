"""What ``turnwise generate`` runs: estimate the intent chain, sample chains, emit the dialogues, write them.

Outputs: the dialogues as turnwise JSONL (``out``), the estimated chain beside it
(``<out stem>.hmm.json``: states, P(T), pi, A and their counts) and a summary (``<out stem>.summary.json``).
Every dialogue's ``meta.generator`` records the emission, the task, the seed, the chain file with its
sha256, and for the LLM emission the models and the prompt file with its sha256. ``plan`` writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.generate.emission import ExamplePool, sample_dialogue
from trainer.generate.hmm import IntentHMM
from turnwise.dialogue import Dialogue, write_jsonl
from turnwise.errors import DataError
from turnwise.jsonl import dumps_json

EMISSIONS = ("llm", "sample")
SOURCE = "chain_of_intent"


@dataclass
class LLMOptions:
    """Endpoints and sampling of the LLM emission (``model`` is required; the others default to it)."""

    model: str | None = None
    endpoint: str | None = None
    second_model: str | None = None
    second_endpoint: str | None = None
    judge_model: str | None = None
    judge_endpoint: str | None = None
    prompts: Path | None = None
    cache: Path | None = None
    concurrency: int = 4
    rate: float | None = None
    temperature: float = 0.9
    top_p: float = 0.95
    price_table: Path | None = None
    max_retries: int = 6


def hmm_path(out: Path) -> Path:
    return out.with_name(out.stem + ".hmm.json")


def generate_sampled(source: Sequence[Dialogue], task: str, n: int, *, seed: int = 0, smoothing: float = 0.1,
                     max_turns: int | None = None, hmm_file: str | None = None) -> tuple[list[Dialogue], IntentHMM]:
    """The ``sample`` emission of ``n`` chains (no endpoint): the dialogues and the estimated chain."""
    hmm = IntentHMM.estimate(source, task, smoothing=smoothing, max_turns=max_turns)
    pool = ExamplePool.from_dialogues(source, task)
    chains = hmm.sample_chains(n, seed)
    rng = np.random.default_rng([seed, 99])
    meta = _meta("sample", task, seed, hmm, hmm_file)
    return [sample_dialogue(c, pool, rng, _dialogue_id(seed, i), meta) for i, c in enumerate(chains)], hmm


def _dialogue_id(seed: int, i: int) -> str:
    return f"coi-s{seed}-{i:06d}"


def _meta(emission: str, task: str, seed: int, hmm: IntentHMM, hmm_file: str | None,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    gen = {"method": "chain_of_intent", "emission": emission, "task": task, "seed": seed,
           "hmm": {"file": hmm_file, "sha256": hmm.sha256(), "smoothing": hmm.smoothing, "states": len(hmm.states)},
           **(extra or {})}
    return {"source": SOURCE, "generator": gen}


def run_generate(source: Sequence[Dialogue], task: str, out: Path, n: int, *, emission: str = "llm", seed: int = 0,
                 smoothing: float = 0.1, max_turns: int | None = None, llm: LLMOptions | None = None,
                 plan: bool = False, progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Generate ``n`` dialogues from the labelled ``source`` dialogues; write them (unless ``plan``); a summary."""
    if emission not in EMISSIONS:
        raise DataError(f"unknown emission '{emission}' (expected one of {', '.join(EMISSIONS)})")
    if n < 1:
        raise DataError("--dialogues must be >= 1")
    t0 = time.perf_counter()
    out = Path(out)
    summary: dict[str, Any] = {"emission": emission, "task": task, "dialogues_requested": n, "seed": seed,
                               "source_dialogues": len(source)}
    if emission == "sample":
        if plan:
            hmm = IntentHMM.estimate(source, task, smoothing=smoothing, max_turns=max_turns)
            return {**summary, "plan": True, "calls": 0, "states": len(hmm.states),
                    "note": "the sample emission draws utterances from the data: no endpoint, no cost"}
        dialogues, hmm = generate_sampled(source, task, n, seed=seed, smoothing=smoothing, max_turns=max_turns,
                                          hmm_file=hmm_path(out).name)
        extra: dict[str, Any] = {}
    else:
        dialogues, hmm, extra = _generate_llm(source, task, out, n, seed=seed, smoothing=smoothing,
                                              max_turns=max_turns, llm=llm or LLMOptions(), plan=plan,
                                              progress=progress)
        if plan:
            return {**summary, "plan": True, **extra}
    hmm_path(out).parent.mkdir(parents=True, exist_ok=True)
    hmm_path(out).write_text(dumps_json(hmm.to_dict(), indent=2) + "\n", encoding="utf-8")
    write_jsonl(dialogues, out)
    summary.update({"out": str(out), "hmm": str(hmm_path(out)), "dialogues": len(dialogues),
                    "turns": sum(len(d.turns) for d in dialogues), "states": len(hmm.states),
                    "ranked_pairs": sum(len(d.meta.get("ranked_pairs") or []) for d in dialogues), **extra,
                    "wall_s": round(time.perf_counter() - t0, 3)})
    out.with_name(out.stem + ".summary.json").write_text(dumps_json(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _generate_llm(source: Sequence[Dialogue], task: str, out: Path, n: int, *, seed: int, smoothing: float,
                  max_turns: int | None, llm: LLMOptions, plan: bool,
                  progress: Callable[..., None] | None) -> tuple[list[Dialogue], IntentHMM, dict[str, Any]]:
    from trainer.generate.llm import Asker, Endpoint, GenPrompts, LLMEmission, probe
    from trainer.teachers.cache import ResponseCache
    from trainer.teachers.llm import TeacherError, load_price_table, price_for
    from trainer.teachers.llm_requests import LLMConfig

    if not llm.model:
        raise DataError("--emission llm needs --model (the model name the endpoint serves); "
                        "--emission sample needs no endpoint")
    if (llm.judge_model or llm.judge_endpoint) and not llm.second_model:
        raise DataError("a judge rates two answers: pass --second-model too")
    prompts = GenPrompts.load(llm.prompts)
    prices = load_price_table(llm.price_table)
    hmm = IntentHMM.estimate(source, task, smoothing=smoothing, max_turns=max_turns)
    pool = ExamplePool.from_dialogues(source, task)
    chains = hmm.sample_chains(n, seed)

    def cfg(model: str, endpoint: str | None) -> LLMConfig:
        return LLMConfig(model=model, endpoint=endpoint, temperature=llm.temperature, top_p=llm.top_p, seed=seed,
                         concurrency=llm.concurrency, rate=llm.rate, max_retries=llm.max_retries)

    main = Endpoint(cfg(llm.model, llm.endpoint))
    second = Endpoint(cfg(llm.second_model, llm.second_endpoint or llm.endpoint)) if llm.second_model else None
    judge = Endpoint(cfg(llm.judge_model, llm.judge_endpoint or llm.endpoint)) if llm.judge_model else None
    models = {"user_turn": main.cfg.model, "agent_turn": main.cfg.model,
              **({"second_answer": second.cfg.model, "judge": (judge or main).cfg.model} if second else {})}
    cache_path = Path(llm.cache) if llm.cache is not None else out.with_name(out.stem + ".cache.sqlite")
    cache = None if plan and not cache_path.exists() else ResponseCache(cache_path)  # --plan creates no file
    try:
        asker = Asker(cache, plan=plan, concurrency=llm.concurrency, rate=llm.rate)
        emission = LLMEmission(prompts, pool, asker, main, second, judge, seed=seed)
        if not plan:
            for ep in (main, second, judge):
                if ep is not None:
                    probe(ep.cfg)
        meta = _meta("llm", task, seed, hmm, hmm_path(out).name,
                     {"models": models, "prompts": prompts.record(),
                      "sampling": {"temperature": llm.temperature, "top_p": llm.top_p}})
        ids = [_dialogue_id(seed, i) for i in range(n)]
        results = asyncio.run(emission.run(chains, ids, meta, progress))
    finally:
        if cache is not None:
            cache.close()
    eps = {"main": main, **({"second": second} if second else {}), **({"judge": judge} if judge else {})}
    usage = {k: e.summary(prices) for k, e in eps.items()}
    costs = [u["cost_usd"] for u in usage.values()]
    extra: dict[str, Any] = {"models": models, "cache": str(cache_path), "usage": usage,
                             "cost_usd": None if None in costs else round(sum(c for c in costs if c), 6)}
    if plan:
        cached = sum(e.usage.samples_cached for e in eps.values())
        est = asker.est
        del extra["usage"], extra["cost_usd"]
        extra.update({"requests_cached": cached, **est,
                      "note": "requests after the first uncached answer of a dialogue are counted with a "
                              "placeholder answer; completion tokens are an upper bound (max_tokens)"})
        found = [price_for(prices, e.cfg.model) for e in eps.values()]
        # one token estimate for all requests: priced at the dearest model, an upper bound
        extra["est_cost_usd_max"] = None if None in found else round(
            max(p.cost(est["est_prompt_tokens"], est["max_completion_tokens"]) for p in found if p), 6)
        return [], hmm, extra
    dialogues = [d for d in results if d is not None]
    fetched = sum(e.usage.samples_fetched + e.usage.samples_cached for e in eps.values())
    failed = sum(e.usage.failed_requests for e in eps.values())
    if not dialogues and failed:
        raise TeacherError(f"every request to {llm.endpoint or 'the endpoint'} failed ({failed} failures); "
                           "see the log for the errors")
    extra.update({"failed_dialogues": emission.failed_dialogues, "unjudged_or_tied_pairs": emission.tied_pairs,
                  "answers": fetched})
    return dialogues, hmm, extra
