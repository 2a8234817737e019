"""Errors raised by the core for bad input. They always name where the problem is."""

from __future__ import annotations


class TurnwiseError(Exception):
    """Base class of every error turnwise raises on purpose."""


class DataError(TurnwiseError, ValueError):
    """A data file is malformed: the message names the file, the line and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
