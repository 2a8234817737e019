"""What the data gives an emission: example utterances per intent (with the agent's reply when the data
has one), the speaker names, and the ``sample`` emission (the classic HMM: every utterance drawn from the
data, no LLM).

An example is a labelled turn's text and, when the next turn is by another speaker, that turn's text (the
agent's reply). The ``sample`` emission draws, for each intent of a chain, one example of that intent
uniformly at random: the user turn carries the intent as its gold label, the reply (if the example has
one) follows it as an unlabelled agent turn. Corpora without agent turns (MultiDoGO) give user-only
dialogues, like the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from turnwise.dialogue import Dialogue, Turn
from turnwise.errors import DataError

DEFAULT_AGENT = "agent"


@dataclass
class Example:
    text: str
    reply: str | None


@dataclass
class ExamplePool:
    """Examples per intent and the speaker names of the data's labelled turns and of the replies."""

    task: str
    examples: dict[str, list[Example]] = field(default_factory=dict)
    user_speaker: str = "user"
    agent_speaker: str | None = None  # None: the data has no replies

    @classmethod
    def from_dialogues(cls, dialogues: Sequence[Dialogue], task: str) -> ExamplePool:
        pool = cls(task)
        users: Counter[str] = Counter()
        agents: Counter[str] = Counter()
        for d in dialogues:
            for i, t in enumerate(d.turns):
                value = t.labels.get(task)
                if not isinstance(value, str) or not t.text:
                    continue
                nxt = d.turns[i + 1] if i + 1 < len(d.turns) else None
                reply = nxt.text if nxt is not None and nxt.speaker != t.speaker and nxt.text else None
                pool.examples.setdefault(value, []).append(Example(t.text, reply))
                users[t.speaker] += 1
                if nxt is not None and reply is not None:
                    agents[nxt.speaker] += 1
        if not pool.examples:
            raise DataError(f"no labelled, non-empty '{task}' turn to take example utterances from")
        pool.user_speaker = users.most_common(1)[0][0]
        pool.agent_speaker = agents.most_common(1)[0][0] if agents else None
        return pool

    def draw(self, intent: str, rng: np.random.Generator) -> Example:
        ex = self.examples.get(intent)
        if not ex:
            raise DataError(f"no example utterance of intent '{intent}'")
        return ex[int(rng.integers(len(ex)))]

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in sorted(self.examples.items())}


def sample_dialogue(chain: Sequence[str], pool: ExamplePool, rng: np.random.Generator, dialogue_id: str,
                    meta: dict) -> Dialogue:
    """The ``sample`` emission of one chain."""
    turns: list[Turn] = []
    for intent in chain:
        ex = pool.draw(intent, rng)
        turns.append(Turn(speaker=pool.user_speaker, text=ex.text, labels={pool.task: intent}))
        if ex.reply is not None:
            turns.append(Turn(speaker=pool.agent_speaker or DEFAULT_AGENT, text=ex.reply))
    return Dialogue(dialogue_id=dialogue_id, turns=turns, meta={**meta, "intents": list(chain)})
