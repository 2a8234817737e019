"""The zeroshot teacher's encoder runtime: the parity check is a typed error, never a silent fallback."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.teachers.encoder_runtime import PARITY_TOL, Encoder, EncoderParityError, check_parity
from turnwise.errors import TurnwiseError


def _const(value: float):
    return lambda texts: np.full((len(texts), 4), value, dtype=np.float32)


def test_parity_within_tolerance_returns_the_difference():
    assert check_parity(_const(0.5), _const(0.5)) == 0.0
    assert check_parity(_const(0.5), _const(0.5 + PARITY_TOL / 2)) == pytest.approx(PARITY_TOL / 2, rel=1e-3)


def test_parity_failure_is_a_typed_error_with_the_max_difference(tmp_path):
    with pytest.raises(EncoderParityError, match=r"differs from PyTorch by 2\.50e-02") as err:
        check_parity(_const(0.0), _const(0.025), path=tmp_path / "g.onnx")
    assert isinstance(err.value, TurnwiseError)  # the CLI reports it like every other turnwise error
    assert err.value.max_diff == pytest.approx(0.025)
    assert err.value.tolerance == PARITY_TOL
    assert "g.onnx" in str(err.value)


@pytest.fixture
def no_onnx(monkeypatch: pytest.MonkeyPatch):
    """Make the ONNX session step raise a chosen error (no export: the PyTorch model still loads for real)."""

    def use(error: Exception) -> None:
        def session(self):
            raise error

        monkeypatch.setattr(Encoder, "_onnx_session", session)

    return use


def test_auto_falls_back_to_torch_only_when_onnx_runtime_is_unusable(no_onnx, caplog):
    no_onnx(ImportError("no onnxruntime"))
    enc = Encoder(backend="auto")
    assert enc.backend == "torch" and enc.session is None
    assert "ONNX Runtime encoder unavailable" in caplog.text
    with pytest.raises(ImportError):
        Encoder(backend="onnx")


def test_a_parity_failure_is_raised_even_with_auto(no_onnx):
    no_onnx(EncoderParityError(0.5, PARITY_TOL))
    for backend in ("auto", "onnx"):
        with pytest.raises(EncoderParityError):
            Encoder(backend=backend)

