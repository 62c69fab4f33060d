"""Injected faults as a real aiohttp client sees them, and their determinism."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from sandbox_fixtures import (
    ACCOUNT,
    KEY_HEADERS,
    TOKEN_HEADERS,
    MakeSandbox,
    namespaces_url,
)

from provisioner.errors import SettingsError
from provisioner.sandbox import SandboxServer
from provisioner.sandbox.config import FaultRates
from provisioner.sandbox.faults import FaultInjector, FaultKind, Revocations


async def create(
    http: aiohttp.ClientSession, server: SandboxServer, name: str = "x"
) -> tuple[int, str, bytes]:
    """POST a create; return status, content type and raw body."""
    async with http.post(
        namespaces_url(server), headers=TOKEN_HEADERS, json={"name": name}
    ) as response:
        return response.status, response.content_type, await response.read()


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "marker"),
    [
        ("error_500", 500, "application/json", b'"success": false'),
        ("html_502", 502, "text/html", b"502 Bad Gateway"),
        ("html_503", 503, "text/html", b"503 Service Temporarily Unavailable"),
        ("success_false", 200, "application/json", b'"success": false'),
    ],
)
async def test_answering_faults_commit_nothing(
    kind: str,
    status: int,
    content_type: str,
    marker: bytes,
    make_sandbox: MakeSandbox,
    http: aiohttp.ClientSession,
) -> None:
    """500 envelopes, edge HTML pages and 200-with-failure arrive, uncommitted."""
    server = await make_sandbox(faults=FaultRates.from_mapping({kind: 1.0}))

    got = await create(http, server)

    assert got[:2] == (status, content_type)
    assert marker in got[2]
    assert server.store.total() == 0
    assert server.stats()["faults"][kind] == 1


@pytest.mark.parametrize(
    ("kind", "error", "committed"),
    [
        ("close", aiohttp.ServerDisconnectedError, 0),
        ("commit_then_close", aiohttp.ServerDisconnectedError, 1),
        ("truncated", aiohttp.ClientPayloadError, 0),
    ],
)
async def test_dropping_faults_raise_client_side(
    kind: str,
    error: type[Exception],
    committed: int,
    make_sandbox: MakeSandbox,
    http: aiohttp.ClientSession,
) -> None:
    """A closed or cut-off answer raises in the client; only commit_* committed."""
    server = await make_sandbox(faults=FaultRates.from_mapping({kind: 1.0}))

    with pytest.raises(error):
        await create(http, server)

    assert server.store.total() == committed
    stats = server.stats()
    assert stats["creates_committed"] == committed
    outcome = "truncated" if kind == "truncated" else "closed"
    assert stats["requests_by_method_status"] == {f"POST {outcome}": 1}


async def test_truncated_declares_more_than_it_sends(
    make_sandbox: MakeSandbox,
) -> None:
    """The truncated answer's Content-Length is larger than the bytes that arrive."""
    server = await make_sandbox(faults=FaultRates(truncated=1.0))
    request = (
        f"GET {namespaces_url(server).raw_path} HTTP/1.1\r\n"
        f"Host: {server.host}\r\n"
        f"Authorization: {TOKEN_HEADERS['Authorization']}\r\n\r\n"
    )

    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request.encode())
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()

    head, _, body = raw.partition(b"\r\n\r\n")
    declared = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert head.startswith(b"HTTP/1.1 200")
    assert 0 < len(body) < declared


async def test_commit_then_delay_outlasts_the_client_without_blocking_others(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """A delayed create commits and times the client out while others are served."""
    server = await make_sandbox(
        faults=FaultRates(commit_then_delay=1.0), slow_delay_s=5
    )
    short = aiohttp.ClientTimeout(total=0.3)

    started_s = time.monotonic()
    with pytest.raises(TimeoutError):
        async with http.post(
            namespaces_url(server),
            headers=TOKEN_HEADERS,
            json={"name": "slow"},
            timeout=short,
        ):
            pass  # pragma: no cover - the answer never comes in time
    async with http.get(namespaces_url(server), headers=TOKEN_HEADERS) as listed:
        names = [ns["namespace_name"] for ns in (await listed.json())["result"]]

    assert time.monotonic() - started_s < 2.0
    assert names == ["slow"]
    assert server.stats()["faults"]["commit_then_delay"] == 1


async def test_commit_then_delay_answers_after_the_delay(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """A patient client gets the delayed answer, after slow_delay_s."""
    server = await make_sandbox(
        faults=FaultRates(commit_then_delay=1.0), slow_delay_s=0.2
    )

    started_s = time.monotonic()
    status, _, body = await create(http, server)

    assert time.monotonic() - started_s >= 0.2
    assert status == 200
    assert b'"namespace_name": "x"' in body


async def test_commit_faults_never_hit_reads(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """With only commit faults configured, GET answers normally and draws none."""
    server = await make_sandbox(
        faults=FaultRates(commit_then_close=0.5, commit_then_delay=0.5)
    )

    async with http.get(namespaces_url(server), headers=TOKEN_HEADERS) as response:
        status = response.status

    assert status == 200
    assert sum(server.stats()["faults"].values()) == 0


async def test_aiohttp_resends_a_closed_get_once(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """aiohttp quietly resends an idempotent request once after a close fault."""
    server = await make_sandbox(faults=FaultRates(close=1.0))

    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.get(namespaces_url(server), headers=TOKEN_HEADERS):
            pass  # pragma: no cover - no answer arrives

    assert server.stats()["requests_by_method_status"] == {"GET closed": 2}


async def test_rate_limit_is_checked_before_faults(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """Over quota the answer is a 429, not a fault, and no fault is drawn."""
    server = await make_sandbox(quota=1, faults=FaultRates(error_500=1.0))

    first = await create(http, server, "a")
    second = await create(http, server, "b")

    assert (first[0], second[0]) == (500, 429)
    assert server.stats()["faults"]["error_500"] == 1


async def test_faults_spare_the_sandbox_endpoints(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """/__sandbox/stats answers normally whatever the fault rates."""
    server = await make_sandbox(faults=FaultRates(close=1.0))

    async with http.get(f"{server.root_url}/__sandbox/stats") as response:
        status = response.status

    assert status == 200


async def outcomes(server: SandboxServer, http: aiohttp.ClientSession) -> list[str]:
    """What 40 creates of distinct names ended as, in order."""
    seen = []
    for index in range(40):
        try:
            status, content_type, _ = await create(http, server, f"n{index}")
            seen.append(f"{status} {content_type}")
        except aiohttp.ClientError as exc:
            seen.append(type(exc).__name__)
    return seen


async def test_same_seed_gives_the_same_faults(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """Two servers with one seed fail the same requests alike; another seed differs."""
    rates = FaultRates(error_500=0.2, close=0.2, html_503=0.1, commit_then_close=0.1)
    first = await make_sandbox(faults=rates, seed=7)
    second = await make_sandbox(faults=rates, seed=7)
    third = await make_sandbox(faults=rates, seed=8)

    seen = [await outcomes(server, http) for server in (first, second, third)]

    assert seen[0] == seen[1]
    assert seen[0] != seen[2]
    assert len(set(seen[0])) >= 3
    assert first.stats()["faults"] == second.stats()["faults"]


async def test_revoke_after_refuses_the_credential_from_then_on(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """After N authenticated calls the token gets 403 10000; other credentials work."""
    server = await make_sandbox(revoke_after=2)

    statuses = []
    for _ in range(4):
        async with http.get(namespaces_url(server), headers=TOKEN_HEADERS) as response:
            statuses.append(response.status)
            body = await response.json()
    async with http.get(namespaces_url(server), headers=KEY_HEADERS) as response:
        other = response.status

    assert statuses == [200, 200, 403, 403]
    assert body["errors"][0]["code"] == 10000
    assert other == 200
    assert server.stats()["faults"]["revoked"] == 2


def test_injector_rates_are_exact_proportions_of_one_stream() -> None:
    """Over many draws each kind appears near its rate; reads skip commit kinds."""
    rates = FaultRates(close=0.25, commit_then_close=0.25)
    injector = FaultInjector(rates, seed=1)

    writes = [injector.choose(mutating=True) for _ in range(4000)]
    reads = [injector.choose(mutating=False) for _ in range(4000)]

    assert 900 < writes.count(FaultKind.CLOSE) < 1100
    assert 900 < writes.count(FaultKind.COMMIT_THEN_CLOSE) < 1100
    assert FaultKind.COMMIT_THEN_CLOSE not in reads
    assert 900 < reads.count(FaultKind.CLOSE) < 1100


def test_revocations_count_per_credential() -> None:
    """Each credential has its own count, and revocation sticks."""
    revocations = Revocations(revoke_after=1)

    verdicts = [revocations.admit("a"), revocations.admit("a"), revocations.admit("b")]

    assert verdicts == [True, False, True]
    assert revocations.is_revoked("a")
    assert not revocations.is_revoked("b")
    assert Revocations(None).admit("a")


@pytest.mark.parametrize(
    "rates",
    [{"close": 1.5}, {"close": -0.1}, {"close": 0.6, "error_500": 0.6}, {"boom": 0.1}],
)
def test_bad_fault_rates_are_settings_errors(rates: dict[str, float]) -> None:
    """Rates outside [0, 1], summing above 1, or of unknown kinds are refused."""
    with pytest.raises(SettingsError):
        FaultRates.from_mapping(rates)


async def test_shutdown_does_not_wait_for_a_delayed_answer(
    make_sandbox: MakeSandbox,
) -> None:
    """Stopping the server gives up a pending delayed answer at once."""
    server = await make_sandbox(
        faults=FaultRates(commit_then_delay=1.0), slow_delay_s=60
    )
    committed = asyncio.Event()
    server.store.on_change = committed.set
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(
            session.post(
                namespaces_url(server), headers=TOKEN_HEADERS, json={"name": "s"}
            )
        )
        await committed.wait()

        started_s = time.monotonic()
        await server.stop()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await pending

    assert time.monotonic() - started_s < 1.0
    assert server.store.get(ACCOUNT, "s") is not None
