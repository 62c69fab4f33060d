"""The namespace store and its state file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from sandbox_fixtures import ACCOUNT, TOKEN_HEADERS, MakeSandbox, namespaces_url

from provisioner.errors import SettingsError
from provisioner.sandbox import SandboxConfig, SandboxServer
from provisioner.sandbox.store import (
    NamespaceMissingError,
    NamespaceStore,
    NameTakenError,
    write_atomically,
)

USER = "a" * 32


def test_store_create_update_delete_keep_ids_and_order() -> None:
    """Renames keep the id; list order is creation order; misses raise."""
    store = NamespaceStore()
    first = store.create(ACCOUNT, "one", USER)
    store.create(ACCOUNT, "two", USER)

    renamed = store.update(ACCOUNT, "one", USER, new_name="uno", trusted_workers=True)
    store.delete(ACCOUNT, "two")

    assert renamed.namespace_id == first.namespace_id
    assert renamed.trusted_workers is True
    assert [ns.namespace_name for ns in store.list_for(ACCOUNT)] == ["uno"]
    with pytest.raises(NameTakenError):
        store.create(ACCOUNT, "uno", USER)
    with pytest.raises(NamespaceMissingError):
        store.update(ACCOUNT, "two", USER, trusted_workers=False)
    with pytest.raises(NamespaceMissingError):
        store.delete(ACCOUNT, "two")
    assert store.version == 4


def test_store_dumps_and_loads_round_trip() -> None:
    """The JSON text of a store rebuilds an equal store."""
    store = NamespaceStore()
    store.create(ACCOUNT, "a/b", USER)
    store.create("f" * 32, "ü", USER)

    copy = NamespaceStore()
    copy.loads(store.dumps(), "memory")

    assert copy.list_for(ACCOUNT) == store.list_for(ACCOUNT)
    assert copy.list_for("f" * 32) == store.list_for("f" * 32)


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"version": 2, "accounts": {}}',
        '{"version": 1}',
        '{"version": 1, "accounts": {"a": {}}}',
        '{"version": 1, "accounts": {"a": [{"namespace_name": "x"}]}}',
    ],
)
def test_unreadable_state_is_a_settings_error_naming_the_file(text: str) -> None:
    """A corrupt state file raises SettingsError that names it and the fix."""
    store = NamespaceStore()

    with pytest.raises(SettingsError, match=r"state\.json.*fix or delete it"):
        store.loads(text, "state.json")


def test_write_atomically_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    """An atomic write replaces the file whole and leaves nothing else behind."""
    path = tmp_path / "deep" / "state.json"

    write_atomically(path, "old")
    write_atomically(path, "new")

    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


async def test_state_file_survives_a_restart(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Namespaces made through the API are there, with their ids, after a restart."""
    config = SandboxConfig(state_file=tmp_path / "state.json")
    async with SandboxServer(config) as first:
        async with http.post(
            namespaces_url(first), headers=TOKEN_HEADERS, json={"name": "kept"}
        ) as response:
            created = (await response.json())["result"]
        async with http.post(
            namespaces_url(first), headers=TOKEN_HEADERS, json={"name": "gone"}
        ):
            pass
        async with http.delete(namespaces_url(first, "gone"), headers=TOKEN_HEADERS):
            pass

    async with (
        SandboxServer(config) as second,
        http.get(namespaces_url(second), headers=TOKEN_HEADERS) as response,
    ):
        listed = (await response.json())["result"]

    assert listed == [created]


async def test_state_is_saved_soon_after_a_change(
    make_sandbox: MakeSandbox, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A change reaches the state file while the server still runs."""
    path = tmp_path / "state.json"
    server = await make_sandbox(state_file=path, save_interval_s=0.0)

    async with http.post(
        namespaces_url(server), headers=TOKEN_HEADERS, json={"name": "early"}
    ):
        pass
    for _ in range(200):
        if path.exists():
            break
        await asyncio.sleep(0.01)

    saved = json.loads(path.read_text())
    assert [ns["namespace_name"] for ns in saved["accounts"][ACCOUNT]] == ["early"]


async def test_seeds_before_start_are_saved_on_stop(tmp_path: Path) -> None:
    """Names seeded before the loop runs still reach the state file on stop."""
    path = tmp_path / "state.json"
    server = SandboxServer(SandboxConfig(state_file=path))
    server.seed(ACCOUNT, ["seeded"])

    async with server:
        pass

    assert "seeded" in path.read_text()
