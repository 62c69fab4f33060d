"""The sandbox's fixed-window rate limit and lockout, moved by a fake clock."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from sandbox_fixtures import (
    KEY_HEADERS,
    TOKEN_HEADERS,
    FakeClock,
    MakeSandbox,
    namespaces_url,
)

from provisioner.sandbox.config import FaultRates
from provisioner.sandbox.ratelimit import Decision, FixedWindowLimiter, whole_seconds

RATELIMIT = re.compile(r'^"default";r=(\d+);t=(\d+)$')


def limiter(
    clock: FakeClock, quota: int = 3, lockout_s: float = 5.0
) -> FixedWindowLimiter:
    """A limiter of ``quota`` per 5 s window on the fake clock."""
    return FixedWindowLimiter(quota, 5.0, lockout_s, clock)


def test_quota_is_allowed_then_the_next_request_starts_a_lockout(
    fake_clock: FakeClock,
) -> None:
    """The first quota requests pass with falling remaining; the next locks out."""
    limit = limiter(fake_clock)

    passed = [limit.check("k") for _ in range(3)]
    refused = limit.check("k")

    assert [d.remaining for d in passed] == [2, 1, 0]
    assert all(d.allowed for d in passed)
    assert refused == Decision(False, 0, 5.0, retry_after_s=5.0, lockout_started=True)
    assert (limit.lockouts, limit.max_requests_in_window) == (1, 3)


def test_lockout_refuses_every_call_without_extending(fake_clock: FakeClock) -> None:
    """During a lockout each call is refused with the time left, once counted."""
    limit = limiter(fake_clock, lockout_s=10.0)
    for _ in range(4):
        limit.check("k")

    fake_clock.advance(4.0)
    during = limit.check("k")
    fake_clock.advance(5.9)
    late = limit.check("k")
    fake_clock.advance(0.1)
    after = limit.check("k")

    assert (during.allowed, during.retry_after_s) == (False, 6.0)
    assert not during.lockout_started
    assert late.retry_after_s == pytest.approx(0.1)
    assert after.allowed
    assert after.remaining == 2
    assert limit.lockouts == 1


def test_window_is_anchored_at_the_first_request_after_it_ended(
    fake_clock: FakeClock,
) -> None:
    """A new window starts with the first request after the old one, not on a grid."""
    limit = limiter(fake_clock)
    limit.check("k")

    fake_clock.advance(7.0)
    reanchored = limit.check("k")
    fake_clock.advance(4.0)
    same_window = limit.check("k")

    assert reanchored.remaining == 2
    assert reanchored.reset_s == 5.0
    assert same_window.remaining == 1
    assert same_window.reset_s == pytest.approx(1.0)


def test_credentials_have_separate_windows(fake_clock: FakeClock) -> None:
    """One credential's lockout does not touch another's budget."""
    limit = limiter(fake_clock, quota=1)
    limit.check("a")
    limit.check("a")

    other = limit.check("b")

    assert other.allowed


def test_headers_follow_the_ietf_draft_with_whole_seconds(
    fake_clock: FakeClock,
) -> None:
    """Ratelimit, Ratelimit-Policy and Retry-After carry ceil'd whole seconds."""
    limit = limiter(fake_clock, quota=1, lockout_s=2.5)
    limit.check("k")
    fake_clock.advance(0.5)

    allowed_headers = limit.headers(Decision(True, 7, 4.2))
    refused_headers = limit.headers(limit.check("k"))

    assert allowed_headers == {
        "Ratelimit": '"default";r=7;t=5',
        "Ratelimit-Policy": '"default";q=1;w=5',
    }
    assert refused_headers["Retry-After"] == "3"
    assert refused_headers["Ratelimit"] == '"default";r=0;t=5'


@pytest.mark.parametrize(
    ("duration_s", "whole"), [(0.0, 0), (0.01, 1), (1.0, 1), (5.000000000001, 5)]
)
def test_whole_seconds_rounds_up_but_forgives_float_noise(
    duration_s: float, whole: int
) -> None:
    """Durations round up to whole seconds, ignoring float noise above a whole."""
    assert whole_seconds(duration_s) == whole


async def test_every_answer_carries_ratelimit_headers(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """200, 4xx, HTML 5xx and 429 answers all carry both rate-limit headers."""
    server = await make_sandbox(quota=5)
    broken = await make_sandbox(quota=5, faults=FaultRates(html_502=1.0))
    requests = [
        (server, "GET", namespaces_url(server), TOKEN_HEADERS),
        (server, "GET", namespaces_url(server, "absent"), TOKEN_HEADERS),
        (server, "GET", namespaces_url(server), {"Authorization": "Bearer bad"}),
        (server, "POST", namespaces_url(server), TOKEN_HEADERS),
        (broken, "GET", namespaces_url(broken), TOKEN_HEADERS),
    ] + [(server, "GET", namespaces_url(server), TOKEN_HEADERS)] * 4

    seen = []
    for _, method, url, headers in requests:
        async with http.request(method, url, headers=headers) as response:
            seen.append(
                (
                    response.status,
                    RATELIMIT.match(response.headers["Ratelimit"]),
                    response.headers["Ratelimit-Policy"],
                )
            )

    assert [status for status, _, _ in seen] == [
        200, 404, 401, 400, 502, 200, 200, 429, 429,
    ]  # fmt: skip
    assert all(match is not None for _, match, _ in seen)
    assert {policy for _, _, policy in seen} == {'"default";q=5;w=5'}
    remaining = [int(match[1]) for _, match, _ in seen if match]
    assert remaining == [4, 3, 4, 2, 4, 1, 0, 0, 0]


async def test_over_quota_is_429_971_and_locks_out_with_retry_after(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    """Going over quota answers 429 code 971 and locks out; Retry-After counts down."""
    server = await make_sandbox(quota=2, window_s=5.0, lockout_s=20.0)
    url = namespaces_url(server)
    for _ in range(2):
        async with http.get(url, headers=TOKEN_HEADERS) as response:
            assert response.status == 200

    async with http.get(url, headers=TOKEN_HEADERS) as first:
        first_body = await first.json()
    fake_clock.advance(12.5)
    async with http.post(url, headers=TOKEN_HEADERS, json={"name": "x"}) as during:
        during_retry = during.headers["Retry-After"]
    fake_clock.advance(7.5)
    async with http.post(url, headers=TOKEN_HEADERS, json={"name": "x"}) as after:
        after_status = after.status

    assert first.status == 429
    assert first.headers["Retry-After"] == "20"
    assert first_body["success"] is False
    assert first_body["result"] is None
    assert first_body["errors"][0]["code"] == 971
    assert "throttling your request speed" in first_body["errors"][0]["message"]
    assert (during.status, during_retry) == (429, "8")
    assert after_status == 200
    stats = server.stats()
    assert (stats["rate_limited"], stats["lockouts"]) == (2, 1)
    assert stats["max_requests_in_window"] == 2
    assert stats["creates_committed"] == 1
    assert stats["requests_by_method_status"]["GET 429"] == 1


async def test_lockout_is_per_credential_over_http(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """A locked-out token does not stop the email and key credential."""
    server = await make_sandbox(quota=1)
    for _ in range(2):
        async with http.get(namespaces_url(server), headers=TOKEN_HEADERS):
            pass

    async with http.get(namespaces_url(server), headers=KEY_HEADERS) as response:
        status = response.status

    assert status == 200


@pytest.mark.parametrize("quota", [0, None])
async def test_unlimited_quota_sends_no_ratelimit_headers(
    quota: int | None, make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """With quota 0 or None nothing is limited and no rate-limit header is sent."""
    server = await make_sandbox(quota=quota)

    statuses = []
    for _ in range(30):
        async with http.get(namespaces_url(server), headers=TOKEN_HEADERS) as response:
            statuses.append(response.status)
            assert "Ratelimit" not in response.headers

    assert set(statuses) == {200}
    assert server.stats()["lockouts"] == 0


async def test_a_concurrent_burst_gets_exactly_the_quota(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """Of a burst of concurrent creates, exactly quota commit and the rest get 429."""
    server = await make_sandbox(quota=200)

    async def create(index: int) -> int:
        async with http.post(
            namespaces_url(server), headers=TOKEN_HEADERS, json={"name": f"n{index}"}
        ) as response:
            return response.status

    statuses = await asyncio.gather(*(create(index) for index in range(260)))

    assert (statuses.count(200), statuses.count(429)) == (200, 60)
    stats = server.stats()
    assert (stats["creates_committed"], stats["namespaces"]) == (200, 200)
    assert (stats["lockouts"], stats["rate_limited"]) == (1, 60)
    assert stats["max_requests_in_window"] == 200
