"""What operators and schedulers rely on: plan, prune, export, lock, logs, secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cli_helpers import read_report, run_cli, sandbox_env, write_csv_manifest
from prometheus_client.parser import text_string_to_metric_families
from sandbox_fixtures import ACCOUNT, MakeSandbox

from provisioner.lock import account_locks
from provisioner.manifest import Manifest

SECRET_TOKEN = "tok-SECRET-5f0c1e9a77"
SECRET_KEY = "key-SECRET-b2d4c6e8f0"


def files_under(directory: Path) -> list[str]:
    """The text of every file below ``directory``."""
    return [p.read_text() for p in directory.rglob("*") if p.is_file()]


async def test_plan_exit_codes_follow_pending_changes(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """plan exits 2 while creates are pending and 0 once the account matches."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha", "beta"])
    env = sandbox_env(server)
    reports = ["--report-dir", str(tmp_path / "r")]

    before = await run_cli("plan", str(manifest), "--json", *reports, env=env)
    applied = await run_cli("apply", str(manifest), *reports, env=env)
    after = await run_cli("plan", str(manifest), *reports, env=env)

    assert before.code == 2, before.stderr
    assert json.loads(before.stdout)["counts"]["create"] == 2
    assert applied.code == 0, applied.stderr
    assert after.code == 0, after.stderr
    assert "0 to create" in after.stdout
    creates = server.stats()["requests_by_method_status"].get("POST 200", 0)
    assert creates == 2


async def test_plan_lists_unmanaged_and_sends_only_lists(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """plan reports namespaces outside the manifest and sends nothing but a LIST."""
    server = await make_sandbox(clock=time.monotonic)
    server.seed(ACCOUNT, ["alpha", "stray"])
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha"])

    result = await run_cli("plan", str(manifest), env=sandbox_env(server))

    assert result.code == 0, result.stderr
    assert "unmanaged stray" in result.stdout
    assert server.stats()["requests_by_method_status"] == {"GET 200": 1}


async def test_prune_refused_above_threshold_deletes_nothing(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """Pruning more than the threshold share is refused (exit 4), nothing deleted."""
    server = await make_sandbox(clock=time.monotonic)
    server.seed(ACCOUNT, ["keep", "stray-1", "stray-2"])
    manifest = write_csv_manifest(tmp_path / "m.csv", ["keep"])
    env = sandbox_env(server)

    planned = await run_cli("plan", str(manifest), "--prune", env=env)
    applied = await run_cli(
        "apply", str(manifest), "--prune", "--report-dir", str(tmp_path), env=env
    )

    assert planned.code == 4
    assert "prune refused" in planned.stdout
    assert applied.code == 4
    assert "threshold" in applied.stderr
    assert server.stats()["deletes_committed"] == 0
    assert len(server.store.list_for(ACCOUNT)) == 3


async def test_forced_prune_deletes_and_reports_each_deletion(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """--force-prune deletes unmanaged namespaces, reported as deleted with IDs."""
    server = await make_sandbox(clock=time.monotonic)
    seeded = {
        ns.namespace_name: ns.namespace_id for ns in server.seed(ACCOUNT, ["stray"])
    }
    manifest = write_csv_manifest(tmp_path / "m.csv", ["keep"])
    env = sandbox_env(server)

    planned = await run_cli("plan", str(manifest), "--prune", "--force-prune", env=env)
    applied = await run_cli(
        "apply",
        str(manifest),
        "--prune",
        "--force-prune",
        "--report-dir",
        str(tmp_path),
        env=env,
    )

    assert planned.code == 2
    assert "delete stray" in planned.stdout
    assert applied.code == 0, applied.stderr
    rows = {r["namespace"]: r for r in read_report(tmp_path)["rows"]}
    assert rows["keep"]["outcome"] == "created"
    assert rows["stray"]["outcome"] == "deleted"
    assert rows["stray"]["row"] is None
    assert rows["stray"]["namespace_id"] == seeded["stray"]
    assert [ns.namespace_name for ns in server.store.list_for(ACCOUNT)] == ["keep"]


async def test_prune_refuses_an_empty_manifest(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """An empty manifest never prunes, even when forced."""
    server = await make_sandbox(clock=time.monotonic)
    server.seed(ACCOUNT, ["a"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("namespace\n")

    result = await run_cli(
        "apply",
        str(manifest),
        "--prune",
        "--force-prune",
        "--report-dir",
        str(tmp_path),
        env=sandbox_env(server),
    )

    assert result.code == 4
    assert "empty manifest" in result.stderr
    assert server.stats()["deletes_committed"] == 0


async def test_delete_answered_404_after_a_dropped_connection_is_deleted(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """A DELETE that committed, then lost its answer, is settled as deleted."""
    from provisioner.sandbox import FaultRates

    server = await make_sandbox(
        clock=time.monotonic, faults=FaultRates(commit_then_close=1.0)
    )
    server.seed(ACCOUNT, ["keep", "stray"])
    manifest = write_csv_manifest(tmp_path / "m.csv", ["keep"])

    result = await run_cli(
        "apply",
        str(manifest),
        "--prune",
        "--force-prune",
        "--report-dir",
        str(tmp_path),
        env=sandbox_env(server, PROVISIONER_RETRY_BACKOFF_INITIAL_S="0.01"),
    )

    assert result.code == 0, result.stderr
    rows = {r["namespace"]: r["outcome"] for r in read_report(tmp_path)["rows"]}
    assert rows == {"keep": "existing", "stray": "deleted"}
    assert server.stats()["deletes_committed"] == 1


@pytest.mark.parametrize("suffix", [".csv", ".yaml"])
async def test_export_applied_back_plans_no_change(
    tmp_path: Path, make_sandbox: MakeSandbox, suffix: str
) -> None:
    """An exported manifest, planned against the same account, changes nothing."""
    server = await make_sandbox(clock=time.monotonic)
    server.seed(ACCOUNT, ["alpha", "beta", "gamma"])
    server.store.update(ACCOUNT, "beta", server.config.user_id, trusted_workers=True)
    exported = tmp_path / f"export{suffix}"
    env = sandbox_env(server)

    result = await run_cli("export", "--output", str(exported), env=env)
    planned = await run_cli("plan", str(exported), "--json", env=env)

    assert result.code == 0, result.stderr
    rows = list(Manifest(exported).rows())
    assert [(r.namespace, r.trusted_workers) for r in rows] == [
        ("alpha", False),
        ("beta", True),
        ("gamma", False),
    ]
    assert planned.code == 0, planned.stdout + planned.stderr
    counts = json.loads(planned.stdout)["counts"]
    assert counts["adopt"] == 3
    assert counts["unmanaged"] == 0


async def test_second_run_on_the_same_account_exits_7(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """While another run holds the account's lock, apply exits 7 and sends nothing."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha"])
    env = sandbox_env(server, PROVISIONER_LOCK_DIR=str(tmp_path))

    with account_locks([ACCOUNT], server.base_url, tmp_path):
        result = await run_cli("apply", str(manifest), env=env)

    assert result.code == 7
    assert "lock" in result.stderr
    assert sum(server.stats()["requests_by_method_status"].values()) == 0


async def test_logs_are_json_lines_off_a_terminal(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """Off a terminal every log line is JSON with a stable event name."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha", "beta"])

    result = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=sandbox_env(server)
    )

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    names = [e["event"] for e in events]
    assert names[0] == "run_started"
    assert names.count("namespace_created") == 2
    created = [e for e in events if e["event"] == "namespace_created"]
    assert {(e["namespace"], e["line"]) for e in created} == {("alpha", 2), ("beta", 3)}
    assert names[-1] == "run_finished"
    assert all("timestamp" in e and "level" in e for e in events)


async def test_secrets_appear_nowhere(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """A known token and key are in no log line, report, journal or error text."""
    server = await make_sandbox(
        clock=time.monotonic, token=SECRET_TOKEN, api_key=SECRET_KEY, revoke_after=3
    )
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha", "beta", "gamma"])
    env = sandbox_env(
        server,
        CLOUDFLARE_API_TOKEN=SECRET_TOKEN,
        CLOUDFLARE_EMAIL="ops@example.com",
        CLOUDFLARE_API_KEY=SECRET_KEY,
        PROVISIONER_LOG_LEVEL="debug",
        PROVISIONER_CONCURRENCY="1",
    )

    result = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )
    bad = await run_cli(
        "apply",
        str(manifest),
        "--report-dir",
        str(tmp_path / "bad"),
        env={**env, "PROVISIONER_CONCURRENCY": "zero"},
    )

    assert result.code == 5
    assert bad.code == 4
    texts = [result.stdout, result.stderr, bad.stdout, bad.stderr]
    texts += files_under(tmp_path)
    for text in texts:
        assert SECRET_TOKEN not in text
        assert SECRET_KEY not in text


async def test_scheduled_run_leaves_logs_metrics_summary_and_report(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """Off a terminal: JSON logs, a parseable metrics textfile, a CI summary, report."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha", "beta", "bad/name"])
    textfile = tmp_path / "metrics" / "provisioner.prom"
    textfile.parent.mkdir()
    step_summary = tmp_path / "summary.md"
    step_summary.write_text("earlier step\n")
    env = sandbox_env(
        server,
        PROVISIONER_METRICS_TEXTFILE=str(textfile),
        GITHUB_STEP_SUMMARY=str(step_summary),
    )

    result = await run_cli(
        "apply",
        str(manifest),
        "--skip-invalid",
        "--report-dir",
        str(tmp_path / "reports"),
        env=env,
    )

    assert result.code == 3
    assert all(json.loads(line) for line in result.stderr.splitlines() if line)
    families = {f.name: f for f in text_string_to_metric_families(textfile.read_text())}
    rows = {s.labels["outcome"]: s.value for s in families["provisioner_rows"].samples}
    assert rows["created"] == 2
    assert rows["invalid"] == 1
    assert families["provisioner_exit_code"].samples[0].value == 3
    summary = step_summary.read_text()
    assert summary.startswith("earlier step\n")
    assert "bad/name" in summary or "line 4" in summary or "| 4 |" in summary
    assert read_report(tmp_path / "reports")["summary"]["exit_code"] == 3


async def test_export_of_several_accounts_carries_each_account(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """Exporting two accounts writes account_id per row; planning it changes nothing."""
    other = "fedcba9876543210fedcba9876543210"
    server = await make_sandbox(clock=time.monotonic, accounts=(ACCOUNT, other))
    server.seed(ACCOUNT, ["alpha"])
    server.seed(other, ["omega"])
    exported = tmp_path / "both.yaml"
    env = sandbox_env(server)

    result = await run_cli(
        "export", "-o", str(exported), "--account", ACCOUNT, "--account", other, env=env
    )
    planned = await run_cli("plan", str(exported), env=env)

    assert result.code == 0, result.stderr
    rows = [(r.namespace, r.account_id) for r in Manifest(exported).rows()]
    assert rows == [("alpha", ACCOUNT), ("omega", other)]
    assert planned.code == 0, planned.stdout + planned.stderr
