"""Fixtures for talking to the sandbox server over loopback.

Loaded for every test through ``pytest_plugins`` in conftest.py:

- ``fake_clock``: a FakeClock the sandbox's rate limiter reads; ``advance(s)``.
- ``make_sandbox``: ``await make_sandbox(quota=3, ...)`` starts a SandboxServer
  whose config takes these overrides (and ``fake_clock`` unless given); every
  server is stopped after the test.
- ``sandbox``: one started server with the default config and ``fake_clock``.
- ``http``: an aiohttp ClientSession with no default headers, closed after.

Plus constants for the default credentials and ``namespaces_url`` to build
(percent-encoded) API URLs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from provisioner.sandbox import SandboxConfig, SandboxServer
from provisioner.sandbox.config import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EMAIL,
    DEFAULT_TOKEN,
)

ACCOUNT = DEFAULT_ACCOUNT
TOKEN_HEADERS = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
KEY_HEADERS = {"X-Auth-Email": DEFAULT_EMAIL, "X-Auth-Key": DEFAULT_API_KEY}

MakeSandbox = Callable[..., Awaitable[SandboxServer]]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, duration_s: float) -> None:
        """Move time forward by ``duration_s`` seconds."""
        self.now_s += duration_s


def encode_name(name: str) -> str:
    """Percent-encode a name as one path segment, dots included.

    Encoding the dots keeps "." and ".." from being collapsed as dot-segments
    by the client before sending.
    """
    return quote(name, safe="").replace(".", "%2E")


def namespaces_url(
    server: SandboxServer, name: str | None = None, account: str = ACCOUNT
) -> URL:
    """The collection URL, or one namespace's URL with its name encoded."""
    url = f"{server.base_url}/accounts/{account}/workers/dispatch/namespaces"
    if name is not None:
        url += "/" + encode_name(name)
    return URL(url, encoded=True)


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh fake clock."""
    return FakeClock()


@pytest.fixture
async def make_sandbox(fake_clock: FakeClock) -> AsyncIterator[MakeSandbox]:
    """Start sandbox servers with config overrides; stop them all afterwards."""
    servers: list[SandboxServer] = []

    async def make(**overrides: Any) -> SandboxServer:
        overrides.setdefault("clock", fake_clock)
        server = SandboxServer(SandboxConfig(**overrides))
        await server.start()
        servers.append(server)
        return server

    yield make

    for server in servers:
        await server.stop()


@pytest.fixture
async def sandbox(make_sandbox: MakeSandbox) -> SandboxServer:
    """A started sandbox with the default config and the fake clock."""
    return await make_sandbox()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session without default headers."""
    async with aiohttp.ClientSession() as session:
        yield session
