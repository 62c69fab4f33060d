"""Which failures are tried again, how long to wait, and when to give up.

Retried: ``TransientError`` (429, 5xx, unreadable answers, timeouts, resets,
refused connections), but only for calls that are safe to repeat: reads, and
composite steps that look a name up before changing it. A mutating call whose
outcome is unknown is never repeated blindly; ``PermanentError`` and
``CredentialsRefusedError`` are never retried.

The first attempt runs bare: the retry machinery is built only once a call has
failed in a way worth retrying, and takes that failure as its own first
attempt. Most calls succeed at once, and they cost no more than the call.

Waiting: after a 429 the pacer already holds every worker until the server's
``Retry-After``, so the retry itself waits nothing more; other transient
failures back off exponentially with full jitter. Stopping: after
``max_attempts`` failures that were not 429s, or ``deadline_s`` after the
first attempt (by default longer than Cloudflare's 5-minute lockout), or as
soon as the run is asked to stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import structlog

if TYPE_CHECKING:
    from tenacity import RetryCallState

from provisioner.errors import ApiError, RateLimitedError, TransientError

log = structlog.get_logger("provisioner.retry")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Attempted(Generic[T]):
    """A call's result and how many attempts it took."""

    value: T
    attempts: int


@dataclass
class RetryPolicy:
    """The run's retry rules; ``sleep`` is injectable so tests do not wait."""

    max_attempts: int = 10
    deadline_s: float = 900.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    sleep: Sleep = asyncio.sleep
    should_stop: Callable[[], bool] = lambda: False
    retries_scheduled: int = field(default=0, init=False)

    def is_retryable(self, exc: BaseException, *, idempotent: bool) -> bool:
        """True for a transient failure of a call that is safe to repeat."""
        if not isinstance(exc, TransientError):
            return False
        return idempotent or not exc.may_have_committed

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        op: str,
        name: str,
        idempotent: bool,
    ) -> Attempted[T]:
        """Run ``fn`` until it succeeds or the policy gives up (re-raising)."""
        started_s = time.monotonic()
        try:
            return Attempted(await fn(), 1)
        except Exception as exc:
            if not self.is_retryable(exc, idempotent=idempotent):
                if isinstance(exc, ApiError):
                    exc.attempts = 1
                raise
            first_failure = exc

        replayed = False

        async def replay_then_call() -> T:
            nonlocal replayed
            if not replayed:
                replayed = True
                raise first_failure
            return await fn()

        return await self._retry(
            replay_then_call,
            op=op,
            name=name,
            idempotent=idempotent,
            earlier_s=time.monotonic() - started_s,
        )

    async def _retry(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        op: str,
        name: str,
        idempotent: bool,
        earlier_s: float,
    ) -> Attempted[T]:
        """Tenacity's loop over ``fn``, ``earlier_s`` into the call's deadline."""
        # Imported on the first failure: a run whose calls all succeed at once
        # never loads it.
        from tenacity import AsyncRetrying, retry_if_exception, wait_random_exponential

        backoff = wait_random_exponential(
            multiplier=self.backoff_initial_s, max=self.backoff_max_s
        )
        failures_counted = 0

        def elapsed_s(state: RetryCallState) -> float:
            return earlier_s + (state.seconds_since_start or 0.0)

        def wait(state: RetryCallState) -> float:
            if isinstance(_error(state), RateLimitedError):
                return 0.0  # the pacer holds every worker until the server says
            left_s = self.deadline_s - elapsed_s(state)
            return max(0.0, min(float(backoff(state)), left_s))

        def stop(state: RetryCallState) -> bool:
            nonlocal failures_counted
            if not isinstance(_error(state), RateLimitedError):
                failures_counted += 1
            return (
                failures_counted >= self.max_attempts
                or elapsed_s(state) >= self.deadline_s
                or self.should_stop()
            )

        def before_sleep(state: RetryCallState) -> None:
            self.retries_scheduled += 1
            error = _error(state)
            log.info(
                "retry_scheduled",
                op=op,
                target=name,
                attempt=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 3),
                error=type(error).__name__,
                status=getattr(error, "status", None),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda exc: self.is_retryable(exc, idempotent=idempotent)
            ),
            wait=wait,
            stop=stop,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    value = await fn()
                if (
                    attempt.retry_state.outcome
                    and not attempt.retry_state.outcome.failed
                ):
                    return Attempted(value, attempt.retry_state.attempt_number)
        except ApiError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise
        raise AssertionError("tenacity ended without a result or an error")


def _error(state: RetryCallState) -> BaseException | None:
    if state.outcome is None or not state.outcome.failed:
        return None
    return state.outcome.exception()
