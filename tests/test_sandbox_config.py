"""Sandbox settings, the server's lifecycle guards, and what they reveal."""

from __future__ import annotations

from typing import Any

import pytest
from sandbox_fixtures import MakeSandbox

from provisioner.errors import SettingsError
from provisioner.sandbox import SandboxConfig, SandboxServer
from provisioner.sandbox.app import Credential
from provisioner.sandbox.server import banner


@pytest.mark.parametrize(
    "overrides",
    [
        {"accounts": ()},
        {"accounts": ("",)},
        {"accounts": ("x" * 33,)},
        {"user_id": "not-hex"},
        {"quota": -1},
        {"window_s": 0.0},
        {"lockout_s": -1.0},
        {"revoke_after": -1},
        {"slow_delay_s": -1.0},
        {"save_interval_s": -0.1},
    ],
)
def test_bad_settings_are_settings_errors(overrides: dict[str, Any]) -> None:
    """Each out-of-range setting raises SettingsError before anything starts."""
    with pytest.raises(SettingsError):
        SandboxConfig(**overrides)


def test_lockout_defaults_to_one_window() -> None:
    """Without lockout_s the lockout lasts one window; quota 0 means no limit."""
    assert SandboxConfig(window_s=7.0).effective_lockout_s == 7.0
    assert SandboxConfig(lockout_s=0.5).effective_lockout_s == 0.5
    assert not SandboxConfig(quota=0).rate_limited


def test_reprs_hold_no_secret() -> None:
    """Neither the config nor a presented credential shows a token or key."""
    config = SandboxConfig(token="tok-123", api_key="key-456")
    credential = Credential("token", "token:abc", token="tok-123")

    shown = repr(config) + repr(credential)

    assert "tok-123" not in shown
    assert "key-456" not in shown


async def test_banner_prints_only_the_sandbox_default_secrets(
    make_sandbox: MakeSandbox,
) -> None:
    """The banner gives the default token and key but hides custom ones."""
    default = await make_sandbox()
    custom = await make_sandbox(token="mine-1", api_key="mine-2")

    shown_default, shown_custom = banner(default), banner(custom)

    assert f"CLOUDFLARE_BASE_URL={default.base_url} " in shown_default
    assert "CLOUDFLARE_API_TOKEN=sandbox-token" in shown_default
    assert "sandbox-key" in shown_default
    assert "mine-1" not in shown_custom
    assert "mine-2" not in shown_custom


async def test_server_lifecycle_guards() -> None:
    """The port is unknown before start, start twice fails, stop twice is harmless."""
    server = SandboxServer()
    with pytest.raises(RuntimeError):
        _ = server.base_url

    async with server:
        with pytest.raises(RuntimeError):
            await server.start()
        assert server.base_url.endswith("/client/v4")
    await server.stop()
