"""A ``provisioner sandbox`` in its own process, on a free loopback port.

The sandbox picks the port itself (``--port 0``) and names its base URL in
its banner line, so no port is guessed and none can be taken in between.
Its output goes to a file, never to a pipe that could fill up and stall it.
The process is stopped on leaving the ``with`` block, whatever happened.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

from children import child_env, provisioner_argv

from provisioner.sandbox.config import DEFAULT_API_KEY, DEFAULT_EMAIL

LOOPBACK = "127.0.0.1"
_BANNER = re.compile(rb"CLOUDFLARE_BASE_URL=(\S+)")
_START_LIMIT_S = 30.0
_STOP_LIMIT_S = 10.0
_POLL_S = 0.05
_HTTP_TIMEOUT_S = 60.0


class SandboxError(RuntimeError):
    """The sandbox did not start, or answered something unexpected."""


class SandboxProcess:
    """``with SandboxProcess(workdir, quota=200, window_s=5) as sandbox: ...``."""

    def __init__(self, workdir: Path, *, quota: int, window_s: float = 5.0) -> None:
        self.workdir = workdir
        self.quota = quota
        self.window_s = window_s
        self.base_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> SandboxProcess:
        argv = provisioner_argv(
            "sandbox",
            *("--host", LOOPBACK, "--port", "0"),
            *("--quota", str(self.quota), "--window-s", str(self.window_s)),
        )
        self._log = tempfile.NamedTemporaryFile(
            dir=self.workdir, prefix="sandbox-", suffix=".log", delete=False
        )
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=child_env(self.workdir, {}),
            cwd=self.workdir,
        )
        try:
            self.base_url = self._await_banner()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; idempotent."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_LIMIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _await_banner(self) -> str:
        assert self._process is not None
        assert self._log is not None
        deadline_s = time.monotonic() + _START_LIMIT_S
        log_path = Path(self._log.name)
        while time.monotonic() < deadline_s:
            found = _BANNER.search(log_path.read_bytes())
            if found:
                return found.group(1).decode()
            if self._process.poll() is not None:
                break
            time.sleep(_POLL_S)
        tail = log_path.read_bytes()[-2000:].decode("utf-8", "replace")
        raise SandboxError(f"the sandbox did not start; its output ends:\n{tail}")

    # -- what the sandbox saw -------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The counters at ``GET /__sandbox/stats``."""
        stats = self._get("/__sandbox/stats", {})
        assert isinstance(stats, dict)
        return stats

    def names(self, account_id: str) -> set[str]:
        """Every namespace name the account holds.

        Asked with the legacy email and key, a credential of its own, so the
        call neither counts against the token's budget nor meets its lockout.
        """
        path = urlsplit(self.base_url).path
        headers = {"X-Auth-Email": DEFAULT_EMAIL, "X-Auth-Key": DEFAULT_API_KEY}
        envelope = self._get(
            f"{path}/accounts/{account_id}/workers/dispatch/namespaces", headers
        )
        if not isinstance(envelope, dict) or envelope.get("success") is not True:
            raise SandboxError(f"listing namespaces failed: {envelope!r:.300}")
        return {item["namespace_name"] for item in envelope["result"]}

    def _get(self, path: str, headers: dict[str, str]) -> Any:
        where = urlsplit(self.base_url)
        connection = http.client.HTTPConnection(
            LOOPBACK, where.port, timeout=_HTTP_TIMEOUT_S
        )
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        return json.loads(body)
