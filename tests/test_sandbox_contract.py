"""The sandbox against Cloudflare's OpenAPI extract, both ways.

Each request a test sends is validated against the spec before it goes out,
and each answer after it comes back, with openapi-core. The sandbox serves the
real paths under its own host, so requests are checked as if sent to the
spec's server (https://api.cloudflare.com/client/v4). Two documented
exceptions: a 429's code 971 is below the schema's minimum of 1000 for error
codes (Cloudflare sends it anyway, see API.md), so 429 bodies are checked with
that one code raised to 1000; and the spec declares no 5xx, so a 500 envelope
is checked against the 4XX failure schema.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, MultiDict
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.request.exceptions import (
    MissingRequiredRequestBody,
    SecurityValidationError,
)
from openapi_core.validation.response.exceptions import InvalidData
from sandbox_fixtures import (
    ACCOUNT,
    KEY_HEADERS,
    TOKEN_HEADERS,
    MakeSandbox,
    encode_name,
)
from yarl import URL

from provisioner.sandbox import SandboxServer
from provisioner.sandbox.config import FaultRates

SPEC_PATH = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "cloudflare"
    / "dispatch-namespaces.openapi.yaml"
)
SPEC_HOST = "https://api.cloudflare.com"
THROTTLE_CODE = 971

pytestmark = [
    pytest.mark.contract,
    pytest.mark.skipif(
        not SPEC_PATH.exists(), reason="the OpenAPI extract in ../shared is absent"
    ),
]


@dataclass
class SpecRequest:
    """A request as openapi-core reads it (its Request protocol)."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    content_type: str = "application/json"
    host_url: str = SPEC_HOST
    parameters: RequestParameters = field(init=False)

    def __post_init__(self) -> None:
        self.method = self.method.lower()
        self.parameters = RequestParameters(
            query=MultiDict(), header=CIMultiDict(self.headers), cookie=MultiDict()
        )


@dataclass
class SpecResponse:
    """An answer as openapi-core reads it (its Response protocol)."""

    status_code: int
    data: bytes
    content_type: str
    headers: CIMultiDict[str]


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    """The dispatch-namespace extract, parsed and checked once per module."""
    return OpenAPI.from_path(SPEC_PATH)


def with_throttle_code_allowed(response: SpecResponse) -> SpecResponse:
    """The 429 answer with code 971 raised to 1000, the schema's minimum."""
    body = json.loads(response.data)
    assert [error["code"] for error in body["errors"]] == [THROTTLE_CODE]
    patched = copy.deepcopy(body)
    patched["errors"][0]["code"] = 1000
    return SpecResponse(
        response.status_code,
        json.dumps(patched).encode(),
        response.content_type,
        response.headers,
    )


class ContractClient:
    """Sends requests to the sandbox, validating them and their answers."""

    def __init__(
        self, openapi: OpenAPI, http: aiohttp.ClientSession, server: SandboxServer
    ) -> None:
        self.openapi = openapi
        self.http = http
        self.server = server

    async def call(
        self,
        method: str,
        name: str | None = None,
        *,
        body: Any = None,
        headers: dict[str, str] = TOKEN_HEADERS,
        account: str = ACCOUNT,
        check_request: bool = True,
    ) -> tuple[int, dict[str, Any]]:
        """Validate, send, validate the answer; return status and JSON body."""
        path = f"/client/v4/accounts/{account}/workers/dispatch/namespaces"
        if name is not None:
            path += "/" + encode_name(name)
        data = None if body is None else json.dumps(body).encode()
        request = SpecRequest(method, path, data, headers)
        if check_request:
            self.openapi.validate_request(request)

        send_headers = {**headers, "Content-Type": "application/json"}
        url = URL(self.server.root_url + path, encoded=True)
        async with self.http.request(
            method, url, data=data, headers=send_headers
        ) as answer:
            response = SpecResponse(
                answer.status,
                await answer.read(),
                answer.content_type,
                CIMultiDict(answer.headers),
            )

        self.validate_answer(request, response)
        return response.status_code, json.loads(response.data)

    def validate_answer(self, request: SpecRequest, response: SpecResponse) -> None:
        """Validate against the spec, applying the two documented exceptions."""
        if response.status_code == 429:
            response = with_throttle_code_allowed(response)
        if response.status_code >= 500:
            response = SpecResponse(
                400, response.data, response.content_type, response.headers
            )
        self.openapi.validate_response(request, response)


@pytest.fixture
def contract(
    openapi: OpenAPI, http: aiohttp.ClientSession, sandbox: SandboxServer
) -> ContractClient:
    """A validating client of the default sandbox."""
    return ContractClient(openapi, http, sandbox)


async def test_every_operation_and_answer_follows_the_schema(
    contract: ContractClient,
) -> None:
    """List, create, get, patch, put and delete match the spec both ways."""
    calls = [
        ("GET", None, None),
        ("POST", None, {"name": "tenant/1 ü"}),
        ("GET", "tenant/1 ü", None),
        ("PATCH", "tenant/1 ü", {"trusted_workers": True}),
        ("PUT", "tenant/1 ü", {"name": "tenant-2"}),
        ("GET", None, None),
        ("DELETE", "tenant-2", None),
    ]

    statuses = [
        (await contract.call(method, name, body=body))[0]
        for method, name, body in calls
    ]

    assert statuses == [200] * len(calls)


async def test_email_and_key_requests_follow_the_schema(
    contract: ContractClient,
) -> None:
    """The legacy email and global key scheme satisfies the spec's security."""
    status, _ = await contract.call("GET", headers=KEY_HEADERS)

    assert status == 200


@pytest.mark.parametrize(
    ("method", "name", "body", "headers", "account", "status"),
    [
        ("GET", "absent", None, TOKEN_HEADERS, ACCOUNT, 404),
        ("DELETE", "absent", None, TOKEN_HEADERS, ACCOUNT, 404),
        ("POST", None, {}, TOKEN_HEADERS, ACCOUNT, 400),
        ("PATCH", "absent", {"name": "b"}, TOKEN_HEADERS, ACCOUNT, 404),
        ("GET", None, None, {"Authorization": "Bearer wrong"}, ACCOUNT, 401),
        ("GET", None, None, TOKEN_HEADERS, "9" * 32, 403),
    ],
)
async def test_error_answers_follow_the_failure_schema(
    method: str,
    name: str | None,
    body: Any,
    headers: dict[str, str],
    account: str,
    status: int,
    contract: ContractClient,
) -> None:
    """404, 400, 401 and 403 answers match the spec's 4XX failure envelope."""
    got, _ = await contract.call(
        method, name, body=body, headers=headers, account=account
    )

    assert got == status


async def test_duplicate_create_answer_follows_the_schema(
    contract: ContractClient,
) -> None:
    """The 400 "already exists" answer matches the failure envelope."""
    await contract.call("POST", body={"name": "twice"})

    status, body = await contract.call("POST", body={"name": "twice"})

    assert status == 400
    assert "already exists" in body["errors"][0]["message"]


async def test_missing_credentials_answer_follows_the_schema(
    contract: ContractClient,
) -> None:
    """A request without credentials breaks the spec, but its 401 answer does not."""
    with pytest.raises(SecurityValidationError):
        await contract.call("GET", headers={})

    status, _ = await contract.call("GET", headers={}, check_request=False)

    assert status == 401


async def test_bodyless_create_breaks_the_spec_and_is_answered_400(
    contract: ContractClient,
) -> None:
    """The spec requires a create body; without one the sandbox answers 400."""
    with pytest.raises(MissingRequiredRequestBody):
        await contract.call("POST")

    status, _ = await contract.call("POST", check_request=False)

    assert status == 400


async def test_throttled_answer_differs_from_the_schema_only_by_code_971(
    openapi: OpenAPI, http: aiohttp.ClientSession, make_sandbox: MakeSandbox
) -> None:
    """A 429 fails strict validation only because of 971, the documented exception."""
    server = await make_sandbox(quota=1)
    contract = ContractClient(openapi, http, server)
    await contract.call("GET")

    status, body = await contract.call("GET")

    assert status == 429
    strict = SpecResponse(
        429, json.dumps(body).encode(), "application/json", CIMultiDict()
    )
    request = SpecRequest(
        "GET", f"/client/v4/accounts/{ACCOUNT}/workers/dispatch/namespaces", None, {}
    )
    with pytest.raises(InvalidData, match="971 is less than the minimum of 1000"):
        openapi.validate_response(request, strict)


async def test_injected_500_is_a_failure_envelope(
    openapi: OpenAPI, http: aiohttp.ClientSession, make_sandbox: MakeSandbox
) -> None:
    """The error_500 fault's body is the spec's failure envelope."""
    server = await make_sandbox(faults=FaultRates(error_500=1.0))
    contract = ContractClient(openapi, http, server)

    status, body = await contract.call("POST", body={"name": "x"})

    assert status == 500
    assert body["success"] is False
