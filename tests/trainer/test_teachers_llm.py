"""The LLM teacher against a loopback OpenAI-compatible server (tests/fakes/openai_server.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fakes.openai_server import GARBAGE, BankResponder, FakeOpenAIServer, constant_responder

from trainer.teachers.cache import ResponseCache
from trainer.teachers.cli import run_label
from trainer.teachers.llm import LLMConfig, LLMTeacher, load_price_table, split_samples
from trainer.teachers.prompts import PromptBank
from trainer.teachers.scores import ABSTAIN, read_scores
from turnwise.dialogue import Dialogue, Turn, read_jsonl, write_jsonl
from turnwise.tasks import parse_tasks

ACT = ["inform", "question", "directive", "commissive"]
ACT_SCHEMA = parse_tasks({"tasks": {"act": {"type": "multiclass", "labels": ACT}}})


@pytest.fixture(scope="module")
def sample_dialogues(samples_dir: Path) -> list[Dialogue]:
    return read_jsonl(samples_dir / "dialogues.jsonl")[:4]


@pytest.fixture
def data_files(tmp_path: Path, sample_dialogues: list[Dialogue]) -> tuple[Path, Path]:
    data = tmp_path / "dialogues.jsonl"
    write_jsonl(sample_dialogues, data)
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n  act: {type: multiclass, labels: [inform, question, directive, commissive]}\n")
    return data, tasks


def _gold(dialogues: list[Dialogue]) -> dict[str, str]:
    return {t.text: t.labels["act"] for d in dialogues for t in d.turns}


def _teacher(srv: FakeOpenAIServer, cache: ResponseCache | None = None, **kw) -> LLMTeacher:
    cfg = LLMConfig(model="fake-model", endpoint=srv.base_url, max_retries=kw.pop("max_retries", 4), **kw)
    return LLMTeacher(cfg, PromptBank.load(), cache)


def _expected_samples(dialogues: list[Dialogue], n: int) -> int:
    # act bank: choice (turn), lines_json (dialogue), label_json (turn)
    s = split_samples(n, 3)
    turns = sum(len(d.turns) for d in dialogues)
    return turns * s[0] + len(dialogues) * s[1] + turns * s[2]


def test_split_samples_over_prompts():
    assert split_samples(30, 3) == [10, 10, 10]
    assert split_samples(7, 3) == [3, 2, 2]
    assert split_samples(1, 3) == [1, 0, 0]


def test_label_end_to_end_with_rerun_from_cache(data_files, sample_dialogues, tmp_path):
    data, tasks = data_files
    out = tmp_path / "scores.jsonl"
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(BankResponder(_gold(sample_dialogues), ACT, accuracy=0.8)) as srv:
        s1 = run_label(data, tasks, "llm", 6, out, endpoint=srv.base_url, model="fake-model", cache=cache)
        first = srv.requests
        assert first > 0
        assert s1["usage"]["samples_fetched"] == _expected_samples(sample_dialogues, 6)
        assert s1["n_supported"] is True
        recs = read_scores(out)
        assert len(recs) == len(sample_dialogues)
        r = recs[(sample_dialogues[0].dialogue_id, "act")]
        assert r.n_votes == 6 and r.teacher.kind == "llm" and r.teacher.model == "fake-model"
        assert r.teacher.prompts == ["act.choice.v1", "act.lines_json.v1", "act.label_json.v1"]
        assert s1["accuracy_vs_gold"]["act"]["accuracy"] > 0.8

        srv.reset_counts()
        s2 = run_label(data, tasks, "llm", 6, out, endpoint=srv.base_url, model="fake-model", cache=cache)
        assert srv.requests == 0, "a rerun must be served entirely from the cache"
        assert s2["usage"]["samples_cached"] == s1["usage"]["samples_fetched"]
        assert s2["usage"]["prompt_tokens"] == 0
        assert read_scores(out) == recs


def test_cache_key_depends_on_params_and_model(sample_dialogues, tmp_path):
    with FakeOpenAIServer(constant_responder("A")) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        _teacher(srv, cache).label(sample_dialogues[:1], ACT_SCHEMA, 3)
        n1 = srv.requests
        _teacher(srv, cache, temperature=0.3).label(sample_dialogues[:1], ACT_SCHEMA, 3)
        assert srv.requests == 2 * n1  # another temperature: other keys
        cfg = LLMConfig(model="other-model", endpoint=srv.base_url)
        LLMTeacher(cfg, PromptBank.load(), cache).label(sample_dialogues[:1], ACT_SCHEMA, 3)
        assert srv.requests == 3 * n1


def test_retries_injected_429_and_500_with_sdk_backoff(sample_dialogues, tmp_path):
    d = sample_dialogues[:1]
    with FakeOpenAIServer(BankResponder(_gold(d), ACT, accuracy=1.0)) as srv:
        srv.inject(429, 500, 503, 429)
        t = _teacher(srv, concurrency=1)
        recs = t.label(d, ACT_SCHEMA, 3)
        assert srv.statuses[:4] == [429, 500, 503, 429]
        assert t.usage.failed_requests == 0
        # the SDK retried: 4 more HTTP requests than logical ones
        assert srv.requests == t.usage.requests + 4
        assert all(v != ABSTAIN for row in recs[0].votes for v in row)


def test_failed_requests_abstain_are_not_cached_and_rerun_fetches_only_them(sample_dialogues, tmp_path):
    d = sample_dialogues[:1]
    with FakeOpenAIServer(BankResponder(_gold(d), ACT, accuracy=1.0)) as srv, \
            ResponseCache(tmp_path / "c.sqlite") as cache:
        srv.inject(500, 500, "garbage_http")  # max_retries=1: the first request fails twice; then a non-JSON body
        t = _teacher(srv, cache, concurrency=1, max_retries=1)
        recs = t.label(d, ACT_SCHEMA, 3)
        assert t.usage.failed_requests == 2
        lost = sum(v == ABSTAIN for row in recs[0].votes for v in row)
        assert lost > 0
        total = _expected_samples(d, 3)
        assert len(cache) == total - t.usage.failed_requests  # everything that was answered is cached
        srv.reset_counts()
        t2 = _teacher(srv, cache)
        recs2 = t2.label(d, ACT_SCHEMA, 3)
        assert srv.ok == t.usage.failed_requests  # only the lost answers are asked again
        assert all(v != ABSTAIN for row in recs2[0].votes for v in row)


def test_every_request_failing_is_an_error(sample_dialogues):
    from trainer.teachers.llm import TeacherError

    with FakeOpenAIServer() as srv:
        srv.inject(*([500] * 200))
        with pytest.raises(TeacherError, match="every request"):
            _teacher(srv, max_retries=0).label(sample_dialogues[:1], ACT_SCHEMA, 1)


@pytest.mark.parametrize("mode", ["refuse", "ignore"])
def test_n_fallback_to_one_request_per_sample_with_distinct_seeds(mode, sample_dialogues):
    d = sample_dialogues[:1]
    with FakeOpenAIServer(BankResponder(_gold(d), ACT, accuracy=0.7), n_mode=mode) as srv:
        t = _teacher(srv)
        recs = t.label(d, ACT_SCHEMA, 9)
        assert t._n_supported is False
        ok = [b for b in srv.bodies if (b.get("n") or 1) == 1]
        # after the probe, every sample is its own request
        assert len(ok) >= _expected_samples(d, 9) - (3 if mode == "ignore" else 0)
        by_prompt: dict[str, set[int]] = {}
        for b in ok:
            by_prompt.setdefault(json.dumps(b["messages"]), set()).add(b["seed"])
        assert max(len(seeds) for seeds in by_prompt.values()) == 3  # 3 samples per prompt, 3 seeds
        assert recs[0].n_votes == 9
        assert all(v != ABSTAIN for row in recs[0].votes for v in row)


def test_n_supported_uses_one_request_per_prompt(sample_dialogues):
    d = sample_dialogues[:1]
    with FakeOpenAIServer(BankResponder(_gold(d), ACT)) as srv:
        t = _teacher(srv)
        t.label(d, ACT_SCHEMA, 9)
        n_turns = len(d[0].turns)
        assert srv.requests == 2 * n_turns + 1  # two turn prompts + one dialogue prompt, n=3 each
        assert {b["n"] for b in srv.bodies} == {3}


def test_garbage_answers_are_abstentions(sample_dialogues, tmp_path):
    d = sample_dialogues[:2]
    with FakeOpenAIServer(constant_responder(GARBAGE)) as srv:
        t = _teacher(srv)
        recs = t.label(d, ACT_SCHEMA, 4)
    for r in recs:
        assert all(a == r.n_votes for a in r.abstentions)
        assert r.valid == [False] * r.num_turns
        assert all(s == 0.0 for row in r.scores for s in row)


def test_partial_garbage_reduces_the_denominator(sample_dialogues):
    d = sample_dialogues[:2]
    with FakeOpenAIServer(BankResponder(_gold(d), ACT, accuracy=1.0, garbage=0.4)) as srv:
        recs = _teacher(srv).label(d, ACT_SCHEMA, 6)
    seen_partial = False
    for r in recs:
        for row, scores, abst in zip(r.votes, r.scores, r.abstentions, strict=True):
            valid = [v for v in row if v != ABSTAIN]
            assert abst == len(row) - len(valid)
            if valid:
                assert sum(scores) == pytest.approx(1.0)
                assert max(scores) == pytest.approx(1.0)  # the fake is always right when it answers
                seen_partial |= 0 < abst < len(row)
    assert seen_partial


def test_usage_and_cost_accounting(data_files, sample_dialogues, tmp_path):
    data, tasks = data_files
    prices = tmp_path / "prices.yaml"
    prices.write_text('fake-model: {input: 1.0, output: 2.0}\n"*": {input: 100, output: 100}\n')
    with FakeOpenAIServer(BankResponder(_gold(sample_dialogues), ACT)) as srv:
        s = run_label(data, tasks, "llm", 3, tmp_path / "s.jsonl", endpoint=srv.base_url, model="fake-model",
                      price_table=prices)
        # the fake's usage: prompt = chars // 4 + 1 per request, completion = len(answer) // 4 + 1 per choice
        expected_prompt = sum(sum(len(m["content"]) for m in b["messages"]) // 4 + 1 for b in srv.bodies)
    u = s["usage"]
    assert u["prompt_tokens"] == expected_prompt
    assert u["completion_tokens"] > 0
    assert s["cost_usd"] == pytest.approx((u["prompt_tokens"] * 1.0 + u["completion_tokens"] * 2.0) / 1e6, abs=1e-6)
    assert load_price_table(prices)["fake-model"].input_per_mtok == 1.0


def test_plan_makes_no_calls_and_counts_cache_hits(data_files, sample_dialogues, tmp_path):
    data, tasks = data_files
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fake-model": {"input": 0.5, "output": 1.5}}))
    cache = tmp_path / "c.sqlite"
    with FakeOpenAIServer(BankResponder(_gold(sample_dialogues), ACT)) as srv:
        plan = run_label(data, tasks, "llm", 6, tmp_path / "s.jsonl", endpoint=srv.base_url, model="fake-model",
                         plan=True, cache=cache, price_table=prices)
        assert srv.requests == 0
        assert not (tmp_path / "s.jsonl").exists()
        total = _expected_samples(sample_dialogues, 6)
        assert plan["samples_to_fetch"] == total and plan["samples_cached"] == 0
        n_turns = sum(len(d.turns) for d in sample_dialogues)
        assert plan["calls_if_n_supported"] == 2 * n_turns + len(sample_dialogues)
        assert plan["calls_if_n_unsupported"] == total
        assert plan["est_cost_usd"]["if_n_unsupported_max"] > plan["est_cost_usd"]["if_n_supported_max"] > 0
        run_label(data, tasks, "llm", 6, tmp_path / "s.jsonl", endpoint=srv.base_url, model="fake-model", cache=cache)
        srv.reset_counts()
        again = run_label(data, tasks, "llm", 6, tmp_path / "s.jsonl", endpoint=srv.base_url, model="fake-model",
                          plan=True, cache=cache)
        assert srv.requests == 0
        assert again["samples_to_fetch"] == 0 and again["calls_if_n_supported"] == 0
        assert again["est_cost_usd"] is None  # no price table this time: said so, not a made-up number


def test_concurrency_and_rate_limit(sample_dialogues):
    d = [Dialogue(dialogue_id="x", turns=[Turn(speaker="customer", text=f"turn {i}") for i in range(6)])]
    with FakeOpenAIServer(constant_responder("B")) as srv:
        t = _teacher(srv, rate=20.0, concurrency=2)
        start = time.perf_counter()
        t.label(d, ACT_SCHEMA, 3)  # 6 turns x 2 turn prompts + 1 dialogue prompt = 13 requests
        elapsed = time.perf_counter() - start
    assert srv.requests == 13
    assert elapsed >= 12 / 20.0 * 0.9  # 13 requests at 20/s need ~0.6 s


def test_dialogue_prompt_votes_every_turn(sample_dialogues):
    d = sample_dialogues[:1]
    n = len(d[0].turns)
    answer = json.dumps({"question": [1], "inform": list(range(2, n + 1))})

    def responder(body, choice):
        user = body["messages"][-1]["content"]
        return answer if "numbered line" in user else "not a letter at all"

    with FakeOpenAIServer(responder) as srv:
        recs = _teacher(srv).label(d, ACT_SCHEMA, 3)  # one vote from each prompt
    votes = recs[0].votes
    assert [row[1] for row in votes] == [1] + [0] * (n - 1)  # column 1 = lines_json
    assert all(row[0] == ABSTAIN and row[2] == ABSTAIN for row in votes)


def test_shard_caches_merge(tmp_path):
    from trainer.teachers.cache import cache_key, merge_caches

    msgs = [{"role": "user", "content": "hi"}]
    keys = []
    for i in range(2):
        with ResponseCache(tmp_path / f"shard{i}.sqlite") as c:
            k = cache_key("m", msgs, {"temperature": 0.7}, i)
            c.put(k, model="m", endpoint=None, prompt_id="p", sample=i, content=f"answer {i}", finish_reason="stop",
                  prompt_tokens=3, completion_tokens=1)
            keys.append(k)
    added = merge_caches(tmp_path / "all.sqlite", [tmp_path / "shard0.sqlite", tmp_path / "shard1.sqlite"])
    assert added == 2
    with ResponseCache(tmp_path / "all.sqlite") as merged:
        got = merged.get_many(keys)
    assert [got[k].content for k in keys] == ["answer 0", "answer 1"]
    assert merge_caches(tmp_path / "all.sqlite", [tmp_path / "shard0.sqlite"]) == 0
