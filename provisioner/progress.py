"""A progress bar on a terminal (rich): rows done, rate, time left.

Nothing is drawn off a terminal or with ``--quiet``; log lines then carry
the same facts.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class ProgressDisplay:
    """Counts outcomes as rows finish; draws only on an interactive stderr."""

    def __init__(self, *, total: int, enabled: bool, stream: IO[str] | None = None):
        out = stream if stream is not None else sys.stderr
        self.enabled = enabled and out.isatty()
        self.done = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self.enabled:
            # Imported here: runs off a terminal (cron, CI) never draw.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]provisioning"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeRemainingColumn(),
                console=Console(file=out),
                transient=False,
            )
            self._task = self._progress.add_task("rows", total=total, rate="-")

    def __enter__(self) -> ProgressDisplay:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, outcome: str) -> None:
        """One more row settled (with this outcome)."""
        self.done += 1
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[0]
        speed = task.speed
        self._progress.update(
            self._task, advance=1, rate=f"{speed:.1f}" if speed else "-"
        )
