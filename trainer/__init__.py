"""turnwise trainer: data adapters, teachers, pairwise pretraining, finetuning, evaluation, experiments."""
