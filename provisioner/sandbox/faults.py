"""Seeded fault injection: which request misbehaves, and how.

Every fault is drawn from one ``random.Random(seed)``, one draw per API request
that got past the rate limit and authentication, so the same seed and the same
request sequence give the same faults. No draw happens when every rate is zero.
"""

from __future__ import annotations

import enum
import random

from provisioner.sandbox.config import FaultRates


class FaultKind(enum.StrEnum):
    """How an answer goes wrong; values are the names used in config and stats."""

    ERROR_500 = "error_500"  # 500 with a JSON envelope, nothing committed
    HTML_502 = "html_502"  # the edge's HTML page, nothing committed
    HTML_503 = "html_503"
    CLOSE = "close"  # connection closed without an answer, nothing committed
    TRUNCATED = "truncated"  # body shorter than its Content-Length, then close
    SUCCESS_FALSE = "success_false"  # 200 whose envelope says failure
    COMMIT_THEN_CLOSE = "commit_then_close"  # committed, then no answer
    COMMIT_THEN_DELAY = "commit_then_delay"  # committed, answered too late
    REVOKED = "revoked"  # the credential was revoked (revoke_after)


COMMIT_KINDS = frozenset({FaultKind.COMMIT_THEN_CLOSE, FaultKind.COMMIT_THEN_DELAY})


class FaultInjector:
    """Picks at most one fault per request from the configured rates."""

    def __init__(self, rates: FaultRates, seed: int | None) -> None:
        self.rates = rates
        self._rng = random.Random(seed)
        self._enabled = rates.any()

    def choose(self, *, mutating: bool) -> FaultKind | None:
        """Draw the fault for one request, or None for a normal answer.

        The commit kinds sit last in the draw order, so skipping them for a
        read leaves every other kind at exactly its configured probability.
        """
        if not self._enabled:
            return None

        draw = self._rng.random()
        threshold = 0.0
        for name, rate in self.rates.items():
            kind = FaultKind(name)
            if kind in COMMIT_KINDS and not mutating:
                continue
            threshold += rate
            if draw < threshold:
                return kind
        return None


class Revocations:
    """Revokes a credential after its Nth authenticated call (None: never)."""

    def __init__(self, revoke_after: int | None) -> None:
        self.revoke_after = revoke_after
        self._calls: dict[str, int] = {}
        self._revoked: set[str] = set()

    def admit(self, key: str) -> bool:
        """Count one authenticated call of ``key``; False once it is revoked."""
        if self.revoke_after is None:
            return True
        if key in self._revoked:
            return False

        calls = self._calls.get(key, 0) + 1
        self._calls[key] = calls
        if calls > self.revoke_after:
            self._revoked.add(key)
            return False
        return True

    def is_revoked(self, key: str) -> bool:
        """Whether ``key`` has been revoked."""
        return key in self._revoked
