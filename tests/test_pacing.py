"""The pacer: own budget, the server's word, and pauses, on a fake clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from provisioner.pacing import OtherClients, Pacer, parse_budget, retry_after_s


class FakeTime:
    """A clock that moves only when a caller sleeps."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.now_s += delay_s
        await asyncio.sleep(0)


def make_pacer(quota: int, window_s: float, time: FakeTime) -> Pacer:
    return Pacer(quota, window_s, clock=time.clock, sleep=time.sleep)


async def test_admits_exactly_the_quota_in_each_window() -> None:
    """With instant answers, each window admits the quota: no more, no fewer."""
    time = FakeTime()
    pacer = make_pacer(10, 5.0, time)
    admitted_at = []

    for _ in range(45):
        ticket = await pacer.acquire()
        admitted_at.append(time.now_s)
        pacer.release(ticket)

    per_window = Counter(int(at // 5.0) for at in admitted_at)
    assert [per_window[w] for w in range(4)] == [10, 10, 10, 10]
    assert per_window[4] == 5


async def test_no_window_anywhere_holds_more_than_the_quota() -> None:
    """Any span of window_s seconds holds at most quota admissions (sliding)."""
    time = FakeTime()
    pacer = make_pacer(7, 3.0, time)
    admitted_at = []

    for index in range(60):
        ticket = await pacer.acquire()
        admitted_at.append(time.now_s)
        time.now_s += 0.05 * (index % 4)  # answers of varying latency
        pacer.release(ticket)

    for start in admitted_at:
        inside = [a for a in admitted_at if start <= a < start + 3.0]
        assert len(inside) <= 7


async def test_slot_frees_a_window_after_the_answer_not_the_send() -> None:
    """A slow answer keeps its slot until window_s after it arrived."""
    time = FakeTime()
    pacer = make_pacer(1, 5.0, time)

    first = await pacer.acquire()
    time.now_s = 2.0  # the answer takes two seconds
    pacer.release(first)
    await pacer.acquire()

    assert time.now_s == pytest.approx(7.0)


async def test_waits_for_a_request_in_flight_to_finish() -> None:
    """With every slot held by calls in flight, a caller waits for a release."""
    time = FakeTime()
    pacer = make_pacer(1, 1.0, time)
    ticket = await pacer.acquire()
    waiter = asyncio.create_task(pacer.acquire())
    await asyncio.sleep(0)

    assert not waiter.done()
    pacer.release(ticket)
    await asyncio.wait_for(waiter, 1.0)

    assert time.now_s == pytest.approx(1.0)


async def test_server_remaining_caps_sends_until_reset() -> None:
    """When an answer says r remain for t seconds, at most r go out before then."""
    time = FakeTime()
    pacer = make_pacer(100, 10.0, time)
    ticket = await pacer.acquire()
    pacer.release(ticket, {"Ratelimit": '"default";r=3;t=4'})
    admitted_at = []

    for _ in range(5):
        t = await pacer.acquire()
        admitted_at.append(time.now_s)
        pacer.release(t)

    assert admitted_at[:3] == [0.0, 0.0, 0.0]
    assert admitted_at[3] >= 4.0


async def test_server_remaining_counts_our_requests_sent_after_it() -> None:
    """Requests sent after the one whose answer reported r count against r."""
    time = FakeTime()
    pacer = make_pacer(100, 10.0, time)
    first = await pacer.acquire()
    later = [await pacer.acquire() for _ in range(2)]

    pacer.release(first, {"Ratelimit": '"default";r=3;t=4'})
    for t in later:
        pacer.release(t)
    await pacer.acquire()
    at_fourth = time.now_s

    assert at_fourth == 0.0
    await pacer.acquire()
    assert time.now_s >= 4.0


async def test_policy_header_never_makes_it_faster_than_settings() -> None:
    """A server quota above the settings' is ignored; one below is adopted."""
    time = FakeTime()
    pacer = make_pacer(10, 5.0, time)

    t = await pacer.acquire()
    pacer.release(t, {"Ratelimit-Policy": '"default";q=1000;w=5'})
    assert pacer.quota == 10
    t = await pacer.acquire()
    pacer.release(t, {"Ratelimit-Policy": '"default";q=4;w=60'})

    assert (pacer.quota, pacer.window_s) == (4, 60.0)


async def test_pause_holds_every_caller() -> None:
    """A pause delays every waiting caller, not only the one that saw the 429."""
    time = FakeTime()
    pacer = make_pacer(100, 1.0, time)

    pacer.rate_limited(3.0)
    times = []
    for _ in range(3):
        t = await pacer.acquire()
        times.append(time.now_s)
        pacer.release(t)

    assert min(times) >= 3.0
    assert pacer.rate_limited_count == 1


async def test_pause_without_hint_backs_off_from_a_floor() -> None:
    """A 429 with no hint pauses at least a second, doubling up to one window."""
    pacer = Pacer(10, 5.0)

    pauses = [pacer.rate_limited(None) for _ in range(5)]

    assert pauses == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_parse_ietf_headers() -> None:
    """Ratelimit and Ratelimit-Policy parameters are read."""
    budget = parse_budget(
        {
            "Ratelimit": '"default";r=50;t=30',
            "Ratelimit-Policy": '"default";q=1200;w=300',
        },
        now_epoch_s=0.0,
    )

    assert (budget.remaining, budget.reset_s, budget.quota, budget.window_s) == (
        50,
        30.0,
        1200,
        300.0,
    )


def test_parse_legacy_headers_with_http_date() -> None:
    """x-ratelimit-* are read, with the reset as an HTTP date."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    reset = format_datetime(now + timedelta(seconds=42), usegmt=True)

    budget = parse_budget(
        {
            "x-ratelimit-limit": "1200",
            "x-ratelimit-remaining": "7",
            "x-ratelimit-reset": reset,
        },
        now_epoch_s=now.timestamp(),
    )

    assert (budget.remaining, budget.quota) == (7, 1200)
    assert budget.reset_s == pytest.approx(42.0)


@pytest.mark.parametrize(
    ("value", "expected_s"),
    [("120", 120.0), ("1.5", 1.5), ("Thu, 01 Jan 2026 00:00:10 GMT", 10.0)],
)
def test_retry_after_forms(value: str, expected_s: float) -> None:
    """Retry-After is read as whole seconds, a decimal, or an HTTP date."""
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

    assert retry_after_s({"Retry-After": value}, now_epoch_s=now) == expected_s


def test_retry_after_falls_back_to_ratelimit_reset() -> None:
    """Without Retry-After, the t= of Ratelimit says how long to wait."""
    assert retry_after_s({"Ratelimit": '"default";r=0;t=9'}, now_epoch_s=0) == 9.0


def test_garbage_headers_are_ignored() -> None:
    """Unreadable budget headers give no information rather than an error."""
    budget = parse_budget(
        {"Ratelimit": "nonsense", "x-ratelimit-remaining": "lots"}, now_epoch_s=0
    )

    assert budget.remaining is None
    assert retry_after_s({"Retry-After": "soon"}, now_epoch_s=0) is None


async def test_requests_of_an_earlier_process_count_until_they_expire() -> None:
    """Budget spent before a restart holds back sends until its window passes."""
    time = FakeTime()
    pacer = make_pacer(3, 10.0, time)

    inside = pacer.assume_spent([1.0, 2.0, 30.0])
    first = await pacer.acquire()
    at_first = time.now_s
    await pacer.acquire()

    assert inside == 2
    assert at_first == 0.0
    assert time.now_s == pytest.approx(8.0)
    pacer.release(first)


def test_others_spend_is_read_from_the_first_answer_of_a_window() -> None:
    """Budget already gone at our first answer is the others' rate since the start."""
    others = OtherClients()

    others.observe(0, remaining=50, reset_at=5.0, now=0.0, quota=100, window_s=10.0)

    assert others.rate_per_s(0.0, cap_per_s=10.0) == pytest.approx(49 / 5)


def test_our_own_requests_are_not_counted_as_others() -> None:
    """When remaining falls only by what we sent, the others spend nothing."""
    others = OtherClients()

    others.observe(0, remaining=99, reset_at=10.0, now=0.0, quota=100, window_s=10.0)
    others.observe(5, remaining=94, reset_at=10.0, now=1.0, quota=100, window_s=10.0)
    others.observe(9, remaining=88, reset_at=10.0, now=2.0, quota=100, window_s=10.0)

    assert others.rate_per_s(2.0, cap_per_s=10.0) == pytest.approx(2 / 3.0)


def test_others_rate_is_capped_at_the_budget_rate() -> None:
    """However the numbers fall, others cannot spend faster than the whole budget."""
    others = OtherClients()

    others.observe(0, remaining=0, reset_at=9.9, now=0.0, quota=100, window_s=10.0)

    assert others.rate_per_s(0.0, cap_per_s=10.0) == 10.0


async def test_server_policy_makes_room_for_other_clients() -> None:
    """Seeing others spend, the pacer keeps their share and spreads its own."""
    time = FakeTime()
    pacer = make_pacer(100, 10.0, time)
    ticket = await pacer.acquire()

    pacer.release(
        ticket,
        {"Ratelimit": '"default";r=80;t=5', "Ratelimit-Policy": '"default";q=100;w=10'},
    )
    admitted = []
    for _ in range(3):
        t = await pacer.acquire()
        admitted.append(time.now_s)
        pacer.release(t)

    # Others spent 19 in 5 s: 26 are kept for them, 54 spread over 5 s.
    assert admitted == pytest.approx([5 / 54, 2 * 5 / 54, 3 * 5 / 54])


async def test_others_at_the_limit_leave_nothing_until_the_reset() -> None:
    """When others are spending the rest of the window, nothing more is sent."""
    time = FakeTime()
    pacer = make_pacer(100, 10.0, time)
    ticket = await pacer.acquire()

    pacer.release(
        ticket,
        {"Ratelimit": '"default";r=50;t=5', "Ratelimit-Policy": '"default";q=100;w=10'},
    )
    await pacer.acquire()

    assert time.now_s == pytest.approx(5.0)


async def test_reset_estimate_keeps_the_earliest_bound_in_a_window() -> None:
    """Whole-second t values only ever tighten the reset within one window."""
    time = FakeTime()
    pacer = make_pacer(100, 10.0, time)
    first = await pacer.acquire()
    second = await pacer.acquire()

    pacer.release(first, {"Ratelimit": '"default";r=0;t=3'})
    time.now_s = 0.6
    pacer.release(second, {"Ratelimit": '"default";r=0;t=3'})
    await pacer.acquire()

    assert time.now_s == pytest.approx(3.0)


def test_a_pause_is_capped() -> None:
    """A Retry-After of a day pauses only max_pause_s; the deadline does the rest."""
    pacer = Pacer(10, 5.0, max_pause_s=900.0)

    assert pacer.rate_limited(86_400.0) == 900.0
