"""The sandbox's API over loopback: CRUD, envelope, auth, errors, stats."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

import aiohttp
import pytest
from sandbox_fixtures import (
    ACCOUNT,
    KEY_HEADERS,
    TOKEN_HEADERS,
    MakeSandbox,
    namespaces_url,
)

from provisioner.sandbox import SandboxServer

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: Any,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, dict[str, Any]]:
    """Send one request with the default token; return status and JSON body."""
    async with http.request(
        method, url, headers=TOKEN_HEADERS if headers is None else headers, **kwargs
    ) as response:
        return response.status, await response.json()


def assert_failure(body: dict[str, Any], code: int, text: str) -> None:
    """The body is a failure envelope with one error of this code."""
    assert body["success"] is False
    assert body["result"] is None
    assert body["messages"] == []
    assert [error["code"] for error in body["errors"]] == [code]
    assert text in body["errors"][0]["message"]


async def test_create_get_list_delete_round_trip(
    sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """Create answers 200 with a full namespace object that get, list and delete see."""
    status, created = await call(
        http, "POST", namespaces_url(sandbox), json={"name": "tenant-a"}
    )

    assert status == 200
    assert created["success"] is True
    assert created["errors"] == created["messages"] == []
    namespace = created["result"]
    assert namespace["namespace_name"] == "tenant-a"
    assert uuid.UUID(namespace["namespace_id"]).version == 4
    assert RFC3339_UTC.match(namespace["created_on"])
    assert namespace["modified_on"] == namespace["created_on"]
    assert HEX32.match(namespace["created_by"])
    assert HEX32.match(namespace["modified_by"])
    assert namespace["script_count"] == 0
    assert namespace["trusted_workers"] is False

    status, got = await call(http, "GET", namespaces_url(sandbox, "tenant-a"))
    assert (status, got["result"]) == (200, namespace)
    status, listed = await call(http, "GET", namespaces_url(sandbox))
    assert (status, listed["result"]) == (200, [namespace])

    status, deleted = await call(http, "DELETE", namespaces_url(sandbox, "tenant-a"))
    assert (status, deleted["success"], deleted["result"]) == (200, True, None)
    status, listed = await call(http, "GET", namespaces_url(sandbox))
    assert listed["result"] == []


async def test_duplicate_create_is_400_already_exists_and_counted(
    sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """Creating a held name answers 400 "already exists" and counts a duplicate."""
    await call(http, "POST", namespaces_url(sandbox), json={"name": "dup"})

    status, body = await call(
        http, "POST", namespaces_url(sandbox), json={"name": "dup"}
    )

    assert status == 400
    assert_failure(body, 10052, "already exists")
    stats = sandbox.stats()
    assert stats["creates_committed"] == 1
    assert stats["duplicate_creates"] == 1
    assert stats["namespaces"] == 1


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH", "PUT"])
async def test_absent_name_is_404_code_10007(
    method: str, sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """Get, delete and update of a name not held answer 404 code 10007."""
    body_kw: dict[str, Any] = (
        {"json": {"trusted_workers": True}} if method in {"PATCH", "PUT"} else {}
    )

    status, body = await call(http, method, namespaces_url(sandbox, "ghost"), **body_kw)

    assert status == 404
    assert_failure(body, 10007, "not found")


async def test_patch_renames_keeping_id_and_put_sets_trust(
    sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """PATCH with a new name renames in place; PUT sets trusted_workers."""
    _, created = await call(http, "POST", namespaces_url(sandbox), json={"name": "old"})

    status, renamed = await call(
        http, "PATCH", namespaces_url(sandbox, "old"), json={"name": "new"}
    )
    _, trusted = await call(
        http, "PUT", namespaces_url(sandbox, "new"), json={"trusted_workers": True}
    )

    assert status == 200
    assert renamed["result"]["namespace_name"] == "new"
    assert renamed["result"]["namespace_id"] == created["result"]["namespace_id"]
    assert trusted["result"]["trusted_workers"] is True
    assert trusted["result"]["created_on"] == created["result"]["created_on"]
    status, _ = await call(http, "GET", namespaces_url(sandbox, "old"))
    assert status == 404
    stats = sandbox.stats()
    assert (stats["updates_committed"], stats["renames_committed"]) == (2, 1)


async def test_rename_onto_a_held_name_is_400_already_exists(
    sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """Renaming onto another namespace's name is refused and changes nothing."""
    sandbox.seed(ACCOUNT, ["a", "b"])

    status, body = await call(
        http, "PATCH", namespaces_url(sandbox, "a"), json={"name": "b"}
    )

    assert status == 400
    assert_failure(body, 10052, "already exists")
    assert [ns.namespace_name for ns in sandbox.store.list_for(ACCOUNT)] == ["a", "b"]


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("POST", None),
        ("POST", b"{not json"),
        ("POST", b"[]"),
        ("POST", b"{}"),
        ("POST", b'{"name": ""}'),
        ("POST", b'{"name": 7}'),
        ("PATCH", None),
        ("PATCH", b'{"trusted_workers": "yes"}'),
        ("PUT", b'{"name": ""}'),
    ],
)
async def test_missing_or_invalid_body_is_400(
    method: str,
    payload: bytes | None,
    sandbox: SandboxServer,
    http: aiohttp.ClientSession,
) -> None:
    """A missing, malformed or mistyped body answers 400 and commits nothing."""
    sandbox.seed(ACCOUNT, ["kept"])
    url = namespaces_url(sandbox, None if method == "POST" else "kept")
    headers = {**TOKEN_HEADERS, "Content-Type": "application/json"}

    status, body = await call(http, method, url, headers=headers, data=payload)

    assert status == 400
    assert_failure(body, 10001, "")
    assert [ns.namespace_name for ns in sandbox.store.list_for(ACCOUNT)] == ["kept"]


@pytest.mark.parametrize(
    "name",
    ["a/b", "50%", "a%2Fb", "sp ace", "q?x#y", "ü-名前", "..", ".", "{x}", "+&=;"],
)
async def test_names_round_trip_through_percent_encoding(
    name: str, sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """A name with URL-special characters, percent-encoded, reaches its namespace."""
    await call(http, "POST", namespaces_url(sandbox), json={"name": name})

    status, got = await call(http, "GET", namespaces_url(sandbox, name))
    patched_status, _ = await call(
        http, "PATCH", namespaces_url(sandbox, name), json={"trusted_workers": True}
    )
    deleted_status, _ = await call(http, "DELETE", namespaces_url(sandbox, name))

    assert status == 200
    assert got["result"]["namespace_name"] == name
    assert (patched_status, deleted_status) == (200, 200)
    assert sandbox.store.total() == 0


async def test_random_names_round_trip(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """Seeded random names of control, Latin, CJK and emoji characters round-trip."""
    server = await make_sandbox(quota=0)
    draw = random.Random(1)
    alphabet = [chr(c) for c in range(1, 0x250)] + ["名", "😀", "\u200b", "\ufeff"]
    names = {
        "".join(draw.choice(alphabet) for _ in range(draw.randint(1, 8)))
        for _ in range(150)
    }

    mismatches = []
    for name in sorted(names):
        await call(http, "POST", namespaces_url(server), json={"name": name})
        status, got = await call(http, "GET", namespaces_url(server, name))
        if status != 200 or got["result"]["namespace_name"] != name:
            mismatches.append((name, status))

    assert mismatches == []
    assert server.store.total() == len(names)


@pytest.mark.parametrize("headers", [TOKEN_HEADERS, KEY_HEADERS])
async def test_both_auth_schemes_are_accepted(
    headers: dict[str, str], sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """A bearer token and an email plus global key both authenticate."""
    status, body = await call(http, "GET", namespaces_url(sandbox), headers=headers)

    assert (status, body["success"]) == (200, True)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Authorization": "Bearer wrong"}, 401, 9109),
        ({"Authorization": "Bearer "}, 401, 9109),
        ({"Authorization": "Basic c2FuZGJveA=="}, 401, 9109),
        ({**KEY_HEADERS, "X-Auth-Key": "wrong"}, 403, 10000),
        ({"X-Auth-Email": KEY_HEADERS["X-Auth-Email"]}, 403, 10000),
        ({}, 401, 10000),
    ],
)
async def test_bad_or_missing_credentials_are_refused(
    headers: dict[str, str],
    status: int,
    code: int,
    sandbox: SandboxServer,
    http: aiohttp.ClientSession,
) -> None:
    """Wrong, malformed or absent credentials answer 401/403 and commit nothing."""
    got_status, body = await call(
        http, "POST", namespaces_url(sandbox), headers=headers, json={"name": "x"}
    )

    assert got_status == status
    assert_failure(body, code, "")
    assert sandbox.store.total() == 0
    assert sandbox.stats()["auth_failures"] == 1


async def test_accept_any_token_takes_every_non_empty_token(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """With accept_any_token, any bearer token works and an empty one still fails."""
    server = await make_sandbox(accept_any_token=True)

    ok, _ = await call(
        http, "GET", namespaces_url(server), headers={"Authorization": "Bearer x"}
    )
    empty, _ = await call(
        http, "GET", namespaces_url(server), headers={"Authorization": "Bearer"}
    )

    assert (ok, empty) == (200, 401)


async def test_configured_credentials_and_accounts_replace_the_defaults(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """Custom token, key and accounts are served; the defaults then fail."""
    other = "f" * 32
    server = await make_sandbox(
        token="t1", email="me@example.org", api_key="k1", accounts=(other, ACCOUNT)
    )

    by_token, _ = await call(
        http,
        "GET",
        namespaces_url(server, account=other),
        headers={"Authorization": "Bearer t1"},
    )
    by_key, _ = await call(
        http,
        "GET",
        namespaces_url(server, account=other),
        headers={"X-Auth-Email": "me@example.org", "X-Auth-Key": "k1"},
    )
    default, _ = await call(http, "GET", namespaces_url(server))

    assert (by_token, by_key, default) == (200, 200, 401)


async def test_unknown_account_is_403_authentication_error(
    sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """An account the sandbox does not serve answers 403 code 10000."""
    status, body = await call(http, "GET", namespaces_url(sandbox, account="9" * 32))

    assert status == 403
    assert_failure(body, 10000, "Authentication error")


async def test_accounts_are_kept_apart(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    """A namespace created in one account is not seen from another."""
    other = "e" * 32
    server = await make_sandbox(accounts=(ACCOUNT, other))
    await call(http, "POST", namespaces_url(server), json={"name": "mine"})

    _, listed = await call(http, "GET", namespaces_url(server, account=other))
    status, _ = await call(http, "GET", namespaces_url(server, "mine", account=other))

    assert listed["result"] == []
    assert status == 404


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/accounts", 404, 7003),
        ("GET", f"/accounts/{ACCOUNT}/workers/dispatch/namespaces/a/b", 404, 7003),
        ("POST", f"/accounts/{ACCOUNT}/workers/dispatch/namespaces/a", 405, 7001),
    ],
)
async def test_unknown_route_or_method_answers_an_envelope(
    method: str,
    path: str,
    status: int,
    code: int,
    sandbox: SandboxServer,
    http: aiohttp.ClientSession,
) -> None:
    """Unrouted paths and methods under /client/v4 answer JSON envelopes."""
    got_status, body = await call(http, method, sandbox.base_url + path)

    assert got_status == status
    assert_failure(body, code, "")


async def test_stats_endpoint_matches_the_in_process_stats(
    sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """/__sandbox/stats needs no auth, is not counted, and equals server.stats()."""
    await call(http, "POST", namespaces_url(sandbox), json={"name": "one"})
    await call(http, "POST", namespaces_url(sandbox), json={"name": "one"})
    await call(http, "GET", namespaces_url(sandbox, "missing"))

    async with http.get(f"{sandbox.root_url}/__sandbox/stats") as response:
        served = await response.json()

    assert served == sandbox.stats()
    assert served["requests_by_method_status"] == {
        "GET 404": 1,
        "POST 200": 1,
        "POST 400": 1,
    }
    assert served["requests_total"] == 3
    assert served["creates_committed"] == 1
    assert served["duplicate_creates"] == 1
    assert served["namespaces"] == 1
    assert served["max_requests_in_window"] == 3
    assert served["in_flight"] == 0
    assert set(served["faults"]) >= {"close", "truncated", "commit_then_delay"}


async def test_reset_stats_zeroes_counters_but_keeps_namespaces(
    sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """POST /__sandbox/reset-stats zeroes the counters and keeps the state."""
    await call(http, "POST", namespaces_url(sandbox), json={"name": "one"})

    async with http.post(f"{sandbox.root_url}/__sandbox/reset-stats") as response:
        after = await response.json()

    assert response.status == 200
    assert after["requests_total"] == 0
    assert after["creates_committed"] == 0
    assert after["namespaces"] == 1


async def test_seed_adds_names_without_counting_requests(
    sandbox: SandboxServer, http: aiohttp.ClientSession
) -> None:
    """server.seed makes names visible to the API and leaves the counters at zero."""
    seeded = sandbox.seed(ACCOUNT, ["s1", "s2", "s1"])

    _, listed = await call(http, "GET", namespaces_url(sandbox))

    assert [ns.namespace_name for ns in seeded] == ["s1", "s2", "s1"]
    assert seeded[0] == seeded[2]
    assert [ns["namespace_name"] for ns in listed["result"]] == ["s1", "s2"]
    assert sandbox.stats()["creates_committed"] == 0
