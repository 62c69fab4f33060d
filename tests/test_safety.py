"""Never a duplicate, never a lost ID: chaos, kills, a revoked token, SIGTERM.

Each test runs the real CLI in a child process against a sandbox in the test's
own event loop, and judges the run by the sandbox's counts and holdings.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cli_helpers import (
    read_report,
    run_cli,
    sandbox_env,
    spawn_cli,
    write_csv_manifest,
)
from sandbox_fixtures import ACCOUNT, TOKEN_HEADERS, MakeSandbox, namespaces_url

from provisioner.sandbox import FaultRates, SandboxServer

FAST_RETRIES = {
    "PROVISIONER_RETRY_BACKOFF_INITIAL_S": "0.02",
    "PROVISIONER_RETRY_BACKOFF_MAX_S": "0.2",
    "PROVISIONER_RETRY_MAX_ATTEMPTS": "30",
}


def names(count: int) -> list[str]:
    return [f"tenant-{index:05d}" for index in range(count)]


def held(server: SandboxServer) -> dict[str, str]:
    return {ns.namespace_name: ns.namespace_id for ns in server.store.list_for(ACCOUNT)}


async def wait_for_creates(server: SandboxServer, count: int, timeout_s: float) -> None:
    """Return once the sandbox has committed ``count`` creates in all."""
    deadline = time.monotonic() + timeout_s
    while server.stats()["creates_committed"] < count:
        assert time.monotonic() < deadline, f"fewer than {count} creates"
        await asyncio.sleep(0.01)


def assert_report_matches_sandbox(report_dir: Path, server: SandboxServer) -> None:
    """Every row is created with exactly the ID the sandbox holds for its name."""
    rows = read_report(report_dir)["rows"]
    holdings = held(server)
    assert {r["namespace"] for r in rows} == set(holdings)
    for row in rows:
        assert row["outcome"] == "created", row
        assert row["namespace_id"] == holdings[row["namespace"]], row


@contextlib.asynccontextmanager
async def budget_hog(server: SandboxServer, every_s: float) -> AsyncIterator[list[int]]:
    """Another client of the same token that now and then spends the whole budget.

    Yields a list that receives how many requests each burst took to hit 429.
    """
    bursts: list[int] = []
    # A GET of a name nobody holds is cheap to answer, so a burst outruns the quota.
    url = namespaces_url(server, "hog-probe")

    async def hog() -> None:
        async with aiohttp.ClientSession(headers=TOKEN_HEADERS) as http:
            for _ in range(20):
                await asyncio.sleep(every_s)
                for sent in range(1, 5000):
                    try:
                        async with http.get(url) as response:
                            await response.read()
                    except aiohttp.ClientError:
                        continue  # the sandbox's faults hit this client too
                    if response.status == 429:
                        bursts.append(sent)
                        break

    task = asyncio.create_task(hog())
    try:
        yield bursts
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_chaos_leaves_exactly_the_manifest_with_every_id(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """Under 5xx, dropped and slow commits and 429s: no duplicate, every ID right."""
    faults = FaultRates(
        error_500=0.06,
        html_502=0.03,
        html_503=0.03,
        close=0.05,
        truncated=0.02,
        success_false=0.02,
        commit_then_close=0.05,
        commit_then_delay=0.02,
    )
    server = await make_sandbox(
        clock=time.monotonic,
        faults=faults,
        seed=7,
        quota=400,
        window_s=1.0,
        lockout_s=0.5,
        slow_delay_s=1.5,
    )
    manifest = write_csv_manifest(tmp_path / "m.csv", names(2000))
    env = sandbox_env(
        server,
        PROVISIONER_BUDGET_REQUESTS="400",
        PROVISIONER_BUDGET_WINDOW_S="1",
        PROVISIONER_TIMEOUT_S="0.5",
        PROVISIONER_CONCURRENCY="16",
        **FAST_RETRIES,
    )

    async with budget_hog(server, every_s=1.5):
        result = await run_cli(
            "apply",
            str(manifest),
            "--report-dir",
            str(tmp_path),
            env=env,
            timeout_s=280,
        )

    stats = server.stats()
    assert result.code == 0, result.stderr[-3000:]
    assert stats["duplicate_creates"] == 0
    assert stats["rate_limited"] > 0
    assert stats["faults"]["commit_then_close"] > 0
    assert stats["faults"]["commit_then_delay"] > 0
    assert set(held(server)) == set(names(2000))
    assert_report_matches_sandbox(tmp_path, server)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_killed_runs_resume_to_a_complete_report(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """SIGKILL at several points, then a rerun: no duplicate, no ID missing."""
    server = await make_sandbox(
        clock=time.monotonic,
        quota=250,
        window_s=1.0,
        faults=FaultRates(commit_then_close=0.03, error_500=0.03),
        seed=11,
    )
    manifest = write_csv_manifest(tmp_path / "m.csv", names(1000))
    env = sandbox_env(
        server,
        PROVISIONER_BUDGET_REQUESTS="250",
        PROVISIONER_BUDGET_WINDOW_S="1",
        **FAST_RETRIES,
    )
    args = ["apply", str(manifest), "--report-dir", str(tmp_path)]
    created_before_kill = []

    # Kill when the sandbox has seen this many creates, whatever the machine's speed.
    for kill_at in (150, 450, 700):
        process = await spawn_cli(*args, env=env, stderr=asyncio.subprocess.DEVNULL)
        await wait_for_creates(server, kill_at, timeout_s=60)
        process.kill()
        await process.wait()
        created_before_kill.append(len(held(server)))
    result = await run_cli(*args, env=env, timeout_s=120)

    assert result.code == 0, result.stderr[-3000:]
    assert created_before_kill[0] >= 150
    assert created_before_kill[-1] < 1000, "the last kill came after the end"
    stats = server.stats()
    assert stats["duplicate_creates"] == 0
    assert stats["rate_limited"] == 0, "a restarted run forgot what was spent"
    assert set(held(server)) == set(names(1000))
    assert_report_matches_sandbox(tmp_path, server)
    assert read_report(tmp_path)["summary"]["resumed"] is True


async def test_revoked_token_stops_the_run_at_once(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """A token revoked mid-run: at most `concurrency` more requests, exit 5."""
    server = await make_sandbox(clock=time.monotonic, revoke_after=50)
    manifest = write_csv_manifest(tmp_path / "m.csv", names(400))
    env = sandbox_env(server, PROVISIONER_CONCURRENCY="5")

    result = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )

    stats = server.stats()
    requests = sum(stats["requests_by_method_status"].values())
    assert result.code == 5, result.stderr[-3000:]
    assert requests - 50 <= 5
    rows = read_report(tmp_path)["rows"]
    assert len(rows) == 400
    outcomes = {r["namespace"]: r["outcome"] for r in rows}
    holdings = held(server)
    assert all(outcomes[name] == "created" for name in holdings)
    assert set(outcomes.values()) <= {"created", "failed", "not_attempted"}
    assert "credentials" in result.stderr.lower() or "refused" in result.stderr


async def test_sigterm_finishes_in_flight_calls_and_writes_the_report(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """SIGTERM mid-run: exit 6, every row accounted for, nothing created unrecorded."""
    server = await make_sandbox(clock=time.monotonic, quota=100, window_s=1.0)
    manifest = write_csv_manifest(tmp_path / "m.csv", names(600))
    env = sandbox_env(
        server, PROVISIONER_BUDGET_REQUESTS="100", PROVISIONER_BUDGET_WINDOW_S="1"
    )
    process = await spawn_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )

    await wait_for_creates(server, 150, timeout_s=60)
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 6, stderr.decode()[-3000:]
    rows = read_report(tmp_path)["rows"]
    assert len(rows) == 600
    outcomes = {r["namespace"]: r for r in rows}
    holdings = held(server)
    assert 0 < len(holdings) < 600
    for name, namespace_id in holdings.items():
        assert outcomes[name]["outcome"] == "created"
        assert outcomes[name]["namespace_id"] == namespace_id
    assert {r["outcome"] for r in rows} == {"created", "not_attempted"}

    rerun = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )
    assert rerun.code == 0, rerun.stderr[-3000:]
    assert server.stats()["duplicate_creates"] == 0
    assert_report_matches_sandbox(tmp_path, server)


async def test_restart_inside_the_window_remembers_the_spent_budget(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """A run killed after spending the window's budget, rerun at once, gets no 429."""
    server = await make_sandbox(clock=time.monotonic, quota=60, window_s=4.0)
    manifest = write_csv_manifest(tmp_path / "m.csv", names(150))
    env = sandbox_env(
        server, PROVISIONER_BUDGET_REQUESTS="60", PROVISIONER_BUDGET_WINDOW_S="4"
    )
    args = ["apply", str(manifest), "--report-dir", str(tmp_path)]
    process = await spawn_cli(*args, env=env, stderr=asyncio.subprocess.DEVNULL)

    for _ in range(100):  # wait until the first window's budget is spent
        await asyncio.sleep(0.05)
        if server.stats()["requests_total"] >= 60:
            break
    process.kill()
    await process.wait()
    result = await run_cli(*args, env=env, timeout_s=120)

    assert result.code == 0, result.stderr[-3000:]
    stats = server.stats()
    assert stats["requests_total"] >= 60
    assert stats["rate_limited"] == 0
    assert_report_matches_sandbox(tmp_path, server)


async def test_sigterm_while_waiting_for_the_budget_exits_within_the_grace(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """A stop while every worker waits for the next window ends promptly, reported."""
    server = await make_sandbox(clock=time.monotonic, quota=100, window_s=30.0)
    manifest = write_csv_manifest(tmp_path / "m.csv", names(300))
    env = sandbox_env(
        server,
        PROVISIONER_BUDGET_REQUESTS="100",
        PROVISIONER_BUDGET_WINDOW_S="30",
        PROVISIONER_GRACE_S="1",
    )
    process = await spawn_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )

    await wait_for_creates(server, 99, timeout_s=60)
    await asyncio.sleep(0.5)  # every worker now waits for the next window
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 15)

    assert process.returncode == 6, stderr.decode()[-3000:]
    rows = read_report(tmp_path)["rows"]
    assert len(rows) == 300
    created = {r["namespace"] for r in rows if r["outcome"] == "created"}
    assert created == set(held(server))
