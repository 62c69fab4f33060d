"""Fixed-window rate limit per credential, with a lockout like Cloudflare's.

Each credential has its own window of ``quota`` requests. The window starts at
the credential's first request and is re-anchored by the first request after it
ended. The request that would go over the quota is refused and locks the
credential out for ``lockout_s`` from that moment; every request during the
lockout is refused too, without extending it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    """The limiter's verdict on one request, with what the headers report."""

    allowed: bool
    remaining: int
    reset_s: float
    retry_after_s: float | None = None
    lockout_started: bool = False


@dataclass(slots=True)
class _Window:
    """One credential's state; ``count`` never exceeds the quota."""

    start_s: float
    count: int = 0
    locked_until_s: float = float("-inf")


class FixedWindowLimiter:
    """Counts requests per credential key against a quota per window."""

    def __init__(
        self,
        quota: int,
        window_s: float,
        lockout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.quota = quota
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self.lockouts = 0
        self.max_requests_in_window = 0

    def check(self, key: str) -> Decision:
        """Count one request of ``key`` and say whether it may proceed."""
        now_s = self._clock()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(start_s=now_s)

        if now_s < window.locked_until_s:
            left_s = window.locked_until_s - now_s
            reset_s = max(left_s, window.start_s + self.window_s - now_s)
            return Decision(False, 0, reset_s, retry_after_s=left_s)

        if now_s >= window.start_s + self.window_s:
            window.start_s = now_s
            window.count = 0
        reset_s = window.start_s + self.window_s - now_s

        if window.count >= self.quota:
            window.locked_until_s = now_s + self.lockout_s
            self.lockouts += 1
            return Decision(
                False,
                0,
                max(reset_s, self.lockout_s),
                retry_after_s=self.lockout_s,
                lockout_started=True,
            )

        window.count += 1
        self.max_requests_in_window = max(self.max_requests_in_window, window.count)
        return Decision(True, self.quota - window.count, reset_s)

    def reset_counters(self) -> None:
        """Zero the statistics, keeping every credential's window and lockout."""
        self.lockouts = 0
        self.max_requests_in_window = 0

    def headers(self, decision: Decision) -> dict[str, str]:
        """The IETF draft headers Cloudflare sends, plus Retry-After on a 429."""
        headers = {
            "Ratelimit": (
                f'"default";r={decision.remaining};t={whole_seconds(decision.reset_s)}'
            ),
            "Ratelimit-Policy": (
                f'"default";q={self.quota};w={whole_seconds(self.window_s)}'
            ),
        }
        if decision.retry_after_s is not None:
            headers["Retry-After"] = str(whole_seconds(decision.retry_after_s))
        return headers


def whole_seconds(duration_s: float) -> int:
    """Round a positive duration up to whole seconds, as the headers require.

    A client that waits the rounded value is never early; zero only for zero.
    """
    return max(0, math.ceil(duration_s - 1e-9))
