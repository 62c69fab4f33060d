"""RFC 3339 UTC timestamps, cheap enough for every journal record and log line.

Formatting a datetime costs more than the rest of a journal record; here the
date and time of day are formatted once a second and only the fraction per call.
"""

from __future__ import annotations

import time


class _Clock:
    """The formatted current second, kept until the second changes."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def split(self) -> tuple[str, float]:
        """(``YYYY-MM-DDTHH:MM:SS`` of now, the fraction of the second)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return self._prefix, now - second


_CLOCK = _Clock()


def utc_now_ms() -> str:
    """Now, to the millisecond: ``2026-12-04T06:03:42.219Z``."""
    prefix, fraction_s = _CLOCK.split()
    return f"{prefix}.{int(fraction_s * 1_000):03d}Z"


def utc_now_us() -> str:
    """Now, to the microsecond: ``2026-12-04T06:03:42.219709Z``."""
    prefix, fraction_s = _CLOCK.split()
    return f"{prefix}.{int(fraction_s * 1_000_000):06d}Z"
