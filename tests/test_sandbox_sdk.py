"""The official Python SDK (cloudflare 5.x) works against the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import cloudflare
import pytest
from cloudflare import AsyncCloudflare
from sandbox_fixtures import ACCOUNT, MakeSandbox

from provisioner.sandbox import SandboxServer
from provisioner.sandbox.config import (
    DEFAULT_API_KEY,
    DEFAULT_EMAIL,
    DEFAULT_TOKEN,
    FaultRates,
)

MakeClient = Callable[[SandboxServer], Awaitable[AsyncCloudflare]]


@pytest.fixture
async def sdk_client(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[MakeClient]:
    """Build SDK clients for a sandbox, unaffected by CLOUDFLARE_* variables."""
    for variable in (
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_API_KEY",
        "CLOUDFLARE_EMAIL",
        "CLOUDFLARE_API_USER_SERVICE_KEY",
        "CLOUDFLARE_BASE_URL",
    ):
        monkeypatch.delenv(variable, raising=False)
    clients: list[AsyncCloudflare] = []

    async def make(server: SandboxServer) -> AsyncCloudflare:
        client = AsyncCloudflare(
            api_token=DEFAULT_TOKEN, base_url=server.base_url, max_retries=0
        )
        clients.append(client)
        return client

    yield make

    for client in clients:
        await client.close()


async def test_sdk_creates_lists_gets_and_deletes(
    sandbox: SandboxServer, sdk_client: MakeClient
) -> None:
    """AsyncCloudflare's dispatch.namespaces calls round-trip on the sandbox."""
    client = await sdk_client(sandbox)
    namespaces = client.workers_for_platforms.dispatch.namespaces

    created = await namespaces.create(account_id=ACCOUNT, name="sdk-tenant")
    listed = [ns async for ns in namespaces.list(account_id=ACCOUNT)]
    got = await namespaces.get("sdk-tenant", account_id=ACCOUNT)
    deleted = await namespaces.delete("sdk-tenant", account_id=ACCOUNT)

    assert created is not None
    assert created.namespace_name == "sdk-tenant"
    assert created.trusted_workers is False
    assert [ns.namespace_id for ns in listed] == [created.namespace_id]
    assert got is not None
    assert got.namespace_id == created.namespace_id
    assert deleted is None
    assert sandbox.store.total() == 0


async def test_sdk_raises_its_own_errors_for_sandbox_refusals(
    sandbox: SandboxServer, sdk_client: MakeClient
) -> None:
    """404 and duplicate-create answers become the SDK's NotFound and BadRequest."""
    client = await sdk_client(sandbox)
    namespaces = client.workers_for_platforms.dispatch.namespaces
    await namespaces.create(account_id=ACCOUNT, name="taken")

    with pytest.raises(cloudflare.NotFoundError):
        await namespaces.get("absent", account_id=ACCOUNT)
    with pytest.raises(cloudflare.BadRequestError, match="already exists"):
        await namespaces.create(account_id=ACCOUNT, name="taken")


async def test_sdk_with_email_and_key_is_accepted(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's legacy email plus key scheme authenticates with the sandbox."""
    for variable in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_USER_SERVICE_KEY"):
        monkeypatch.delenv(variable, raising=False)

    async with AsyncCloudflare(
        api_email=DEFAULT_EMAIL,
        api_key=DEFAULT_API_KEY,
        base_url=sandbox.base_url,
        max_retries=0,
    ) as client:
        listed = [
            ns
            async for ns in client.workers_for_platforms.dispatch.namespaces.list(
                account_id=ACCOUNT
            )
        ]

    assert listed == []


async def test_sdk_takes_a_success_false_answer_as_no_result(
    make_sandbox: MakeSandbox, sdk_client: MakeClient
) -> None:
    """The SDK returns None, without raising, for a 200 whose envelope says failure."""
    server = await make_sandbox(faults=FaultRates(success_false=1.0))
    client = await sdk_client(server)

    created = await client.workers_for_platforms.dispatch.namespaces.create(
        account_id=ACCOUNT, name="ghost"
    )

    assert created is None
    assert server.store.total() == 0
