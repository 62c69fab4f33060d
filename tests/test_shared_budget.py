"""A budget shared with another client of the same token: no lockout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
from cli_helpers import read_report, run_cli, sandbox_env, write_csv_manifest
from sandbox_fixtures import TOKEN_HEADERS, MakeSandbox, namespaces_url

QUOTA = 120
WINDOW_S = 4.0
OTHERS_SHARE = 0.3


async def test_another_client_spending_30_percent_causes_no_lockout(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """With 30% of the budget spent by someone else, the run never goes over."""
    server = await make_sandbox(clock=time.monotonic, quota=QUOTA, window_s=WINDOW_S)
    manifest = write_csv_manifest(
        tmp_path / "m.csv", [f"tenant-{i:04d}" for i in range(150)]
    )
    env = sandbox_env(
        server,
        PROVISIONER_BUDGET_REQUESTS=str(QUOTA),
        PROVISIONER_BUDGET_WINDOW_S=str(WINDOW_S),
    )
    sent_by_other = 0

    async def other_client() -> None:
        nonlocal sent_by_other
        interval_s = WINDOW_S / (QUOTA * OTHERS_SHARE)
        started = time.monotonic()
        async with aiohttp.ClientSession(headers=TOKEN_HEADERS) as http:
            for _ in range(2000):
                async with http.get(namespaces_url(server)) as answer:
                    await answer.read()
                sent_by_other += 1
                next_at = started + sent_by_other * interval_s
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    other = asyncio.create_task(other_client())
    await asyncio.sleep(2.0)  # the other client is already spending
    try:
        result = await run_cli(
            "apply", str(manifest), "--report-dir", str(tmp_path), env=env
        )
    finally:
        other.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await other

    stats = server.stats()
    assert result.code == 0, result.stderr[-3000:]
    assert sent_by_other > 50
    assert stats["lockouts"] == 0
    assert stats["rate_limited"] == 0
    assert read_report(tmp_path)["summary"]["outcomes"]["created"] == 150
