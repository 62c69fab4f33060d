"""Counters of what the sandbox saw and did, for tests and the demo's summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from provisioner.sandbox.faults import FaultKind


@dataclass(slots=True)
class SandboxStats:
    """Counts since start (or the last reset); one instance per server.

    ``requests_by_method_status`` keys are ``"POST 200"``; an answer that never
    arrived whole is counted as ``"POST closed"`` or ``"GET truncated"``.
    ``in_flight`` counts requests inside the pipeline at once: handlers never
    wait, so only answers held back by a delay fault overlap.
    """

    requests_by_method_status: Counter[str] = field(default_factory=Counter)
    creates_committed: int = 0
    duplicate_creates: int = 0
    updates_committed: int = 0
    renames_committed: int = 0
    deletes_committed: int = 0
    auth_failures: int = 0
    rate_limited: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0

    def request_started(self) -> None:
        """Note one more request in progress."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_finished(self, method: str, outcome: int | str) -> None:
        """Note how a request ended: its status, or how it broke off."""
        self.in_flight -= 1
        self.requests_by_method_status[f"{method} {outcome}"] += 1

    def reset(self) -> None:
        """Zero every counter; requests still in progress stay counted."""
        in_flight = self.in_flight
        fresh = SandboxStats()
        for counter in fields(self):
            setattr(self, counter.name, getattr(fresh, counter.name))
        self.in_flight = in_flight

    def as_dict(self) -> dict[str, Any]:
        """The counters as plain JSON-ready data, every fault kind present."""
        return {
            "requests_total": sum(self.requests_by_method_status.values()),
            "requests_by_method_status": dict(
                sorted(self.requests_by_method_status.items())
            ),
            "creates_committed": self.creates_committed,
            "duplicate_creates": self.duplicate_creates,
            "updates_committed": self.updates_committed,
            "renames_committed": self.renames_committed,
            "deletes_committed": self.deletes_committed,
            "auth_failures": self.auth_failures,
            "rate_limited": self.rate_limited,
            "faults": {kind.value: self.faults[kind.value] for kind in FaultKind},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }
