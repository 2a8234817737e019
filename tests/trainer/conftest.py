"""Fixtures of the trainer tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def encoder_cache_in_tmp(tmp_path_factory):
    """The teachers' exported ONNX encoder and embedding caches go to a temporary folder, not the user's
    ~/.cache (a module opts in with ``pytestmark = pytest.mark.usefixtures("encoder_cache_in_tmp")``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TURNWISE_CACHE_DIR", str(tmp_path_factory.mktemp("encoders")))
        yield
