"""A progress bar on a terminal (tqdm): rows done, rate, time left.

Nothing is drawn off a terminal or with ``--quiet``; log lines then carry
the same facts. tqdm is imported only when a bar is drawn.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


class ProgressDisplay:
    """Counts outcomes as rows finish; draws only on an interactive stderr."""

    def __init__(self, *, total: int, enabled: bool, stream: IO[str] | None = None):
        out = stream if stream is not None else sys.stderr
        self.enabled = enabled and out.isatty()
        self.done = 0
        self._total = total
        self._stream = out
        self._bar: tqdm[Any] | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:
            # Imported here: runs off a terminal (cron, CI) never draw.
            from tqdm import tqdm

            self._bar = tqdm(
                total=self._total,
                desc="provisioning",
                unit="row",
                file=self._stream,
                dynamic_ncols=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def advance(self, outcome: str) -> None:
        """One more row settled (with this outcome)."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
