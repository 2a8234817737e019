"""Teachers: turn dialogues into teacher scores S in [0, 1] per turn and class.

- :mod:`trainer.teachers.llm` -- an ensemble of prompts x samples against an OpenAI-compatible endpoint
  (requests planned by :mod:`trainer.teachers.llm_requests`, fetched by :mod:`trainer.teachers.llm_fetch`).
- :mod:`trainer.teachers.zeroshot` -- a real offline teacher: the bundled encoder vs. the prompt bank's
  label descriptions, sampled with a temperature; its fast encoder (ONNX Runtime, parity-checked against
  PyTorch) is :mod:`trainer.teachers.encoder_runtime`.
- :mod:`trainer.teachers.fewshot` -- a real offline teacher from a gold pool: k labelled turns per class,
  nearest class prototype (or kNN) over the same encoder's embeddings, sampled with a temperature.
- :mod:`trainer.teachers.simulated` -- gold labels corrupted by a documented noise model (controlled
  experiments only; always labelled "simulated teacher").
- :mod:`trainer.teachers.scores` -- the teacher-scores JSONL record: read, write, validate.
- :mod:`trainer.teachers.prompts` -- the prompt bank (``trainer/prompts/*.yaml``) and its rendering;
  :mod:`trainer.teachers.parsers` reads the answers into votes.
- :mod:`trainer.teachers.cache` -- the SQLite cache (LLM responses, zeroshot embeddings).
- :mod:`trainer.teachers.calibration` -- how good the scores are: ECE vs N, reliability, the H2 check
  (figures: :mod:`trainer.teachers.calibration_plots`; ``trainer.calibration`` re-exports it).
- :mod:`trainer.teachers.cli` -- ``run_label`` / ``run_calibrate``, what the CLI calls.
"""

from trainer.teachers.scores import ScoreRecord, merge_scores, read_scores, write_scores

__all__ = ["ScoreRecord", "merge_scores", "read_scores", "write_scores"]
