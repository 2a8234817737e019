"""The LLM teacher's request planner: its configuration and the distinct prompts (work units) a run needs.

N votes per turn are split over the task's prompts (:func:`split_samples`). A ``turn`` prompt is one unit
per turn (the turn's window); a ``dialogue`` prompt (``lines_json``) is one unit per dialogue that votes on
every turn at once. Units are keyed by their prompt text, so (dialogue, turn) targets that render the same
messages share one unit, and each of a unit's samples has its own cache key
(:func:`trainer.teachers.cache.cache_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trainer.teachers.cache import cache_key
from trainer.teachers.prompts import PromptBank, PromptTemplate, TaskPrompts, render_dialogue, render_turn
from turnwise.dialogue import Dialogue
from turnwise.tasks import TaskSchema, TaskType
from turnwise.window import WindowConfig


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

    @property
    def params(self) -> dict[str, Any]:
        """The sampling parameters every request and every record carries."""
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


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


class RequestPlanner:
    """Dialogues x tasks x prompts -> one :class:`RecordPlan` per (dialogue, task) and the distinct :class:`Unit` s."""

    def __init__(self, config: LLMConfig, bank: PromptBank):
        self.cfg = config
        self.bank = bank

    def key(self, messages: list[dict[str, str]], prompt: PromptTemplate, sample: int) -> str:
        return cache_key(self.cfg.model, messages, {**self.cfg.params, "max_tokens": prompt.max_tokens}, sample)

    def task_prompts(self, name: str, schema: TaskSchema) -> TaskPrompts:
        task = schema[name]
        tp = self.bank.for_task(name, task)
        # Bank labels may be listed in another order than the schema's: votes use the schema's order.
        if tp.labels != task.labels:
            tp = tp.model_copy(update={"labels": list(task.labels)})
        return tp

    def build(self, dialogues: Sequence[Dialogue], schema: TaskSchema,
              samples: int) -> tuple[list[RecordPlan], list[Unit]]:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        plans: list[RecordPlan] = []
        units: dict[str, Unit] = {}
        for name in schema.names():
            task = schema[name]
            tp = self.task_prompts(name, schema)
            per_prompt = split_samples(samples, len(tp.prompts))
            active = [(p, s) for p, s in zip(tp.prompts, per_prompt, strict=True) if s > 0]
            for d in dialogues:
                if not d.turns:
                    continue
                rec = len(plans)
                plans.append(RecordPlan(d, name, task.type, list(task.labels), [p.id for p, _ in active]))
                column = 0
                for prompt, s in active:
                    for turn, messages in self._jobs(tp, prompt, d):
                        self._unit(units, tp, prompt, messages, s, len(d.turns)).targets.append(
                            Target(rec, turn, column))
                    column += s
        return plans, list(units.values())

    def _jobs(self, tp: TaskPrompts, prompt: PromptTemplate,
              d: Dialogue) -> list[tuple[int | None, list[dict[str, str]]]]:
        """(turn or None, messages) of every request this prompt makes for the dialogue."""
        if prompt.unit == "dialogue":
            return [(None, render_dialogue(tp, prompt, d.turns))]
        return [(i, render_turn(tp, prompt, d.turns, i, self.cfg.window)) for i in range(len(d.turns))]

    def _unit(self, units: dict[str, Unit], tp: TaskPrompts, prompt: PromptTemplate, messages: list[dict[str, str]],
              samples: int, n_lines: int) -> Unit:
        """The unit of these messages, created (with its per-sample cache keys) the first time they are seen."""
        base = self.key(messages, prompt, -1)
        unit = units.get(base)
        if unit is None:
            unit = Unit(prompt, tp, messages, samples, n_lines)
            unit.keys = [self.key(messages, prompt, k) for k in range(samples)]
            units[base] = unit
        return unit
