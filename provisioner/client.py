"""The Cloudflare dispatch-namespace API over aiohttp: one attempt per call.

This is the only module that imports aiohttp's client. Each method sends one
request through the run's pacer and either returns the envelope's result or
raises an error of the tree in ``provisioner.errors``, classified by HTTP
status first and Cloudflare's error code second. Retries are the caller's
business (``provisioner.retry``): the client never sends anything twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from yarl import URL

from provisioner.errors import (
    ApiError,
    CredentialsRefusedError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RunInterruptedError,
    ServerError,
    TransportError,
)
from provisioner.models import Namespace
from provisioner.names import url_safe
from provisioner.pacing import Pacer, retry_after_s

log = structlog.get_logger("provisioner.client")

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_USER_AGENT = "provisioner (+dispatch namespace reconciliation)"
_NO_HEADERS: Mapping[str, str] = {}


@dataclass(slots=True)
class ClientStats:
    """Counts of what the client sent and heard back."""

    requests_sent: int = 0
    rate_limited: int = 0
    transport_errors: int = 0
    succeeded: int = 0


class ApiClient:
    """One aiohttp session per run, paced, authenticated, envelope-aware."""

    def __init__(
        self,
        *,
        base_url: str,
        auth_headers: dict[str, str],
        pacer: Pacer,
        timeout_s: float = 30.0,
        concurrency: int = 10,
    ) -> None:
        self._base = URL(base_url.rstrip("/"))
        self._auth_headers = auth_headers
        self._secrets = [
            value.removeprefix("Bearer ")
            for key, value in auth_headers.items()
            if key.lower() in ("authorization", "x-auth-key")
        ]
        self._pacer = pacer
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=min(timeout_s, 10.0)
        )
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._halted = False
        self._collections: dict[str, URL] = {}
        self._debug = False
        self._log: Any = log
        self.stats = ClientStats()

    @property
    def base_url(self) -> str:
        """The API's base URL."""
        return str(self._base)

    @property
    def pacer(self) -> Pacer:
        """The run's shared limiter."""
        return self._pacer

    def halt(self) -> None:
        """Send nothing more: every later call raises RunInterruptedError."""
        self._halted = True
        self._pacer.abort()

    def __repr__(self) -> str:
        return f"ApiClient(base_url={str(self._base)!r})"

    async def __aenter__(self) -> ApiClient:
        connector = aiohttp.TCPConnector(limit=self._concurrency * 2)
        headers = {**self._auth_headers, "User-Agent": _USER_AGENT}
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=self._timeout,
            connector=connector,
            json_serialize=_json_text,
        )
        # Bound once: the module's logger resolves the configuration per event.
        self._log = log.bind()
        self._debug = self._log.is_enabled_for(logging.DEBUG)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the five calls -----------------------------------------------------

    async def list_namespaces(self, account_id: str) -> list[Namespace]:
        """Every namespace of the account (the API has no paging)."""
        result = await self._call("GET", self._collection(account_id))
        if not isinstance(result, list):
            raise ServerError("list answer's result is not an array", method="GET")
        return [_namespace(item, "GET") for item in result]

    async def get_namespace(self, account_id: str, name: str) -> Namespace:
        """One namespace by name; NotFoundError when it is absent."""
        result = await self._call("GET", self._item(account_id, name))
        return _namespace(result, "GET")

    async def create_namespace(self, account_id: str, name: str) -> Namespace:
        """Create a namespace (the API answers 200 with the new object)."""
        result = await self._call("POST", self._collection(account_id), {"name": name})
        created = _namespace(result, "POST")
        if created.namespace_name != name:
            # Not the namespace asked for: its ID must not be recorded as ours.
            raise ServerError(
                f"create of {name!r} answered with {created.namespace_name!r}",
                method="POST",
            )
        return created

    async def delete_namespace(self, account_id: str, name: str) -> None:
        """Delete a namespace and every Worker in it."""
        await self._call("DELETE", self._item(account_id, name))

    async def update_namespace(
        self,
        account_id: str,
        name: str,
        *,
        new_name: str | None = None,
        trusted_workers: bool | None = None,
    ) -> Namespace:
        """PATCH a namespace: a new name renames it; aiohttp never resends PATCH."""
        body: dict[str, Any] = {}
        if new_name is not None:
            body["name"] = new_name
        if trusted_workers is not None:
            body["trusted_workers"] = trusted_workers
        result = await self._call("PATCH", self._item(account_id, name), body)
        return _namespace(result, "PATCH")

    # -- one request --------------------------------------------------------

    def _collection(self, account_id: str) -> URL:
        url = self._collections.get(account_id)
        if url is None:
            path = f"accounts/{quote(account_id, safe='')}/workers/dispatch/namespaces"
            url = self._collections[account_id] = self._base / path
        return url

    def _item(self, account_id: str, name: str) -> URL:
        if not url_safe(name):
            # The name policy keeps these out of manifests; this is the last guard.
            raise PermanentError(f"name {name!r} is not safe in a URL path")
        collection = self._collection(account_id)
        return collection.with_path(
            f"{collection.raw_path}/{quote(name, safe='')}", encoded=True
        )

    async def _call(self, method: str, url: URL, body: Any = None) -> Any:
        session = self._session
        if session is None:
            raise RuntimeError("ApiClient used outside 'async with'")

        if self._halted:
            raise RunInterruptedError("the run is stopping; call not sent")
        pacer = self._pacer
        ticket = pacer.try_acquire()
        if ticket is None:
            ticket = await pacer.acquire()
            if self._halted:
                pacer.release(ticket)
                raise RunInterruptedError("the run is stopping; call not sent")
        # Case-insensitive: servers spell header names as they please.
        headers: Mapping[str, str] = _NO_HEADERS
        status = 0
        sent_at = time.monotonic()
        try:
            self.stats.requests_sent += 1
            async with session.request(method, url, json=body) as response:
                status = response.status
                headers = response.headers
                raw = await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise self._transport(exc, method, url, committed=False) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._transport(exc, method, url, committed=False) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            committed = method in _MUTATING
            raise self._transport(exc, method, url, committed=committed) from None
        finally:
            # A 429's "0 remaining" teaches the pacer nothing; the pause does.
            pacer.release(ticket, headers if headers and status != 429 else None)

        if self._debug:
            self._log.debug(
                "api_answered",
                method=method,
                path=url.raw_path,
                status=status,
                elapsed_ms=round((time.monotonic() - sent_at) * 1000, 1),
            )
        envelope = _envelope(raw)
        if status >= 400 or envelope is None or envelope["success"] is not True:
            raise self._failure(status, raw, envelope, headers, method, url)
        self.stats.succeeded += 1
        return envelope.get("result")

    def _transport(
        self, exc: BaseException, method: str, url: URL, *, committed: bool
    ) -> TransportError:
        self.stats.transport_errors += 1
        kind = type(exc).__name__
        return TransportError(
            f"no answer ({kind})",
            method=method,
            path=url.raw_path,
            may_have_committed=committed,
        )

    def _failure(
        self,
        status: int,
        raw: bytes,
        envelope: dict[str, Any] | None,
        headers: Mapping[str, str],
        method: str,
        url: URL,
    ) -> ApiError:
        """The error of the tree an answer that is not a success stands for."""
        where = {"method": method, "path": url.raw_path}
        code, message = _first_error(envelope)
        for secret in self._secrets:
            # A server that echoes the credential must not put it in a report.
            message = message.replace(secret, "***")
        mutating = method in _MUTATING

        if status == 429:
            self.stats.rate_limited += 1
            wait_s = retry_after_s(headers, now_epoch_s=time.time())
            self._pacer.rate_limited(wait_s)
            return RateLimitedError(
                message or "rate limited",
                retry_after_s=wait_s,
                status=status,
                code=code,
                may_have_committed=False,
                **where,
            )
        if status in (401, 403):
            return CredentialsRefusedError(
                message or "credentials refused",
                status=status,
                code=code,
                may_have_committed=False,
                **where,
            )
        if status >= 500 or envelope is None:
            what = message or _describe_body(raw, status)
            return ServerError(
                what, status=status, code=code, may_have_committed=mutating, **where
            )
        if status == 404:
            return NotFoundError(
                message or "not found",
                status=status,
                code=code,
                may_have_committed=False,
                **where,
            )
        if status >= 400:
            return PermanentError(
                message or f"HTTP {status}",
                status=status,
                code=code,
                may_have_committed=False,
                **where,
            )
        # Under 400 but not a success: the server's state is not known.
        return ServerError(
            message or "answer says success: false",
            status=status,
            code=code,
            may_have_committed=mutating,
            **where,
        )


def _json_text(value: Any) -> str:
    """Request bodies as JSON text (orjson: a few times faster than json)."""
    return orjson.dumps(value).decode()


def _envelope(raw: bytes) -> dict[str, Any] | None:
    """The JSON envelope, or None for anything else (HTML, cut-off, empty)."""
    try:
        decoded = orjson.loads(raw)
    except ValueError:
        return None
    if not isinstance(decoded, dict) or "success" not in decoded:
        return None
    return decoded


def _first_error(envelope: dict[str, Any] | None) -> tuple[int | None, str]:
    if envelope is None:
        return None, ""
    errors = envelope.get("errors")
    if not isinstance(errors, list) or not errors:
        return None, ""
    first = errors[0]
    if not isinstance(first, dict):
        return None, ""
    code = first.get("code")
    message = first.get("message")
    return (
        code if isinstance(code, int) else None,
        message if isinstance(message, str) else "",
    )


def _describe_body(raw: bytes, status: int) -> str:
    if not raw:
        return f"HTTP {status} with an empty body"
    if raw.lstrip()[:1] == b"<":
        return f"HTTP {status} with an HTML page instead of JSON"
    return f"HTTP {status} with a body that is not a JSON envelope"


def _namespace(result: Any, method: str) -> Namespace:
    try:
        return Namespace.from_api(result)
    except ValueError as exc:
        raise ServerError(
            f"unreadable namespace object: {exc}", method=method
        ) from None
