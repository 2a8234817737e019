"""Progress of a teacher labelling a corpus: a bar on a terminal, plain lines in a log.

Teachers report through a ``progress(advance, total=...)`` callback (``ProgressFn``); :func:`labelling`
gives one. Labelling a large corpus takes minutes, and a run writing to a log file (CI, ``nohup``, ``make
evidence``) must not look hung: without a terminal rich draws nothing until the end, so plain lines are
printed instead, every 10 % and at least every ``PLAIN_EVERY_S`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressBar:
    """Adapts a rich Progress task to the teachers' ``progress(advance, total=...)`` callback."""

    PLAIN_EVERY_S = 15.0

    def __init__(self, progress: Progress, description: str):
        self.progress = progress
        self.description = description
        self.task = progress.add_task(description, total=None)
        self.done = 0
        self.total: int | None = None
        self._logged_at = time.monotonic()
        self._logged_tenth = -1

    def __call__(self, advance: int, *, total: int | None = None) -> None:
        if total is not None:
            self.total = total
            self.progress.update(self.task, total=total)
        if advance:
            self.done += advance
            self.progress.advance(self.task, advance)
        if not self.progress.console.is_terminal:
            tenth = self.done * 10 // self.total if self.total else -1
            now = time.monotonic()
            if tenth > self._logged_tenth or now - self._logged_at >= self.PLAIN_EVERY_S:
                self._logged_tenth, self._logged_at = tenth, now
                of = f"/{self.total}" if self.total else ""
                self.progress.console.print(f"{self.description}: {self.done}{of}", highlight=False, markup=False)


@contextmanager
def labelling(description: str, console: Console) -> Iterator[ProgressBar]:
    """A progress callback for one labelling, shown on ``console`` as ``description: done/total``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False, disable=not console.is_terminal) as prog:
        yield ProgressBar(prog, description)
