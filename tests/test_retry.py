"""Retry decisions: what is retried, how long it waits, and when it stops."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.errors import (
    CredentialsRefusedError,
    PermanentError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from provisioner.retry import RetryPolicy


class RecordingSleep:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.delays_s: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays_s.append(delay_s)


def failing(*errors: Exception, then: str = "done"):  # type: ignore[no-untyped-def]
    """An async callable raising each error in turn, then returning ``then``."""
    queue = list(errors)
    calls = []

    async def fn() -> str:
        calls.append(1)
        if queue:
            raise queue.pop(0)
        return then

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def policy(**kw: object) -> tuple[RetryPolicy, RecordingSleep]:
    sleep = RecordingSleep()
    return RetryPolicy(sleep=sleep, **kw), sleep  # type: ignore[arg-type]


async def test_transient_errors_are_retried_until_success() -> None:
    """5xx and transport faults of a safe call are retried; attempts are counted."""
    retry, sleep = policy(backoff_initial_s=0.5, backoff_max_s=4.0)
    fn = failing(ServerError("boom", status=502), TransportError("reset"))

    result = await retry.call(fn, op="list", name="a", idempotent=True)

    assert (result.value, result.attempts) == ("done", 3)
    assert len(sleep.delays_s) == 2
    assert all(0 <= d <= 4.0 for d in sleep.delays_s)
    assert retry.retries_scheduled == 2


async def test_unknown_outcome_of_unsafe_call_is_not_resent() -> None:
    """A mutating call that may have committed is never blindly repeated."""
    retry, _ = policy()
    fn = failing(TransportError("timeout", may_have_committed=True))

    with pytest.raises(TransportError):
        await retry.call(fn, op="create", name="a", idempotent=False)

    assert len(fn.calls) == 1  # type: ignore[attr-defined]


async def test_call_that_surely_did_not_commit_is_resent() -> None:
    """A refused connection or a 429 is safe to send again, even for a create."""
    retry, _ = policy()
    fn = failing(
        TransportError("refused", may_have_committed=False),
        RateLimitedError("429", retry_after_s=1.0, may_have_committed=False),
    )

    result = await retry.call(fn, op="create", name="a", idempotent=False)

    assert result.attempts == 3


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("bad", status=400),
        CredentialsRefusedError("no", status=403),
    ],
)
async def test_permanent_and_credential_errors_are_not_retried(
    error: Exception,
) -> None:
    """4xx and refused credentials are raised after one attempt."""
    retry, sleep = policy()
    fn = failing(error)

    with pytest.raises(type(error)):
        await retry.call(fn, op="list", name="a", idempotent=True)

    assert sleep.delays_s == []


async def test_rate_limited_retries_wait_on_the_pacer_not_here() -> None:
    """After a 429 the retry adds no sleep of its own: the pacer holds everyone."""
    retry, sleep = policy()
    fn = failing(RateLimitedError("429", retry_after_s=300.0, may_have_committed=False))

    await retry.call(fn, op="create", name="a", idempotent=True)

    assert sleep.delays_s == [0.0]


async def test_gives_up_after_max_attempts() -> None:
    """Failures other than 429s stop after max_attempts, re-raising the last."""
    retry, _ = policy(max_attempts=3)
    fn = failing(*[ServerError(f"e{i}", status=500) for i in range(5)])

    with pytest.raises(ServerError, match="e2"):
        await retry.call(fn, op="list", name="a", idempotent=True)

    assert len(fn.calls) == 3  # type: ignore[attr-defined]


async def test_429s_do_not_use_up_attempts() -> None:
    """A long lockout's 429s do not count against max_attempts."""
    retry, _ = policy(max_attempts=2)
    limited = [
        RateLimitedError("429", retry_after_s=1.0, may_have_committed=False)
        for _ in range(6)
    ]
    fn = failing(*limited, ServerError("once", status=500))

    result = await retry.call(fn, op="list", name="a", idempotent=True)

    assert result.attempts == 8


async def test_stops_when_the_run_is_stopping() -> None:
    """No retry is scheduled once the run has been asked to stop."""
    retry, _ = policy()
    retry.should_stop = lambda: True
    fn = failing(ServerError("x", status=500))

    with pytest.raises(ServerError):
        await retry.call(fn, op="list", name="a", idempotent=True)

    assert len(fn.calls) == 1  # type: ignore[attr-defined]


async def test_deadline_stops_retrying() -> None:
    """Past deadline_s since the first attempt, the policy gives up."""
    retry, _ = policy(deadline_s=0.000001)
    fn = failing(ServerError("x", status=500), ServerError("y", status=500))

    with pytest.raises(ServerError):
        await retry.call(fn, op="list", name="a", idempotent=True)

    assert len(fn.calls) == 1  # type: ignore[attr-defined]


async def test_backoff_never_sleeps_past_the_deadline() -> None:
    """A backoff longer than the time left is clipped to the deadline."""
    retry, sleep = policy(deadline_s=1.0, backoff_initial_s=100.0, backoff_max_s=100.0)
    fn = failing(ServerError("x", status=500), ServerError("y", status=500))

    await retry.call(fn, op="list", name="a", idempotent=True)

    assert all(delay_s <= 1.0 for delay_s in sleep.delays_s)


async def test_a_call_that_succeeds_at_once_builds_no_retry_machinery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first-time success never constructs tenacity's loop (the common path)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("AsyncRetrying built for a call that succeeded")

    monkeypatch.setattr("tenacity.AsyncRetrying", refuse)
    retry, sleep = policy()

    result = await retry.call(failing(), op="create", name="a", idempotent=True)

    assert (result.value, result.attempts) == ("done", 1)
    assert sleep.delays_s == []


async def test_first_attempt_time_counts_toward_the_deadline() -> None:
    """The time the bare first attempt took is part of the retry deadline."""
    retry, sleep = policy(deadline_s=0.05)

    async def slow_then_fail() -> str:
        await asyncio.sleep(0.06)
        raise ServerError("x", status=500)

    with pytest.raises(ServerError) as caught:
        await retry.call(slow_then_fail, op="list", name="a", idempotent=True)

    assert caught.value.attempts == 1
    assert sleep.delays_s == []


async def test_non_retryable_first_failure_reports_one_attempt() -> None:
    """A permanent error on the first attempt carries attempts == 1."""
    retry, _ = policy()
    fn = failing(PermanentError("bad", status=400))

    with pytest.raises(PermanentError) as caught:
        await retry.call(fn, op="create", name="a", idempotent=True)

    assert caught.value.attempts == 1
