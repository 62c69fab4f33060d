"""Migrations: settings beyond the name, renames, several accounts in one run."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cli_helpers import read_report, run_cli, sandbox_env
from sandbox_fixtures import ACCOUNT, MakeSandbox

OTHER = "fedcba9876543210fedcba9876543210"
UNSERVED = "00000000000000000000000000000000"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def test_trusted_workers_converges_in_one_apply(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """New and existing namespaces asking trust get it; a second plan is clean."""
    server = await make_sandbox(clock=time.monotonic)
    server.seed(ACCOUNT, ["old-trusted", "old-untouched"])
    manifest = write(
        tmp_path / "m.csv",
        "namespace,trusted_workers\n"
        "new-trusted,true\n"
        "old-trusted,true\n"
        "old-untouched,\n",
    )
    env = sandbox_env(server)

    planned = await run_cli("plan", str(manifest), "--json", env=env)
    applied = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )
    replanned = await run_cli("plan", str(manifest), "--json", env=env)

    rows = json.loads(planned.stdout)["rows"]
    update = next(r for r in rows if r["namespace"] == "old-trusted")
    assert update["changes"] == {"trusted_workers": {"from": False, "to": True}}
    assert applied.code == 0, applied.stderr
    outcomes = {r["namespace"]: r for r in read_report(tmp_path)["rows"]}
    assert outcomes["new-trusted"]["outcome"] == "created"
    assert outcomes["old-trusted"]["outcome"] == "updated"
    assert outcomes["old-untouched"]["outcome"] == "existing"
    held = {ns.namespace_name: ns for ns in server.store.list_for(ACCOUNT)}
    assert held["new-trusted"].trusted_workers is True
    assert held["old-trusted"].trusted_workers is True
    assert held["old-untouched"].trusted_workers is False
    assert replanned.code == 0, replanned.stdout


async def test_rename_keeps_the_namespace_id(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """A row with previous_name renames in place: same ID, outcome renamed."""
    server = await make_sandbox(clock=time.monotonic)
    (old,) = server.seed(ACCOUNT, ["acme-legacy"])
    manifest = write(
        tmp_path / "m.csv", "namespace,previous_name\nacme-prod,acme-legacy\n"
    )
    env = sandbox_env(server)

    applied = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )
    again = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path / "again"), env=env
    )

    assert applied.code == 0, applied.stderr
    (row,) = read_report(tmp_path)["rows"]
    assert row["outcome"] == "renamed"
    assert row["previous_name"] == "acme-legacy"
    assert row["namespace_id"] == old.namespace_id
    assert [ns.namespace_id for ns in server.store.list_for(ACCOUNT)] == [
        old.namespace_id
    ]
    assert again.code == 0, again.stderr
    assert read_report(tmp_path / "again")["rows"][0]["outcome"] == "existing"
    assert server.stats()["creates_committed"] == 0


async def test_conflicting_renames_are_refused_in_plan_with_nothing_sent(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """Both names existing, or neither, is a conflict plan shows; only LIST is sent."""
    server = await make_sandbox(clock=time.monotonic)
    server.seed(ACCOUNT, ["both-old", "both-new"])
    manifest = write(
        tmp_path / "m.csv",
        "namespace,previous_name\nboth-new,both-old\nnone-new,none-old\n",
    )

    planned = await run_cli("plan", str(manifest), env=sandbox_env(server))

    assert planned.code == 4
    assert "conflict both-new" in planned.stdout
    assert "conflict none-new" in planned.stdout
    assert server.stats()["requests_by_method_status"] == {"GET 200": 1}


async def test_two_accounts_share_one_budget_and_an_unreachable_one_fails_alone(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """One token's budget covers every account; a refused account fails alone."""
    server = await make_sandbox(
        clock=time.monotonic, accounts=(ACCOUNT, OTHER), quota=40, window_s=1.0
    )
    lines = ["namespace,account_id"]
    lines += [f"a-{i:03d},{ACCOUNT}" for i in range(60)]
    lines += [f"b-{i:03d},{OTHER}" for i in range(60)]
    lines += [f"c-{i:03d},{UNSERVED}" for i in range(5)]
    manifest = write(tmp_path / "m.csv", "\n".join(lines) + "\n")
    env = sandbox_env(
        server, PROVISIONER_BUDGET_REQUESTS="40", PROVISIONER_BUDGET_WINDOW_S="1"
    )

    result = await run_cli(
        "apply", str(manifest), "--report-dir", str(tmp_path), env=env
    )

    assert result.code == 3, result.stderr
    report = read_report(tmp_path)
    outcomes = {r["namespace"]: r for r in report["rows"]}
    assert all(outcomes[f"a-{i:03d}"]["outcome"] == "created" for i in range(60))
    assert all(outcomes[f"b-{i:03d}"]["outcome"] == "created" for i in range(60))
    refused = [outcomes[f"c-{i:03d}"] for i in range(5)]
    assert {r["outcome"] for r in refused} == {"failed"}
    assert len({r["error_message"] for r in refused}) == 1
    assert report["summary"]["accounts"][UNSERVED] == "refused"
    assert report["summary"]["by_account"] == {
        ACCOUNT: {"created": 60},
        OTHER: {"created": 60},
        UNSERVED: {"failed": 5},
    }
    stats = server.stats()
    assert stats["rate_limited"] == 0
    assert stats["max_requests_in_window"] <= 40
    lists = stats["requests_by_method_status"]
    assert lists["GET 200"] == 2
    assert lists["GET 403"] == 1


async def test_rows_naming_their_accounts_need_no_default_account(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """Without CLOUDFLARE_ACCOUNT_ID, rows carry their accounts; a row without is 4."""
    server = await make_sandbox(clock=time.monotonic, accounts=(ACCOUNT, OTHER))
    env = {k: v for k, v in sandbox_env(server).items() if k != "CLOUDFLARE_ACCOUNT_ID"}
    good = write(
        tmp_path / "good.csv", f"namespace,account_id\na,{ACCOUNT}\nb,{OTHER}\n"
    )
    bad = write(tmp_path / "bad.csv", f"namespace,account_id\na,{ACCOUNT}\nb,\n")

    applied = await run_cli("apply", str(good), "--report-dir", str(tmp_path), env=env)
    refused = await run_cli("plan", str(bad), env=env)

    assert applied.code == 0, applied.stderr
    assert refused.code == 4
    assert "bad.csv:3" in refused.stderr
