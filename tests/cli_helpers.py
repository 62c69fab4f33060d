"""Running the real CLI in a child process against a sandbox in the test's loop."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.sandbox import SandboxServer
from provisioner.sandbox.config import DEFAULT_ACCOUNT, DEFAULT_TOKEN

_SCRUBBED = (
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_ACCOUNT_ID",
    "CLOUDFLARE_EMAIL",
    "CLOUDFLARE_API_KEY",
    "CLOUDFLARE_BASE_URL",
    "PROVISIONER_CONFIG",
    "PROVISIONER_REPORT_DIR",
    "GITHUB_STEP_SUMMARY",
)


@dataclass
class Completed:
    """What a CLI run left: exit code and output."""

    code: int
    stdout: str
    stderr: str

    def log_events(self) -> list[dict[str, Any]]:
        """stderr's JSON log lines, parsed (other lines skipped)."""
        events = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events


def sandbox_env(server: SandboxServer, **extra: str) -> dict[str, str]:
    """Environment pointing the CLI at ``server`` with its default credentials."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(
        CLOUDFLARE_BASE_URL=server.base_url,
        CLOUDFLARE_API_TOKEN=DEFAULT_TOKEN,
        CLOUDFLARE_ACCOUNT_ID=DEFAULT_ACCOUNT,
    )
    env.update(extra)
    return env


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any Cloudflare or provisioner variable."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(extra)
    return env


async def spawn_cli(
    *args: str, env: dict[str, str], stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """Start ``python -m provisioner ARGS`` and return the running process."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provisioner",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )


async def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout_s: float = 90
) -> Completed:
    """Run ``python -m provisioner ARGS`` without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provisioner",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())


def write_csv_manifest(path: Path, names: list[str], **columns: list[str]) -> Path:
    """A CSV manifest with a namespace column and optional others."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["namespace", *columns])
        for index, name in enumerate(names):
            writer.writerow([name, *(values[index] for values in columns.values())])
    return path


def read_report(report_dir: Path) -> dict[str, Any]:
    """report.json, parsed."""
    report: dict[str, Any] = json.loads((report_dir / "report.json").read_text())
    return report
