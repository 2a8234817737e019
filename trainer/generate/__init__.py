"""Chain-of-Intent dialogue generation (``turnwise generate``).

- :mod:`trainer.generate.hmm` -- the intent chain: P(T), the initial-intent distribution and the smoothed
  transition matrix estimated from labelled dialogues, and chain sampling.
- :mod:`trainer.generate.emission` -- example utterances per intent from the data and the ``sample``
  emission (the classic HMM baseline: utterances drawn from the data, no LLM).
- :mod:`trainer.generate.llm` -- the LLM emission: user utterances and agent answers from an
  OpenAI-compatible endpoint, optionally a judged second answer giving ranked pairs.
- :mod:`trainer.generate.run` -- the command: estimate, sample, emit, write JSONL + chain + summary.
- :mod:`trainer.generate.plot` -- a heat map of an estimated chain.
"""
