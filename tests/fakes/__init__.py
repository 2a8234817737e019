"""Fakes for boundaries the tests cannot run for real (an LLM endpoint)."""
