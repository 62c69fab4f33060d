"""The main job end to end: the real CLI, a manifest, a sandbox over loopback."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from cli_helpers import (
    clean_env,
    read_report,
    run_cli,
    sandbox_env,
    write_csv_manifest,
)
from sandbox_fixtures import ACCOUNT, MakeSandbox

REPO = Path(__file__).resolve().parents[1]


def names(count: int, prefix: str = "tenant") -> list[str]:
    return [f"{prefix}-{index:05d}" for index in range(count)]


async def test_creates_every_row_then_adopts_on_rerun(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """First run creates each row with its ID; a rerun adopts them all, no creates."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(
        tmp_path / "m.csv", names(40), tenant_id=[f"t{i}" for i in range(40)]
    )
    env = sandbox_env(server)
    reports = tmp_path / "reports"

    first = await run_cli("apply", str(manifest), "--report-dir", str(reports), env=env)
    first_report = read_report(reports)
    second = await run_cli(
        "apply", str(manifest), "--report-dir", str(reports), env=env
    )
    second_report = read_report(reports)

    assert first.code == 0, first.stderr
    held = {ns.namespace_name: ns.namespace_id for ns in server.store.list_for(ACCOUNT)}
    rows = first_report["rows"]
    assert [r["outcome"] for r in rows] == ["created"] * 40
    assert {r["namespace"]: r["namespace_id"] for r in rows} == held
    assert rows[0]["tenant_id"] == "t0"
    assert rows[0]["row"] == 2
    assert second.code == 0, second.stderr
    assert [r["outcome"] for r in second_report["rows"]] == ["existing"] * 40
    assert {r["namespace"]: r["namespace_id"] for r in second_report["rows"]} == held
    assert second_report["summary"]["requests_sent"] == 1
    stats = server.stats()
    assert stats["creates_committed"] == 40
    assert stats["duplicate_creates"] == 0


async def test_report_csv_carries_the_manifest_columns(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """report.csv has the report fields then the manifest's own columns."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(
        tmp_path / "m.csv", ["alpha", "beta"], tenant_id=["1", "2"], plan=["pro", "="]
    )

    result = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=sandbox_env(server)
    )

    assert result.code == 0, result.stderr
    with (tmp_path / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["namespace"] for r in rows] == ["alpha", "beta"]
    assert rows[0]["plan"] == "pro"
    assert rows[1]["plan"] == "'="
    assert all(r["namespace_id"] for r in rows)


async def test_paced_to_a_low_quota_without_lockout(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """With the budget set to the sandbox's quota, no request is ever refused."""
    server = await make_sandbox(clock=time.monotonic, quota=60, window_s=1.0)
    manifest = write_csv_manifest(tmp_path / "m.csv", names(200))
    env = sandbox_env(
        server, PROVISIONER_BUDGET_REQUESTS="60", PROVISIONER_BUDGET_WINDOW_S="1"
    )

    result = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )

    assert result.code == 0, result.stderr
    report = read_report(tmp_path)
    assert report["summary"]["outcomes"]["created"] == 200
    stats = server.stats()
    assert stats["rate_limited"] == 0
    assert stats["lockouts"] == 0
    assert stats["creates_committed"] == 200


async def test_invalid_manifest_sends_nothing_and_exits_4(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """A manifest with a bad row is refused whole: exit 4, no request at all."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(tmp_path / "m.csv", ["good-name", "bad/name"])

    result = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=sandbox_env(server)
    )

    assert result.code == 4
    assert "m.csv:3" in result.stderr
    assert sum(server.stats()["requests_by_method_status"].values()) == 0


async def test_skip_invalid_reports_invalid_rows_and_creates_the_rest(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """--skip-invalid provisions valid rows and reports the others as invalid."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(tmp_path / "m.csv", ["good-name", "bad/name"])

    result = await run_cli(
        "apply",
        str(manifest),
        "--skip-invalid",
        "--report-dir",
        str(tmp_path),
        env=sandbox_env(server),
    )

    assert result.code == 3
    rows = read_report(tmp_path)["rows"]
    assert [(r["row"], r["outcome"]) for r in rows] == [(2, "created"), (3, "invalid")]
    assert rows[1]["namespace"] == "bad/name"
    assert "'/'" in rows[1]["error_message"]
    assert [ns.namespace_name for ns in server.store.list_for(ACCOUNT)] == ["good-name"]


async def test_missing_credentials_exit_4_before_any_call(tmp_path: Path) -> None:
    """Without a token the run stops with one sentence and exit 4."""
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha"])

    result = await run_cli(
        "apply",
        str(manifest),
        "--report-dir",
        str(tmp_path),
        env=clean_env(CLOUDFLARE_ACCOUNT_ID=ACCOUNT),
    )

    assert result.code == 4
    assert "CLOUDFLARE_API_TOKEN" in result.stderr
    assert not (tmp_path / "report.json").exists()


async def test_usage_errors_exit_4(tmp_path: Path) -> None:
    """An unknown option or a missing argument is exit 4, as the README says."""
    unknown = await run_cli("apply", "--no-such-option", env=clean_env())
    missing = await run_cli("apply", env=clean_env())

    assert (unknown.code, missing.code) == (4, 4)


async def test_embedded_sandbox_demo_persists_between_runs(tmp_path: Path) -> None:
    """apply --sandbox creates the example, and a rerun finds every row existing."""
    manifest = REPO / "config" / "tenants.yaml"

    first = await run_cli(
        "apply", "--sandbox", str(manifest), env=clean_env(), cwd=tmp_path
    )
    first_report = read_report(tmp_path / "reports")
    second = await run_cli(
        "apply", "--sandbox", str(manifest), env=clean_env(), cwd=tmp_path
    )
    second_report = read_report(tmp_path / "reports")

    assert first.code == 0, first.stderr
    assert {r["outcome"] for r in first_report["rows"]} == {"created"}
    assert second.code == 0, second.stderr
    assert {r["outcome"] for r in second_report["rows"]} == {"existing"}
    first_ids = [r["namespace_id"] for r in first_report["rows"]]
    assert [r["namespace_id"] for r in second_report["rows"]] == first_ids
