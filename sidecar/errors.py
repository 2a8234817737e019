"""The sidecar's errors."""

from __future__ import annotations

from turnwise.errors import TurnwiseError


class SidecarError(TurnwiseError):
    """The sidecar cannot do what it was configured to do (the message says what to set)."""


class Interrupted(Exception):
    """Raised inside a finetune when the sidecar was asked to stop."""
