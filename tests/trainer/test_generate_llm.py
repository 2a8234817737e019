"""The LLM emission of ``turnwise generate`` against a loopback OpenAI-compatible server
(tests/fakes/openai_server.py): eq. 3's conditioning, ranked pairs from a judged second answer, the cache,
``--plan``, failures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer

from trainer.generate.llm import GenPrompts, clean_answer, intent_words, parse_score
from trainer.generate.run import LLMOptions, run_generate
from trainer.teachers.llm import TeacherError
from turnwise.dialogue import Dialogue, Turn, read_jsonl
from turnwise.errors import DataError

_INTENT = re.compile(r'intent must be "([a-z_]+)"')


def _source() -> list[Dialogue]:
    out = []
    for i, chain in enumerate([["greet", "book", "thanks"], ["greet", "cancel", "book", "thanks"], ["book", "thanks"]]):
        turns = []
        for j, intent in enumerate(chain):
            turns += [Turn(speaker="customer", text=f"real {intent} utterance {i}{j}", labels={"intent": intent}),
                      Turn(speaker="agent", text=f"real reply {i}{j}")]
        out.append(Dialogue(dialogue_id=f"s{i}", turns=turns))
    return out


def responder(body: dict[str, Any], choice: int) -> str:
    system = body["messages"][0]["content"]
    user = body["messages"][-1]["content"]
    model = body["model"]
    if "customer's side" in system:
        m = _INTENT.search(user)
        assert m, user
        history = user.split("\n\nWrite the customer's")[0].splitlines()
        n_prev = sum(line.startswith(("User: ", "Agent: ")) for line in history)
        return f'"Customer: I want to {m.group(1)} please, turn {n_prev}"'
    if "You grade" in system:
        return "Score: 9" if "detailed" in user.split("Candidate agent reply:")[1] else "3"
    if model == "strong":
        return "Agent: Here is a detailed and helpful answer."
    return "ok."


def _opts(srv: FakeOpenAIServer, tmp: Path, **kw: Any) -> LLMOptions:
    return LLMOptions(model=kw.pop("model", "weak"), endpoint=srv.base_url, cache=tmp / "cache.sqlite",
                      max_retries=kw.pop("max_retries", 2), **kw)


def test_turns_follow_the_chain_with_history_and_examples(tmp_path: Path) -> None:
    source = _source()
    with FakeOpenAIServer(responder) as srv:
        summary = run_generate(source, "intent", tmp_path / "g.jsonl", 6, emission="llm", seed=1,
                               llm=_opts(srv, tmp_path))
        bodies = list(srv.bodies)
    dialogues = read_jsonl(tmp_path / "g.jsonl")
    assert len(dialogues) == summary["dialogues"] == 6
    real = {t.text: t.labels["intent"] for d in source for t in d.turns if t.labels}
    for d in dialogues:
        chain = d.meta["intents"]
        assert [t.speaker for t in d.turns] == ["customer", "agent"] * len(chain)
        assert [t.labels.get("intent") for t in d.turns[::2]] == chain
        assert all(t.labels == {} for t in d.turns[1::2])
        for k, t in enumerate(d.turns[::2]):  # prefix and quotes cleaned; one history line per earlier turn
            assert t.text == f"I want to {chain[k]} please, turn {2 * k}"
        assert d.meta["generator"]["models"] == {"user_turn": "weak", "agent_turn": "weak"}
        assert d.meta["ranked_pairs"] == []
    user_prompts = [b["messages"][-1]["content"] for b in bodies if "customer's side" in b["messages"][0]["content"]]
    assert len(user_prompts) == sum(len(d.meta["intents"]) for d in dialogues)
    for p in user_prompts:  # the example shown is a real utterance of the requested intent
        intent = _INTENT.search(p).group(1)
        example = p.split("(do not copy it):\n")[1].splitlines()[0]
        assert real[example] == intent
    agent_prompts = [b["messages"][-1]["content"] for b in bodies if "concise" in b["messages"][0]["content"]]
    assert any("Agent: ok." in p and "User: I want to" in p for p in agent_prompts)  # later turns see the history
    assert summary["usage"]["main"]["usage"]["requests"] == len(bodies)


def test_second_model_and_judge_give_ranked_pairs(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder) as srv:
        run_generate(_source(), "intent", tmp_path / "g.jsonl", 4, emission="llm", seed=2,
                     llm=_opts(srv, tmp_path, second_model="strong", judge_model="judge"))
    for d in read_jsonl(tmp_path / "g.jsonl"):
        (pair,) = d.meta["ranked_pairs"]
        assert pair["context_turns"] == len(d.turns) - 1  # the answer follows every turn but itself
        assert pair["better"] == "Here is a detailed and helpful answer." and pair["worse"] == "ok."
        assert (pair["better_model"], pair["worse_model"], pair["judge_model"]) == ("strong", "weak", "judge")
        assert pair["better_score"] == 9 and pair["worse_score"] == 3
        assert d.turns[-1].text == pair["better"]  # the dialogue keeps the better answer
        assert d.turns[1].text == "ok."  # earlier answers come from the main model
        assert d.meta["generator"]["models"]["judge"] == "judge"


def test_rerun_is_served_from_the_cache_and_plan_counts_it(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder) as srv:
        opts = _opts(srv, tmp_path, second_model="strong")
        plan = run_generate(_source(), "intent", tmp_path / "g.jsonl", 5, emission="llm", seed=3, llm=opts, plan=True)
        assert srv.requests == 0  # --plan sends nothing
        assert not (tmp_path / "g.jsonl").exists()
        first = run_generate(_source(), "intent", tmp_path / "g.jsonl", 5, emission="llm", seed=3, llm=opts)
        sent = len(srv.bodies)
        # per turn a user utterance and an answer; the last turn also a second answer and two judge calls
        turns = sum(len(d.meta["intents"]) for d in read_jsonl(tmp_path / "g.jsonl"))
        assert sent == 2 * turns + 3 * 5 == plan["requests_to_fetch"]
        assert plan["requests_cached"] == 0
        before = (tmp_path / "g.jsonl").read_text()
        srv.reset_counts()
        again = run_generate(_source(), "intent", tmp_path / "g.jsonl", 5, emission="llm", seed=3, llm=opts)
        assert not srv.bodies and (tmp_path / "g.jsonl").read_text() == before
        assert again["usage"]["main"]["usage"]["samples_cached"] == first["usage"]["main"]["usage"]["requests"]
        replan = run_generate(_source(), "intent", tmp_path / "g.jsonl", 5, emission="llm", seed=3, llm=opts,
                              plan=True)
        assert replan["requests_to_fetch"] == 0 and replan["requests_cached"] == sent


def test_every_request_failing_is_an_error(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder) as srv:
        srv.inject(*([500] * 200))
        with pytest.raises(TeacherError, match="every request"):
            run_generate(_source(), "intent", tmp_path / "g.jsonl", 2, emission="llm",
                         llm=_opts(srv, tmp_path, max_retries=0))
    assert not (tmp_path / "g.jsonl").exists()


def test_unreachable_endpoint_fails_before_sending(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder) as srv:
        url = srv.base_url
    opts = LLMOptions(model="m", endpoint=url, cache=tmp_path / "c.sqlite")
    with pytest.raises(TeacherError, match="cannot reach"):
        run_generate(_source(), "intent", tmp_path / "g.jsonl", 2, emission="llm", llm=opts)


def test_prompt_file_loads_and_bad_placeholders_are_refused(tmp_path: Path) -> None:
    prompts = GenPrompts.load()
    assert prompts.record()["ids"] == ["coi.user_turn.v1", "coi.agent_turn.v1", "coi.judge.v1"]
    bad = tmp_path / "p.yaml"
    bad.write_text(json.dumps({"user_turn": {"id": "u", "user": "$nope"}, "agent_turn": {"id": "a", "user": "x"},
                               "judge": {"id": "j", "user": "x"}}))
    with pytest.raises(DataError, match="bad placeholder"):
        GenPrompts.load(bad)
    with pytest.raises(DataError, match="--second-model"):
        run_generate(_source(), "intent", tmp_path / "g.jsonl", 1, emission="llm",
                     llm=LLMOptions(model="m", judge_model="j"))


def test_answer_helpers() -> None:
    assert clean_answer('  User:  "Hello   there" ') == "Hello there"
    assert clean_answer("   ") is None
    assert parse_score("I'd say 7/10") == 7 and parse_score("10") == 10 and parse_score("none") is None
    assert intent_words("orderpizzaintent") == "orderpizza" and intent_words("check_balance") == "check balance"
