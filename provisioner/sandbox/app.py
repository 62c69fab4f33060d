"""The aiohttp.web application imitating Cloudflare's dispatch-namespace API.

Every request under ``/client/v4`` goes through one pipeline, in this order:
rate limit (429), authentication (401/403), revocation (403), route (404/405),
account (403), then at most one injected fault, then the handler. The
``/__sandbox/*`` endpoints skip the pipeline: they serve tests and demos.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from provisioner.sandbox.config import SandboxConfig
from provisioner.sandbox.faults import FaultInjector, FaultKind, Revocations
from provisioner.sandbox.ratelimit import FixedWindowLimiter
from provisioner.sandbox.stats import SandboxStats
from provisioner.sandbox.store import (
    NamespaceMissingError,
    NamespaceStore,
    NameTakenError,
)

API_PREFIX = "/client/v4"
NAMESPACES_PATH = API_PREFIX + "/accounts/{account_id}/workers/dispatch/namespaces"
# aiohttp matches on the path with %2F still encoded and decodes it afterwards,
# so "[^/]+" takes one segment and a name holding "/" still round-trips.
NAMESPACE_PATH = NAMESPACES_PATH + "/{name:[^/]+}"
STATS_PATH = "/__sandbox/stats"
RESET_STATS_PATH = "/__sandbox/reset-stats"

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Codes Cloudflare documents (API.md) ...
CODE_AUTHENTICATION = 10000
CODE_INVALID_TOKEN = 9109
CODE_NOT_FOUND = 10007
CODE_NO_ROUTE = 7003
CODE_THROTTLED = 971
# ... and codes the sandbox chose where Cloudflare documents none.
CODE_NAME_TAKEN = 10052
CODE_BAD_REQUEST = 10001
CODE_METHOD_NOT_ALLOWED = 7001
CODE_INTERNAL = 10002
CODE_NOT_PROCESSED = 10013

THROTTLED_MESSAGE = "Please wait and consider throttling your request speed"

_EDGE_PAGE = """<html>
<head><title>{status} {reason}</title></head>
<body>
<center><h1>{status} {reason}</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""
_EDGE_REASONS = {
    FaultKind.HTML_502: (502, "Bad Gateway"),
    FaultKind.HTML_503: (503, "Service Temporarily Unavailable"),
}

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def envelope(result: Any) -> web.Response:
    """A 200 answer in Cloudflare's envelope."""
    body = {"success": True, "errors": [], "messages": [], "result": result}
    return web.json_response(body)


def failure(status: int, code: int, message: str) -> web.Response:
    """An error answer in Cloudflare's envelope."""
    body = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return web.json_response(body, status=status)


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presented; ``key`` names it without holding the secret."""

    scheme: str  # "token", "key" or "none"
    key: str
    token: str = ""
    email: str = ""
    api_key: str = ""

    def __repr__(self) -> str:
        return f"Credential(scheme={self.scheme!r}, key={self.key!r})"


def _fingerprint(*parts: str) -> str:
    joined = "\0".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.sha256(joined).hexdigest()[:16]


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"),
        expected.encode("utf-8", "surrogateescape"),
    )


def identify(request: web.BaseRequest) -> Credential:
    """Read the credential a request presents, preferring the bearer token."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        return Credential("token", "token:" + _fingerprint(token), token=token)

    email = request.headers.get("X-Auth-Email")
    api_key = request.headers.get("X-Auth-Key")
    if email is not None or api_key is not None:
        email, api_key = email or "", api_key or ""
        key = "key:" + _fingerprint(email, api_key)
        return Credential("key", key, email=email, api_key=api_key)

    return Credential("none", "none")


class Sandbox:
    """The server's state and its request pipeline; one per running server."""

    def __init__(self, config: SandboxConfig, store: NamespaceStore) -> None:
        self.config = config
        self.store = store
        self.stats_counters = SandboxStats()
        self.limiter: FixedWindowLimiter | None = None
        if config.quota:
            self.limiter = FixedWindowLimiter(
                config.quota,
                config.window_s,
                config.effective_lockout_s,
                config.clock,
            )
        self.injector = FaultInjector(config.faults, config.seed)
        self.revocations = Revocations(config.revoke_after)
        # Set on shutdown so that answers held back by a delay fault give up.
        self.closing = asyncio.Event()

    def stats(self) -> dict[str, Any]:
        """Every counter, plus the namespaces held and the limiter's counts."""
        stats = self.stats_counters.as_dict()
        stats["namespaces"] = self.store.total()
        limiter = self.limiter
        stats["lockouts"] = limiter.lockouts if limiter else 0
        stats["max_requests_in_window"] = (
            limiter.max_requests_in_window if limiter else 0
        )
        return stats

    def reset_stats(self) -> None:
        """Zero the counters; namespaces, windows and lockouts stay."""
        self.stats_counters.reset()
        if self.limiter is not None:
            self.limiter.reset_counters()

    async def handle(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        """Run an API request through the pipeline and count how it ended."""
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)

        self.stats_counters.request_started()
        outcome: int | str = "closed"
        try:
            response, outcome = await self._pipeline(request, handler)
        finally:
            self.stats_counters.request_finished(request.method, outcome)
        return response

    async def _pipeline(
        self, request: web.Request, handler: Handler
    ) -> tuple[web.StreamResponse, int | str]:
        credential = identify(request)
        headers: dict[str, str] = {}
        if self.limiter is not None:
            decision = self.limiter.check(credential.key)
            headers = self.limiter.headers(decision)
            if not decision.allowed:
                self.stats_counters.rate_limited += 1
                if decision.lockout_started:
                    log.info(
                        "sandbox_lockout_started",
                        scheme=credential.scheme,
                        lockout_s=self.limiter.lockout_s,
                    )
                throttled = failure(429, CODE_THROTTLED, THROTTLED_MESSAGE)
                return _with_headers(throttled, headers), 429

        refusal = self._refuse(request, credential)
        if refusal is not None:
            return _with_headers(refusal, headers), refusal.status

        fault = self._choose_fault(request)
        response = await self._serve(request, handler, fault, headers)
        if response is None:
            return _drop(request), "closed"
        if fault is FaultKind.TRUNCATED:
            return response, "truncated"
        return _with_headers(response, headers), response.status

    def _refuse(
        self, request: web.Request, credential: Credential
    ) -> web.Response | None:
        """The error answer for bad credentials, route or account, else None."""
        config = self.config
        if credential.scheme == "token":
            accepted = bool(credential.token) and (
                config.accept_any_token or _same(credential.token, config.token)
            )
            if not accepted:
                self.stats_counters.auth_failures += 1
                return failure(401, CODE_INVALID_TOKEN, "Invalid access token")
        elif credential.scheme == "key":
            # "&", not "and": both compared, so timing never tells which was wrong.
            accepted = _same(credential.email, config.email) & _same(
                credential.api_key, config.api_key
            )
            if not accepted:
                self.stats_counters.auth_failures += 1
                return failure(403, CODE_AUTHENTICATION, "Authentication error")
        else:
            self.stats_counters.auth_failures += 1
            return failure(401, CODE_AUTHENTICATION, "Authentication error")

        if not self.revocations.admit(credential.key):
            self.stats_counters.faults[FaultKind.REVOKED] += 1
            return failure(403, CODE_AUTHENTICATION, "Authentication error")

        route_error = request.match_info.http_exception
        if isinstance(route_error, web.HTTPMethodNotAllowed):
            return failure(405, CODE_METHOD_NOT_ALLOWED, "Method not allowed")
        if route_error is not None:
            return failure(404, CODE_NO_ROUTE, "No route for that URI")

        if request.match_info["account_id"] not in config.accounts:
            return failure(403, CODE_AUTHENTICATION, "Authentication error")
        return None

    def _choose_fault(self, request: web.Request) -> FaultKind | None:
        fault = self.injector.choose(mutating=request.method in MUTATING_METHODS)
        if fault is not None:
            self.stats_counters.faults[fault] += 1
        return fault

    async def _serve(
        self,
        request: web.Request,
        handler: Handler,
        fault: FaultKind | None,
        headers: dict[str, str],
    ) -> web.StreamResponse | None:
        """Answer with the fault or the handler; None means drop the connection."""
        if fault is FaultKind.ERROR_500:
            return failure(500, CODE_INTERNAL, "Internal server error")
        if fault in _EDGE_REASONS:
            status, reason = _EDGE_REASONS[fault]
            page = _EDGE_PAGE.format(status=status, reason=reason)
            return web.Response(status=status, text=page, content_type="text/html")
        if fault is FaultKind.SUCCESS_FALSE:
            return failure(200, CODE_NOT_PROCESSED, "The request was not processed")
        if fault is FaultKind.CLOSE:
            return None
        if fault is FaultKind.TRUNCATED:
            return await _send_truncated(request, headers)

        response = await handler(request)

        if fault is FaultKind.COMMIT_THEN_CLOSE:
            return None
        if fault is FaultKind.COMMIT_THEN_DELAY:
            try:
                await asyncio.wait_for(self.closing.wait(), self.config.slow_delay_s)
            except TimeoutError:
                return response
            return None
        return response

    # Handlers: each runs after the pipeline admitted the request.

    async def list_namespaces(self, request: web.Request) -> web.StreamResponse:
        """GET …/namespaces: every namespace of the account, no paging."""
        account_id = request.match_info["account_id"]
        return envelope([ns.to_api() for ns in self.store.list_for(account_id)])

    async def create_namespace(self, request: web.Request) -> web.StreamResponse:
        """POST …/namespaces with ``{"name": …}``: 200 and the new namespace."""
        account_id = request.match_info["account_id"]
        body = await _read_object(request)
        if isinstance(body, web.Response):
            return body
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return failure(400, CODE_BAD_REQUEST, "name must be a non-empty string")

        try:
            record = self.store.create(account_id, name, self.config.user_id)
        except NameTakenError:
            self.stats_counters.duplicate_creates += 1
            return _name_taken(name)

        self.stats_counters.creates_committed += 1
        return envelope(record.to_api())

    async def get_namespace(self, request: web.Request) -> web.StreamResponse:
        """GET …/namespaces/{name}: the namespace, or 404."""
        account_id, name = request.match_info["account_id"], request.match_info["name"]
        record = self.store.get(account_id, name)
        if record is None:
            return _not_found(name)
        return envelope(record.to_api())

    async def delete_namespace(self, request: web.Request) -> web.StreamResponse:
        """DELETE …/namespaces/{name}: ``result: null``, or 404."""
        account_id, name = request.match_info["account_id"], request.match_info["name"]
        try:
            self.store.delete(account_id, name)
        except NamespaceMissingError:
            return _not_found(name)

        self.stats_counters.deletes_committed += 1
        return envelope(None)

    async def update_namespace(self, request: web.Request) -> web.StreamResponse:
        """PUT or PATCH …/namespaces/{name}: rename and/or set trusted_workers."""
        account_id, name = request.match_info["account_id"], request.match_info["name"]
        body = await _read_object(request)
        if isinstance(body, web.Response):
            return body
        new_name = body.get("name")
        trusted = body.get("trusted_workers")
        if new_name is not None and (not isinstance(new_name, str) or not new_name):
            return failure(400, CODE_BAD_REQUEST, "name must be a non-empty string")
        if trusted is not None and not isinstance(trusted, bool):
            return failure(400, CODE_BAD_REQUEST, "trusted_workers must be a boolean")

        try:
            record = self.store.update(
                account_id,
                name,
                self.config.user_id,
                new_name=new_name,
                trusted_workers=trusted,
            )
        except NamespaceMissingError:
            return _not_found(name)
        except NameTakenError:
            return _name_taken(new_name or name)

        self.stats_counters.updates_committed += 1
        if record.namespace_name != name:
            self.stats_counters.renames_committed += 1
        return envelope(record.to_api())

    async def stats_endpoint(self, request: web.Request) -> web.StreamResponse:
        """GET /__sandbox/stats: the counters as JSON, no authentication."""
        return web.json_response(self.stats())

    async def reset_stats_endpoint(self, request: web.Request) -> web.StreamResponse:
        """POST /__sandbox/reset-stats: zero the counters."""
        self.reset_stats()
        return web.json_response(self.stats())


def build_app(sandbox: Sandbox) -> web.Application:
    """The web.Application serving ``sandbox``."""

    @web.middleware
    async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await sandbox.handle(request, handler)

    app = web.Application(middlewares=[pipeline])
    router = app.router
    router.add_get(NAMESPACES_PATH, sandbox.list_namespaces, allow_head=False)
    router.add_post(NAMESPACES_PATH, sandbox.create_namespace)
    router.add_get(NAMESPACE_PATH, sandbox.get_namespace, allow_head=False)
    router.add_delete(NAMESPACE_PATH, sandbox.delete_namespace)
    router.add_put(NAMESPACE_PATH, sandbox.update_namespace)
    router.add_patch(NAMESPACE_PATH, sandbox.update_namespace)
    router.add_get(STATS_PATH, sandbox.stats_endpoint, allow_head=False)
    router.add_post(RESET_STATS_PATH, sandbox.reset_stats_endpoint)
    return app


async def _read_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The JSON object in the body, or the 400 answer saying what is wrong."""
    raw = await request.read()
    if not raw:
        return failure(400, CODE_BAD_REQUEST, "The request body is missing")
    try:
        body = json.loads(raw)
    except ValueError:
        return failure(400, CODE_BAD_REQUEST, "The request body is not valid JSON")
    if not isinstance(body, dict):
        return failure(400, CODE_BAD_REQUEST, "The request body is not a JSON object")
    return body


def _not_found(name: str) -> web.Response:
    return failure(404, CODE_NOT_FOUND, f"Dispatch namespace '{name}' not found")


def _name_taken(name: str) -> web.Response:
    message = f"A dispatch namespace named '{name}' already exists"
    return failure(400, CODE_NAME_TAKEN, message)


def _with_headers(
    response: web.StreamResponse, headers: dict[str, str]
) -> web.StreamResponse:
    response.headers.update(headers)
    return response


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer.

    aiohttp then fails to write the returned placeholder to the closed
    transport, treats that as the client going away, and sends nothing.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


async def _send_truncated(
    request: web.Request, headers: dict[str, str]
) -> web.StreamResponse:
    """Declare a whole success envelope, send half of it, then close."""
    body = json.dumps(
        {"success": True, "errors": [], "messages": [], "result": None}
    ).encode()
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "application/json"
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    _drop(request)
    return response
