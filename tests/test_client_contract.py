"""Every request the client sends follows Cloudflare's OpenAPI extract.

A recording proxy sits between the client and the sandbox: each request it
sees is validated with openapi-core as if sent to the spec's server, and then
forwarded, so the client's answers are the sandbox's real ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from openapi_core import OpenAPI
from sandbox_fixtures import ACCOUNT, KEY_HEADERS, TOKEN_HEADERS, MakeSandbox
from test_sandbox_contract import SPEC_PATH, SpecRequest

from provisioner.client import ApiClient
from provisioner.pacing import Pacer

pytestmark = [
    pytest.mark.contract,
    pytest.mark.skipif(
        not SPEC_PATH.exists(), reason="the OpenAPI extract in ../shared is absent"
    ),
]


@dataclass
class Proxy:
    """A recording proxy's address and what it saw."""

    base_url: str
    seen: list[SpecRequest]


@pytest.fixture
async def proxy(make_sandbox: MakeSandbox) -> AsyncIterator[Proxy]:
    server = await make_sandbox(quota=0)
    seen: list[SpecRequest] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "x-auth-email", "x-auth-key")
        }
        seen.append(
            SpecRequest(request.method, request.raw_path, body or None, headers)
        )
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method,
                server.root_url + request.raw_path,
                data=body or None,
                headers={**headers, "Content-Type": "application/json"},
            ) as answer,
        ):
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                content_type="application/json",
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Proxy(f"http://127.0.0.1:{port}/client/v4", seen)
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    """The extract, parsed once."""
    return OpenAPI.from_path(SPEC_PATH)


@pytest.mark.parametrize("auth", [TOKEN_HEADERS, KEY_HEADERS])
async def test_each_call_of_the_client_is_a_valid_request(
    proxy: Proxy, openapi: OpenAPI, auth: dict[str, str]
) -> None:
    """List, create, get, update, rename and delete all validate, in both schemes."""
    async with ApiClient(
        base_url=proxy.base_url, auth_headers=auth, pacer=Pacer(1000, 1.0)
    ) as client:
        await client.list_namespaces(ACCOUNT)
        await client.create_namespace(ACCOUNT, "acme")
        await client.get_namespace(ACCOUNT, "acme")
        await client.update_namespace(ACCOUNT, "acme", trusted_workers=True)
        await client.update_namespace(ACCOUNT, "acme", new_name="acme-2")
        await client.delete_namespace(ACCOUNT, "acme-2")

    methods = [(r.method, r.path.rsplit("/", 1)[-1]) for r in proxy.seen]
    assert methods == [
        ("get", "namespaces"),
        ("post", "namespaces"),
        ("get", "acme"),
        ("patch", "acme"),
        ("patch", "acme"),
        ("delete", "acme-2"),
    ]
    for request in proxy.seen:
        openapi.validate_request(request)
