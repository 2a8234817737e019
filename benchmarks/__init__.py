"""Benchmarks: each writes its results under benchmarks/results/."""
