"""Pacing to a request budget: a sliding window whose slots free on completion.

Cloudflare counts requests per user or token in a window and locks the user
out for the whole window when one request too many arrives. The limiter here
keeps three invariants, each stricter than the one before it is needed:

1. Own budget. At most ``quota`` requests occupy the window. A request holds
   its slot from the moment it is admitted until ``window_s`` after its answer
   arrived (or it failed). The server saw the request somewhere between those
   two instants, so any ``quota + 1`` requests it saw are more than
   ``window_s`` apart, whatever the network delays: no fixed or sliding window
   on the server can hold more than ``quota`` of them.

2. Server's word. When an answer says ``r`` requests remain for ``t``
   seconds, no more than ``r`` are sent until then, less those of ours the
   server had not yet counted (sent after that request, or still in flight when
   its answer came) and less what other clients of the same token are expected
   to spend meanwhile, projected from what they spent so far.

3. Pause. A 429 (or anything else that asks for a pause) holds every caller
   until the pause ends; pauses only ever extend.

Concurrency is not limited here; that is a separate knob.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import structlog

from provisioner.errors import RunInterruptedError

log = structlog.get_logger("provisioner.pacing")

Clock = Callable[[], float]

# What other clients of the token are expected to spend is held back with this
# margin (and two requests more): their pace varies, a lockout costs a window.
OTHERS_MARGIN = 1.25

# A 429 without Retry-After or Ratelimit pauses at least this long.
NO_HINT_PAUSE_FLOOR_S = 1.0

# A reset "in seconds" larger than this is a Unix timestamp (2001 onwards).
_EPOCH_THRESHOLD_S = 1e9
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServerBudget:
    """What one answer's headers said about the budget."""

    remaining: int | None = None
    reset_s: float | None = None
    quota: int | None = None
    window_s: float | None = None


# What answers without any rate-limit header say.
_NO_BUDGET = ServerBudget()

# One admitted request: its sequence number, handed back to ``Pacer.release``.
Ticket = int


class Pacer:
    """One limiter shared by every worker of a run."""

    def __init__(
        self,
        quota: int,
        window_s: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_pause_s: float = 900.0,
    ) -> None:
        if quota < 1 or window_s <= 0:
            raise ValueError("a budget needs at least 1 request per positive window")
        self.quota = quota
        self.window_s = window_s
        self.max_pause_s = max_pause_s
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._aborted = asyncio.Event()

        self._issued = 0
        self._in_flight: set[int] = set()
        self._expiries: deque[float] = deque()
        self._paused_until = 0.0

        self._server_seq = -1
        self._server_allowance = 0
        self._server_reset_at = 0.0
        self._others = OtherClients()
        self._server_remaining = 0
        self._spread_interval_s = 0.0
        self._last_admitted_at = -math.inf
        self._server_quota: int | None = None
        self._server_window_s: float | None = None

        self._no_hint_pause_s = 0.0

        self.requests_admitted = 0
        self.rate_limited_count = 0
        self.waited_s = 0.0

    # -- admission ----------------------------------------------------------

    async def acquire(self) -> Ticket:
        """Wait until a request may be sent, then take its slot.

        Raises RunInterruptedError once ``abort`` was called, also while waiting.
        """
        ticket = self.try_acquire()
        if ticket is not None:
            return ticket
        async with self._lock:
            while True:
                if self._aborted.is_set():
                    raise RunInterruptedError(
                        "the run is stopping; nothing more is sent"
                    )
                now = self._clock()
                delay_s = self._delay_s(now)
                if delay_s == 0.0:
                    return self._admit(now)

                self._changed.clear()
                if math.isinf(delay_s):
                    await self._first_of(self._changed.wait())
                else:
                    await self._first_of(self._sleep(delay_s))
                self.waited_s += max(0.0, self._clock() - now)

    def try_acquire(self) -> Ticket | None:
        """Take a slot if one is free now and nobody waits for one, else None.

        Nobody waits when the lock is free (a waiter holds it), so a caller
        that takes a free slot here jumps no queue; this is ``acquire``
        without its await, for the common case.
        """
        if self._lock.locked() or self._aborted.is_set():
            return None
        now = self._clock()
        if self._delay_s(now) == 0.0:
            return self._admit(now)
        return None

    def abort(self) -> None:
        """Wake every waiting caller with RunInterruptedError; admit nothing more."""
        self._aborted.set()

    async def _first_of(self, waiting: Awaitable[object]) -> None:
        """Wait for ``waiting``, or until the pacer is aborted."""
        wait = asyncio.ensure_future(waiting)
        abort = asyncio.ensure_future(self._aborted.wait())
        try:
            await asyncio.wait({wait, abort}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wait, abort):
                task.cancel()

    def _delay_s(self, now: float) -> float:
        """Seconds until a slot may free up; 0 when one is free now."""
        expiries = self._expiries
        while expiries and expiries[0] <= now:
            expiries.popleft()

        delay_s = self._paused_until - now
        if len(self._in_flight) + len(expiries) >= self.quota:
            # A slot held by a request in flight frees only after its answer.
            if not expiries:
                return math.inf
            delay_s = max(delay_s, expiries[0] - now)
        if now < self._server_reset_at:
            if self._server_allowance <= 0:
                delay_s = max(delay_s, self._server_reset_at - now)
            elif self._spread_interval_s > 0:
                # Others share the token: spread what is ours over the window,
                # so their spending keeps showing in the answers.
                spread_at = self._last_admitted_at + self._spread_interval_s
                delay_s = max(delay_s, spread_at - now)

        return delay_s if delay_s > 0.0 else 0.0

    def _admit(self, now: float) -> Ticket:
        ticket = self._issued
        self._last_admitted_at = now
        self._issued += 1
        self._in_flight.add(ticket)
        if now < self._server_reset_at:
            self._server_allowance -= 1
        self.requests_admitted += 1
        return ticket

    # -- feedback -----------------------------------------------------------

    def release(self, ticket: Ticket, headers: Mapping[str, str] | None = None) -> None:
        """Free the ticket's slot ``window_s`` from now; learn from the headers.

        Pass no headers for a 429: a lockout's "0 remaining" says nothing about
        what anyone spent, and the pause already holds everyone.
        """
        now = self._clock()
        self._in_flight.discard(ticket)
        self._expiries.append(now + self.window_s)
        if headers is not None:
            budget = parse_budget(headers, now_epoch_s=time.time())
            if budget is not _NO_BUDGET:
                self._learn(ticket, budget, now)
        self._changed.set()

    def pause_for(self, delay_s: float, reason: str = "rate_limited") -> None:
        """Hold every caller for ``delay_s`` from now (pauses only extend)."""
        until = self._clock() + max(0.0, delay_s)
        if until > self._paused_until:
            self._paused_until = until
            log.warning("pacing_paused", reason=reason, pause_s=round(delay_s, 3))
        self._changed.set()

    def assume_spent(self, ages_s: list[float]) -> int:
        """Count requests sent ``age_s`` ago (by an earlier process) as ours.

        A run restarted after a crash would otherwise start with an empty
        window and spend budget its predecessor already used. Returns how many
        were still inside the window.
        """
        now = self._clock()
        expiries = [now - age + self.window_s for age in ages_s if age < self.window_s]
        merged = sorted([*self._expiries, *(e for e in expiries if e > now)])
        self._expiries = deque(merged)
        return len(expiries)

    def rate_limited(self, retry_after_s: float | None) -> float:
        """A 429 arrived: pause everyone as the server asks, or back off.

        Without a hint the pause starts at a floor and doubles with each 429
        in a row, up to one window. Returns the pause in seconds.
        """
        self.rate_limited_count += 1
        if retry_after_s is not None:
            # A server asking for a day is not waited for: past max_pause_s the
            # retry deadline fails the row instead.
            delay_s = min(retry_after_s, self.max_pause_s)
        else:
            doubled_s = max(self._no_hint_pause_s * 2, NO_HINT_PAUSE_FLOOR_S)
            self._no_hint_pause_s = min(doubled_s, self.window_s)
            delay_s = self._no_hint_pause_s
        self.pause_for(delay_s, reason="rate_limited")
        return delay_s

    @property
    def paused_until(self) -> float:
        """Clock time before which nothing is admitted."""
        return self._paused_until

    def _learn(self, ticket: Ticket, budget: ServerBudget, now: float) -> None:
        self._adopt_policy(budget)
        if budget.remaining is None or budget.reset_s is None:
            return
        if ticket < self._server_seq:
            return  # an older answer than one already heard from

        uncounted = self._issued - ticket - 1
        uncounted += sum(1 for seq in self._in_flight if seq < ticket)
        reset_at = self._reset_at(budget.remaining, now + budget.reset_s, now)
        others = 0
        if self._server_quota is not None:
            # Only with the server's quota known can its count be split.
            window_s = self._server_window_s or self.window_s
            self._others.observe(
                ticket,
                budget.remaining,
                reset_at,
                now,
                quota=self._server_quota,
                window_s=window_s,
            )
            cap_per_s = self._server_quota / window_s
            rate_per_s = self._others.rate_per_s(now, cap_per_s=cap_per_s)
            if rate_per_s > 0:
                others = math.ceil(OTHERS_MARGIN * rate_per_s * (reset_at - now)) + 2

        self._server_seq = ticket
        self._server_remaining = budget.remaining
        self._server_allowance = budget.remaining - uncounted - others
        self._server_reset_at = reset_at
        self._spread_interval_s = 0.0
        if others and self._server_allowance > 0:
            self._spread_interval_s = (reset_at - now) / self._server_allowance

    def _reset_at(self, remaining: int, reported_at: float, now: float) -> float:
        """When the server's window ends, as tightly as the answers allow.

        ``t`` is whole seconds rounded up, so each answer's ``now + t`` is an
        upper bound on the same instant: within one window keep the earliest.
        A rise in ``remaining``, or our estimate passing, means a new window.
        """
        same_window = (
            now < self._server_reset_at and remaining <= self._server_remaining
        )
        if same_window:
            return min(self._server_reset_at, reported_at)
        return reported_at

    def _adopt_policy(self, budget: ServerBudget) -> None:
        if budget.quota is not None:
            self._server_quota = budget.quota
        if budget.window_s is not None:
            self._server_window_s = budget.window_s
        # Never faster than the settings, nor than the server says.
        if budget.quota is not None and 0 < budget.quota < self.quota:
            self.quota = budget.quota
        if budget.window_s is not None and budget.window_s > self.window_s:
            self.window_s = budget.window_s


class OtherClients:
    """How fast other clients of the same token spend the budget.

    At the first answer of a server window, what the server counted beyond
    our one request was spent by others since the window began. Between two
    answers of one window, ``remaining`` falls by what the server counted in
    between; what we sent in between (by sequence number) is ours, the rest is
    theirs. The estimate is the larger of the current window's rate and the
    last window's, never above the whole budget's rate.
    """

    def __init__(self) -> None:
        self._last: tuple[int, int, float] | None = None  # seq, remaining, reset_at
        self._window_since = 0.0
        self._window_spent = 0
        self._previous_rate_per_s = 0.0

    def observe(
        self,
        seq: int,
        remaining: int,
        reset_at: float,
        now: float,
        *,
        quota: int,
        window_s: float,
    ) -> None:
        """Take one answer's ``remaining`` for our request number ``seq``."""
        last, self._last = self._last, (seq, remaining, reset_at)
        # t is whole seconds, so a reset estimate moves by up to 1 s in a window.
        new_window = last is None or remaining > last[1] or reset_at > last[2] + 1.5
        if new_window:
            observed_s = now - self._window_since
            if last is not None and observed_s > 0:
                self._previous_rate_per_s = self._window_spent / observed_s
            elapsed_s = max(1.0, window_s - (reset_at - now))
            self._window_since = now - elapsed_s
            # Ours in the new window: at most what we sent since the last answer
            # of the old one (all we ever sent, at the first answer of a run).
            ours = seq + 1 if last is None else max(1, seq - last[0])
            self._window_spent = max(0, quota - remaining - ours)
            return

        assert last is not None
        if seq > last[0]:
            ours = seq - last[0]
            self._window_spent += max(0, last[1] - remaining - ours)

    def rate_per_s(self, now: float, *, cap_per_s: float) -> float:
        """Requests per second the others are expected to spend."""
        current = self._window_spent / max(now - self._window_since, 0.5)
        return min(cap_per_s, max(current, self._previous_rate_per_s))


def parse_budget(headers: Mapping[str, str], *, now_epoch_s: float) -> ServerBudget:
    """Read ``Ratelimit``/``Ratelimit-Policy`` or the older ``x-ratelimit-*``."""
    current_raw = headers.get("Ratelimit")
    policy_raw = headers.get("Ratelimit-Policy")
    legacy_remaining = headers.get("x-ratelimit-remaining")
    legacy_limit = headers.get("x-ratelimit-limit")
    if current_raw is policy_raw is legacy_remaining is legacy_limit is None:
        return _NO_BUDGET  # a reset alone says nothing of the budget
    remaining = reset_s = window_s = None
    quota = None

    current = _structured_params(current_raw)
    if current:
        remaining = _as_int(current.get("r"))
        reset_s = _as_float(current.get("t"))
    policy = _structured_params(policy_raw)
    if policy:
        quota = _as_int(policy.get("q"))
        window_s = _as_float(policy.get("w"))

    if remaining is None:
        remaining = _as_int(legacy_remaining)
        reset_s = _reset_seconds(headers.get("x-ratelimit-reset"), now_epoch_s)
    if quota is None:
        quota = _as_int(legacy_limit)

    return ServerBudget(remaining, reset_s, quota, window_s)


def retry_after_s(headers: Mapping[str, str], *, now_epoch_s: float) -> float | None:
    """Seconds a 429 asks to wait: ``Retry-After`` (seconds, decimal or date)."""
    raw = headers.get("Retry-After")
    if raw is None:
        current = _structured_params(headers.get("Ratelimit"))
        return _as_float(current.get("t")) if current else None
    return _reset_seconds(raw, now_epoch_s)


def _structured_params(raw: str | None) -> dict[str, str]:
    """Parameters of the first item of an IETF structured list header."""
    if not raw:
        return {}
    first = raw.split(",", 1)[0]
    params = {}
    for part in first.split(";")[1:]:
        key, sep, value = part.strip().partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return params


def _reset_seconds(raw: str | None, now_epoch_s: float) -> float | None:
    """A delay given as seconds, a decimal, or an HTTP date."""
    if raw is None:
        return None
    seconds = _as_float(raw)
    if seconds is not None and seconds > _EPOCH_THRESHOLD_S:
        return max(0.0, seconds - now_epoch_s)  # some servers send a Unix time
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_epoch_s)


def _as_int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def _as_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None
