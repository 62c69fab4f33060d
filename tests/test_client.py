"""The API client: envelope parsing and classification of every kind of answer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aioresponses import aioresponses

from provisioner.client import ApiClient
from provisioner.errors import (
    CredentialsRefusedError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RunInterruptedError,
    ServerError,
    TransportError,
)
from provisioner.pacing import Pacer

BASE = "https://api.example.test/client/v4"
ACCOUNT = "0123456789abcdef0123456789abcdef"
COLLECTION = f"{BASE}/accounts/{ACCOUNT}/workers/dispatch/namespaces"
TOKEN = "unit-test-token-value"


def ok(result: object) -> dict[str, object]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def failure(code: int, message: str) -> dict[str, object]:
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


NAMESPACE = {
    "namespace_id": "7f0d1c8e-2b5f-4c31-9d0e-1a2b3c4d5e6f",
    "namespace_name": "acme",
    "created_on": "2026-01-01T00:00:00Z",
    "script_count": 0,
    "trusted_workers": False,
}


@pytest.fixture
async def client() -> AsyncIterator[ApiClient]:
    pacer = Pacer(1000, 1.0)
    async with ApiClient(
        base_url=BASE,
        auth_headers={"Authorization": f"Bearer {TOKEN}"},
        pacer=pacer,
        timeout_s=5.0,
    ) as api:
        yield api


async def test_create_returns_the_namespace(client: ApiClient) -> None:
    """A 200 success envelope's result is parsed into a Namespace."""
    with aioresponses() as mocked:
        mocked.post(COLLECTION, payload=ok(NAMESPACE))

        namespace = await client.create_namespace(ACCOUNT, "acme")

    assert namespace.namespace_id == NAMESPACE["namespace_id"]
    assert namespace.namespace_name == "acme"
    assert client.stats.requests_sent == 1


async def test_list_parses_every_namespace_defensively(client: ApiClient) -> None:
    """List tolerates missing or mistyped optional fields."""
    sparse = {"namespace_name": "bare", "script_count": "many"}
    with aioresponses() as mocked:
        mocked.get(COLLECTION, payload=ok([NAMESPACE, sparse]))

        namespaces = await client.list_namespaces(ACCOUNT)

    assert [ns.namespace_name for ns in namespaces] == ["acme", "bare"]
    assert namespaces[1].namespace_id is None
    assert namespaces[1].script_count is None


async def test_success_false_with_200_is_an_error(client: ApiClient) -> None:
    """A 200 whose body says success: false is a failure, never a success."""
    with aioresponses() as mocked:
        mocked.post(COLLECTION, payload=failure(10013, "internal"))

        with pytest.raises(ServerError) as caught:
            await client.create_namespace(ACCOUNT, "acme")

    assert caught.value.code == 10013
    assert caught.value.may_have_committed


async def test_html_page_is_a_server_error(client: ApiClient) -> None:
    """An edge HTML error page is a transient server error, not an answer."""
    with aioresponses() as mocked:
        mocked.post(COLLECTION, status=502, body="<html>Bad gateway</html>")

        with pytest.raises(ServerError) as caught:
            await client.create_namespace(ACCOUNT, "acme")

    assert caught.value.status == 502
    assert "HTML" in caught.value.message


async def test_4xx_is_permanent_with_cloudflare_code(client: ApiClient) -> None:
    """A 400 carries Cloudflare's code and message and did not commit."""
    with aioresponses() as mocked:
        mocked.post(COLLECTION, status=400, payload=failure(10052, "already exists"))

        with pytest.raises(PermanentError) as caught:
            await client.create_namespace(ACCOUNT, "acme")

    assert (caught.value.status, caught.value.code) == (400, 10052)
    assert not caught.value.may_have_committed


async def test_404_is_not_found(client: ApiClient) -> None:
    """A 404 on get is NotFoundError."""
    with aioresponses() as mocked:
        mocked.get(f"{COLLECTION}/acme", status=404, payload=failure(10007, "nope"))

        with pytest.raises(NotFoundError):
            await client.get_namespace(ACCOUNT, "acme")


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials(client: ApiClient, status: int) -> None:
    """401 and 403 are CredentialsRefusedError and carry no secret."""
    with aioresponses() as mocked:
        mocked.get(COLLECTION, status=status, payload=failure(10000, "Auth error"))

        with pytest.raises(CredentialsRefusedError) as caught:
            await client.list_namespaces(ACCOUNT)

    assert TOKEN not in repr(caught.value)
    assert TOKEN not in str(caught.value)


async def test_429_pauses_the_pacer(client: ApiClient) -> None:
    """A 429 raises RateLimitedError with Retry-After and pauses everyone."""
    with aioresponses() as mocked:
        mocked.get(
            COLLECTION,
            status=429,
            payload=failure(971, "Please wait"),
            headers={"Retry-After": "7"},
        )

        with pytest.raises(RateLimitedError) as caught:
            await client.list_namespaces(ACCOUNT)

    assert caught.value.retry_after_s == 7.0
    assert not caught.value.may_have_committed
    assert client.stats.rate_limited == 1
    assert client._pacer.paused_until > 0


async def test_timeout_on_create_is_an_unknown_outcome(client: ApiClient) -> None:
    """A create that timed out may have committed."""
    with aioresponses() as mocked:
        mocked.post(COLLECTION, exception=TimeoutError())

        with pytest.raises(TransportError) as caught:
            await client.create_namespace(ACCOUNT, "acme")

    assert caught.value.may_have_committed


async def test_refused_connection_never_reached_the_server(client: ApiClient) -> None:
    """A refused connection is transient and surely did not commit."""
    error = aiohttp.ClientConnectorError(
        connection_key=None,  # type: ignore[arg-type]
        os_error=ConnectionRefusedError(111, "refused"),
    )
    with aioresponses() as mocked:
        mocked.post(COLLECTION, exception=error)

        with pytest.raises(TransportError) as caught:
            await client.create_namespace(ACCOUNT, "acme")

    assert not caught.value.may_have_committed


async def test_cut_body_is_a_transport_error(client: ApiClient) -> None:
    """A body cut short is a transport fault that may have committed."""
    with aioresponses() as mocked:
        mocked.post(COLLECTION, exception=aiohttp.ClientPayloadError("cut"))

        with pytest.raises(TransportError) as caught:
            await client.create_namespace(ACCOUNT, "acme")

    assert caught.value.may_have_committed


async def test_unsafe_name_is_never_sent(client: ApiClient) -> None:
    """A name unsafe in a URL path raises before any request goes out."""
    with aioresponses():
        for name in ["..", "a/b", "a?b", "a#b", "50%", "a b"]:
            with pytest.raises(PermanentError):
                await client.delete_namespace(ACCOUNT, name)

    assert client.stats.requests_sent == 0


async def test_names_are_percent_encoded_in_paths(client: ApiClient) -> None:
    """A permissive name travels as one encoded path segment."""
    with aioresponses() as mocked:
        mocked.get(re.compile(r".*/namespaces/a%3Ab$"), payload=ok(NAMESPACE))

        await client.get_namespace(ACCOUNT, "a:b")


async def test_update_sends_patch_with_only_given_fields(client: ApiClient) -> None:
    """update_namespace PATCHes with the fields asked for and nothing else."""
    with aioresponses() as mocked:
        mocked.patch(f"{COLLECTION}/acme", payload=ok(NAMESPACE))

        await client.update_namespace(ACCOUNT, "acme", trusted_workers=True)

        ((_, calls),) = mocked.requests.items()
    assert calls[0].kwargs["json"] == {"trusted_workers": True}


async def test_halted_client_sends_nothing(client: ApiClient) -> None:
    """After halt(), calls raise RunInterruptedError without sending."""
    client.halt()

    with pytest.raises(RunInterruptedError):
        await client.list_namespaces(ACCOUNT)

    assert client.stats.requests_sent == 0


async def test_result_not_an_array_for_list(client: ApiClient) -> None:
    """A list whose result is not an array is a server error."""
    with aioresponses() as mocked:
        mocked.get(COLLECTION, payload=ok({"oops": 1}))

        with pytest.raises(ServerError):
            await client.list_namespaces(ACCOUNT)


async def test_used_outside_context_raises() -> None:
    """Calling before entering the context is a programming error."""
    api = ApiClient(base_url=BASE, auth_headers={}, pacer=Pacer(1, 1.0))

    with pytest.raises(RuntimeError):
        await api.list_namespaces(ACCOUNT)
    assert "token" not in repr(api).lower()
    await asyncio.sleep(0)


async def test_server_message_echoing_the_token_is_masked(client: ApiClient) -> None:
    """An error message that repeats the token reaches no error text."""
    with aioresponses() as mocked:
        mocked.post(COLLECTION, status=400, payload=failure(1, f"bad token {TOKEN}"))

        with pytest.raises(PermanentError) as caught:
            await client.create_namespace(ACCOUNT, "acme")

    assert TOKEN not in caught.value.message
    assert "***" in caught.value.message


@pytest.mark.parametrize(
    ("retry_after", "expected_s"),
    [("4", 4.0), ("2.5", 2.5), ("http-date", 6.0), (None, 1.0)],
)
async def test_429_holds_every_worker_for_retry_after(
    retry_after: str | None, expected_s: float
) -> None:
    """After a 429, another worker's next call waits the server's Retry-After."""
    from email.utils import format_datetime

    from test_pacing import FakeTime

    time_ = FakeTime()
    pacer = Pacer(1000, 1.0, clock=time_.clock, sleep=time_.sleep)
    headers = {}
    if retry_after == "http-date":
        when = datetime.now(UTC) + timedelta(seconds=6, milliseconds=500)
        headers["Retry-After"] = format_datetime(when, usegmt=True)
    elif retry_after is not None:
        headers["Retry-After"] = retry_after

    async with ApiClient(base_url=BASE, auth_headers={}, pacer=pacer) as api:
        with aioresponses() as mocked:
            mocked.get(
                COLLECTION, status=429, payload=failure(971, "w"), headers=headers
            )
            with pytest.raises(RateLimitedError):
                await api.list_namespaces(ACCOUNT)
        other_worker = await pacer.acquire()

    # An HTTP date has whole seconds: allow it one second either way.
    tolerance_s = 1.0 if retry_after == "http-date" else 0.01
    assert time_.now_s >= expected_s - tolerance_s
    assert time_.now_s <= expected_s + 1.0
    pacer.release(other_worker)


async def test_create_answered_with_another_name_is_not_taken(
    client: ApiClient,
) -> None:
    """A create whose answer names another namespace is an unknown outcome."""
    with aioresponses() as mocked:
        mocked.post(COLLECTION, payload=ok({**NAMESPACE, "namespace_name": "other"}))

        with pytest.raises(ServerError, match="other"):
            await client.create_namespace(ACCOUNT, "acme")


async def test_rate_limit_headers_are_read_whatever_their_case(
    client: ApiClient,
) -> None:
    """Header names are case-insensitive: lowercase ``ratelimit-policy`` and
    ``retry-after`` (as HTTP/2 and many proxies send them) are understood."""
    with aioresponses() as mocked:
        mocked.post(
            COLLECTION,
            payload=ok(NAMESPACE),
            headers={"ratelimit-policy": '"default";q=4;w=60'},
        )
        mocked.post(
            COLLECTION,
            status=429,
            payload=failure(971, "slow down"),
            headers={"retry-after": "7"},
        )

        await client.create_namespace(ACCOUNT, "acme")
        with pytest.raises(RateLimitedError) as limited:
            await client.create_namespace(ACCOUNT, "acme")

    assert client.pacer._server_quota == 4
    assert limited.value.retry_after_s == 7.0
