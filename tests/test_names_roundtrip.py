"""Names the most permissive policy allows reach the sandbox exactly as written."""

from __future__ import annotations

import string
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_fixtures import ACCOUNT, TOKEN_HEADERS

from provisioner.client import ApiClient
from provisioner.names import NamePolicy, url_safe
from provisioner.pacing import Pacer
from provisioner.sandbox import SandboxConfig, SandboxServer

# The most permissive setting: any pattern at all; only the floor still applies.
PERMISSIVE = NamePolicy(pattern=r"^.+$")

names = st.text(alphabet=string.printable, min_size=1, max_size=40).filter(
    PERMISSIVE.accepts
)


@pytest.fixture
async def server() -> AsyncIterator[SandboxServer]:
    async with SandboxServer(SandboxConfig(quota=0)) as running:
        yield running


def recorder_app(seen: list[tuple[str, str]]) -> web.Application:
    """An app that records each request's raw path and decoded name."""

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.raw_path, request.match_info["name"]))
        return web.json_response({"success": True, "errors": [], "result": None})

    app = web.Application()
    app.router.add_route(
        "*", "/accounts/{account}/workers/dispatch/namespaces/{name}", handle
    )
    return app


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=names)
async def test_get_and_delete_reach_the_sandbox_as_that_name(
    server: SandboxServer, name: str
) -> None:
    """GET and DELETE of any name the floor allows address exactly that name."""
    server.seed(ACCOUNT, [name, name + "-sibling"])
    pacer = Pacer(100_000, 1.0)

    async with ApiClient(
        base_url=server.base_url, auth_headers=TOKEN_HEADERS, pacer=pacer
    ) as client:
        fetched = await client.get_namespace(ACCOUNT, name)
        await client.delete_namespace(ACCOUNT, name)

    assert fetched.namespace_name == name
    left = [ns.namespace_name for ns in server.store.list_for(ACCOUNT)]
    assert name not in left
    assert name + "-sibling" in left
    server.store.delete(ACCOUNT, name + "-sibling")


async def test_each_name_is_one_path_segment(aiohttp_free_port: int) -> None:
    """The client puts a name into the path as one percent-encoded segment."""
    seen: list[tuple[str, str]] = []
    runner = web.AppRunner(recorder_app(seen))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", aiohttp_free_port)
    await site.start()
    tricky = ["a:b", "a;b", "a..b", "~x", "a'b", "a&b=c", "[x]", "a+b", "a@b"]

    try:
        async with ApiClient(
            base_url=f"http://127.0.0.1:{aiohttp_free_port}",
            auth_headers={},
            pacer=Pacer(1000, 1.0),
        ) as client:
            for name in tricky:
                assert url_safe(name)
                await client.delete_namespace(ACCOUNT, name)
    finally:
        await runner.cleanup()

    assert [decoded for _, decoded in seen] == tricky
    prefix = f"/accounts/{ACCOUNT}/workers/dispatch/namespaces/"
    assert all(raw.startswith(prefix) for raw, _ in seen)
    assert all("/" not in raw.removeprefix(prefix) for raw, _ in seen)


@pytest.fixture
def aiohttp_free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
