"""Teachers: turn dialogues into teacher scores S in [0, 1] per turn and class (DESIGN §1-2, §4).

- :mod:`trainer.teachers.llm` -- an ensemble of prompts x samples against an OpenAI-compatible endpoint.
- :mod:`trainer.teachers.zeroshot` -- a real offline teacher: the bundled encoder vs. the prompt bank's
  label descriptions, sampled with a temperature.
- :mod:`trainer.teachers.simulated` -- gold labels corrupted by a documented noise model (controlled
  experiments only; always labelled "simulated teacher").
- :mod:`trainer.teachers.scores` -- the teacher-scores JSONL record: read, write, validate.
- :mod:`trainer.teachers.prompts` -- the prompt bank (``trainer/prompts/*.yaml``), rendering and parsers.
- :mod:`trainer.teachers.cache` -- the SQLite response cache.
- :mod:`trainer.teachers.cli` -- ``run_label`` / ``run_calibrate``, what the CLI calls.
"""

from trainer.teachers.scores import ScoreRecord, merge_scores, read_scores, write_scores

__all__ = ["ScoreRecord", "merge_scores", "read_scores", "write_scores"]
