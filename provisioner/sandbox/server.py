"""Running the sandbox: an async context manager for tests, a blocking runner."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable
from contextlib import suppress
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from provisioner.sandbox.app import STATS_PATH, Sandbox, build_app
from provisioner.sandbox.config import (
    DEFAULT_API_KEY,
    DEFAULT_TOKEN,
    SandboxConfig,
)
from provisioner.sandbox.store import (
    NamespaceRecord,
    NamespaceStore,
    load_state,
    write_atomically,
)

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8787
# Handlers still running at shutdown are cancelled after this; the delay fault
# already gives up when shutdown starts, so this only bounds the unexpected.
_SHUTDOWN_TIMEOUT_S = 1.0

log = structlog.get_logger(__name__)


class SandboxServer:
    """The sandbox on a local port: ``async with SandboxServer(cfg) as srv:``.

    Port 0 (the default) picks a free port. The state file, if configured, is
    read here and saved shortly after every change and on stop.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        self.config = config or SandboxConfig()
        self.host = host
        self.store = NamespaceStore()
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._save_task: asyncio.Task[None] | None = None

        if self.config.state_file is not None and load_state(
            self.store, self.config.state_file
        ):
            log.info("sandbox_state_loaded", namespaces=self.store.total())
        self._saved_version = self.store.version
        self.store.on_change = self._schedule_save
        self._sandbox = Sandbox(self.config, self.store)

    @property
    def port(self) -> int:
        """The port bound; only known once started."""
        if self._port is None:
            raise RuntimeError("The sandbox server is not started.")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://host:port``, where ``/__sandbox/stats`` lives."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL to give a client, ending in ``/client/v4``."""
        return f"{self.root_url}/client/v4"

    def stats(self) -> dict[str, Any]:
        """The same counters ``GET /__sandbox/stats`` answers."""
        return self._sandbox.stats()

    def reset_stats(self) -> None:
        """Zero the counters; namespaces, windows and lockouts stay."""
        self._sandbox.reset_stats()

    def seed(self, account_id: str, names: Iterable[str]) -> list[NamespaceRecord]:
        """Make the account hold these names (without counting any request)."""
        return self.store.seed(account_id, names, self.config.user_id)

    async def start(self) -> None:
        """Bind the port and serve."""
        if self._runner is not None:
            raise RuntimeError("The sandbox server is already started.")

        runner = web.AppRunner(
            build_app(self._sandbox),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._sandbox.closing.clear()

        log.info(
            "sandbox_started",
            base_url=self.base_url,
            accounts=len(self.config.accounts),
            quota=self.config.quota,
            window_s=self.config.window_s,
            faults=[kind for kind, rate in self.config.faults.items() if rate > 0],
        )

    async def stop(self) -> None:
        """Stop serving and write the state file a last time."""
        if self._runner is None:
            return

        self._sandbox.closing.set()
        await self._runner.cleanup()
        self._runner = None
        if self._save_task is not None:
            await self._save_task
        await self._save_if_changed()

        stats = self.stats()
        log.info(
            "sandbox_stopped",
            requests_total=stats["requests_total"],
            creates_committed=stats["creates_committed"],
            rate_limited=stats["rate_limited"],
            namespaces=stats["namespaces"],
        )

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _schedule_save(self) -> None:
        """Save soon after a change, in one task, so bursts cost one write."""
        if self.config.state_file is None:
            return
        if self._save_task is not None and not self._save_task.done():
            return
        try:
            self._save_task = asyncio.get_running_loop().create_task(self._save_soon())
        except RuntimeError:
            # No loop yet (seeding before start): stop() saves it.
            return

    async def _save_soon(self) -> None:
        closing = self._sandbox.closing
        while self.store.version != self._saved_version:
            with suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), self.config.save_interval_s)
            await self._save_if_changed()

    async def _save_if_changed(self) -> None:
        path = self.config.state_file
        if path is None or self.store.version == self._saved_version:
            return

        version = self.store.version
        await asyncio.to_thread(write_atomically, path, self.store.dumps())
        self._saved_version = version


def banner(server: SandboxServer) -> str:
    """The one line telling a user where the sandbox is and how to call it."""
    config = server.config
    token = config.token if config.token == DEFAULT_TOKEN else "<your --token>"
    api_key = config.api_key if config.api_key == DEFAULT_API_KEY else "<your --key>"
    return (
        f"Sandbox serving: CLOUDFLARE_BASE_URL={server.base_url} "
        f"CLOUDFLARE_ACCOUNT_ID={config.accounts[0]} CLOUDFLARE_API_TOKEN={token} "
        f"(or X-Auth-Email {config.email} with X-Auth-Key {api_key}); "
        f"stats at {server.root_url}{STATS_PATH}; Ctrl-C stops it."
    )


def run_sandbox(
    config: SandboxConfig, host: str = LOOPBACK, port: int = DEFAULT_PORT
) -> None:
    """Serve until SIGINT or SIGTERM, after printing the banner line."""
    asyncio.run(_serve_until_signalled(config, host, port))


async def _serve_until_signalled(config: SandboxConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async with SandboxServer(config, host=host, port=port) as server:
        print(banner(server), flush=True)
        await stop.wait()
