"""The ``sandbox`` click command and the blocking runner behind it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sandbox_fixtures import ACCOUNT, TOKEN_HEADERS
from yarl import URL

from provisioner.sandbox import SandboxConfig
from provisioner.sandbox import cli as sandbox_cli
from provisioner.sandbox.config import DEFAULT_TOKEN, FaultRates

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[SandboxConfig, str, int]]:
    """Replace run_sandbox with a recorder of what it would have served."""
    calls: list[tuple[SandboxConfig, str, int]] = []

    def record(config: SandboxConfig, host: str, port: int) -> None:
        calls.append((config, host, port))

    monkeypatch.setattr(sandbox_cli, "run_sandbox", record)
    return calls


def test_help_documents_every_option_and_fault_kind() -> None:
    """--help names each option and each fault kind."""
    result = CliRunner().invoke(sandbox_cli.sandbox_command, ["--help"])

    assert result.exit_code == 0
    for option in (
        "--host", "--port", "--quota", "--window-s", "--lockout-s", "--token",
        "--accept-any-token", "--email", "--key", "--account", "--state-file",
        "--seed", "--fault", "--revoke-after", "--slow-delay-s",
    ):  # fmt: skip
        assert option in result.output
    for kind in FaultRates.kinds():
        assert kind in result.output


def test_defaults_serve_the_documented_sandbox(
    captured: list[tuple[SandboxConfig, str, int]],
) -> None:
    """Without options the command serves 127.0.0.1:8787 with the default config."""
    result = CliRunner().invoke(sandbox_cli.sandbox_command, [])

    assert result.exit_code == 0, result.output
    [(config, host, port)] = captured
    assert (host, port) == ("127.0.0.1", 8787)
    assert config == SandboxConfig()


def test_options_reach_the_config(
    captured: list[tuple[SandboxConfig, str, int]], tmp_path: Path
) -> None:
    """Every option lands in the matching config field."""
    args = [
        "--port", "0", "--quota", "10", "--window-s", "300", "--lockout-s", "60",
        "--token", "t", "--accept-any-token", "--email", "e@x.org", "--key", "k",
        "--account", "a" * 32, "--account", "b" * 32,
        "--state-file", str(tmp_path / "s.json"), "--seed", "9",
        "--fault", "close=0.1", "--fault", "html_502 = 0.2",
        "--revoke-after", "5", "--slow-delay-s", "2",
    ]  # fmt: skip

    result = CliRunner().invoke(sandbox_cli.sandbox_command, args)

    assert result.exit_code == 0, result.output
    [(config, _, port)] = captured
    assert port == 0
    assert config == SandboxConfig(
        accounts=("a" * 32, "b" * 32),
        token="t",
        email="e@x.org",
        api_key="k",
        accept_any_token=True,
        quota=10,
        window_s=300.0,
        lockout_s=60.0,
        faults=FaultRates(close=0.1, html_502=0.2),
        seed=9,
        revoke_after=5,
        slow_delay_s=2.0,
        state_file=tmp_path / "s.json",
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--fault", "close"],
        ["--fault", "close=lots"],
        ["--fault", "meteor=0.1"],
        ["--fault", "close=0.7", "--fault", "error_500=0.7"],
        ["--account", "x" * 33],
        ["--quota", "-1"],
    ],
)
def test_bad_options_are_usage_errors(
    args: list[str], captured: list[tuple[SandboxConfig, str, int]]
) -> None:
    """Malformed faults or settings exit 2 with a message and serve nothing."""
    result = CliRunner().invoke(sandbox_cli.sandbox_command, args)

    assert result.exit_code == 2
    assert "Error" in result.output
    assert captured == []


@pytest.mark.timeout(20)
def test_runner_prints_the_banner_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Run standalone, it prints a banner, serves, and on TERM saves state and exits."""
    state = tmp_path / "state.json"
    command = [
        sys.executable, "-m", "provisioner.sandbox.cli",
        "--port", "0", "--state-file", str(state),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None
        banner = ""
        while "Sandbox serving" not in banner:
            banner = process.stdout.readline()
            assert banner, "the sandbox exited before printing its banner"
        base_url = banner.split("CLOUDFLARE_BASE_URL=", 1)[1].split(" ", 1)[0]
        connection = http.client.HTTPConnection("127.0.0.1", URL(base_url).port)
        connection.request(
            "POST",
            f"{URL(base_url).path}/accounts/{ACCOUNT}/workers/dispatch/namespaces",
            body=b'{"name": "from-cli"}',
            headers=TOKEN_HEADERS,
        )
        created = connection.getresponse()
        created.read()
        connection.request("GET", "/__sandbox/stats")
        stats = json.load(connection.getresponse())
        connection.close()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)

    assert base_url.startswith("http://127.0.0.1:")
    assert f"CLOUDFLARE_API_TOKEN={DEFAULT_TOKEN}" in banner
    assert created.status == 200
    assert stats["creates_committed"] == 1
    assert process.returncode == 0
    assert "from-cli" in state.read_text()
