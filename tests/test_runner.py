"""The runner in-process: duplicates, journals set aside, conflicts, stops, refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from sandbox_fixtures import ACCOUNT, TOKEN_HEADERS, MakeSandbox
from structlog.testing import capture_logs

from provisioner.client import ApiClient
from provisioner.errors import LockHeldError, ManifestError, PermanentError
from provisioner.journal import JOURNAL_NAME, Journal, read_state
from provisioner.lock import account_locks
from provisioner.logs import configure_logging
from provisioner.manifest import Manifest
from provisioner.manifest.reader import ROWS_KEPT_IN_MEMORY
from provisioner.pacing import Pacer
from provisioner.retry import RetryPolicy
from provisioner.runner import INTENT_BATCH_PER_WORKER, Runner, RunOptions
from provisioner.sandbox import SandboxServer
from provisioner.sandbox.config import FaultRates

RunnerFactory = Callable[..., Runner]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
async def server(make_sandbox: MakeSandbox) -> SandboxServer:
    return await make_sandbox(quota=0)


@pytest.fixture
async def client(server: SandboxServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(
        base_url=server.base_url, auth_headers=TOKEN_HEADERS, pacer=Pacer(10_000, 1.0)
    ) as api:
        yield api


def build_runner(
    manifest: Path,
    client: ApiClient,
    tmp_path: Path,
    rows_in_memory: int = ROWS_KEPT_IN_MEMORY,
    **options: Any,
) -> Runner:
    """A runner of four workers reporting under ``tmp_path / "reports"``."""
    the_manifest = Manifest(manifest, rows_in_memory=rows_in_memory)
    options.setdefault("lock_dir", tmp_path)
    return Runner(
        manifest=the_manifest,
        validation=the_manifest.validate(),
        client=client,
        policy=RetryPolicy(backoff_initial_s=0.001, backoff_max_s=0.01),
        report_dir=tmp_path / "reports",
        default_account=ACCOUNT,
        concurrency=4,
        options=RunOptions(**options),
    )


@pytest.fixture
def make_runner(client: ApiClient, tmp_path: Path) -> RunnerFactory:
    def make(
        manifest: Path, rows_in_memory: int = ROWS_KEPT_IN_MEMORY, **options: Any
    ) -> Runner:
        return build_runner(manifest, client, tmp_path, rows_in_memory, **options)

    return make


def rows_of(tmp_path: Path) -> list[dict[str, Any]]:
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    rows: list[dict[str, Any]] = report["rows"]
    return rows


async def test_exact_repeat_is_provisioned_once_and_reported_twice(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """A row repeated exactly is created once; the copy is existing, same ID."""
    manifest = write(tmp_path / "m.csv", "namespace,tenant_id\na,1\nb,2\na,1\n")

    result = await make_runner(manifest).run()

    assert result.exit_code == 0
    rows = rows_of(tmp_path)
    assert [r["row"] for r in rows] == [2, 3, 4]
    assert rows[2]["namespace_id"] == rows[0]["namespace_id"]
    assert rows[0]["outcome"] == "created"
    assert rows[2]["outcome"] == "existing"
    assert result.summary["outcomes"]["created"] == 2
    assert server.stats()["creates_committed"] == 2


async def test_conflicting_rename_fails_its_row_and_sends_nothing_for_it(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """A rename with neither name present is a failed row with its reason."""
    manifest = write(
        tmp_path / "m.csv", "namespace,previous_name\nnew-one,old-one\nplain,\n"
    )

    result = await make_runner(manifest).run()

    assert result.exit_code == 3
    rows = {r["namespace"]: r for r in rows_of(tmp_path)}
    assert rows["new-one"]["outcome"] == "failed"
    assert "neither" in rows["new-one"]["error_message"]
    assert rows["plain"]["outcome"] == "created"
    assert server.stats()["creates_committed"] == 1


async def test_fresh_sets_an_unfinished_journal_aside(
    tmp_path: Path, make_runner: RunnerFactory
) -> None:
    """--fresh archives an unfinished journal instead of resuming it."""
    manifest = write(tmp_path / "m.csv", "namespace\na\n")
    stopped = make_runner(manifest)
    stopped.request_stop()
    first = await stopped.run()

    second = await make_runner(manifest, resume=False).run()

    assert first.exit_code == 6
    assert second.exit_code == 0
    assert second.summary["resumed"] is False
    assert len(list((tmp_path / "reports" / "history").iterdir())) == 1


async def test_changed_manifest_does_not_resume(
    tmp_path: Path, make_runner: RunnerFactory
) -> None:
    """An unfinished journal of other content is set aside, not resumed."""
    stopped = make_runner(write(tmp_path / "m.csv", "namespace\na\n"))
    stopped.request_stop()
    await stopped.run()

    result = await make_runner(write(tmp_path / "m2.csv", "namespace\nb\n")).run()

    assert result.summary["resumed"] is False
    assert [r["namespace"] for r in rows_of(tmp_path)] == ["b"]


async def test_stop_mid_run_reports_every_row(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """A stop after a few outcomes: exit 6, the rest not_attempted, all reported."""
    names = "\n".join(f"n-{i:03d}" for i in range(60))
    manifest = write(tmp_path / "m.csv", f"namespace\n{names}\n")
    runner: Runner | None = None
    seen = []

    def on_outcome(outcome: str) -> None:
        seen.append(outcome)
        if len(seen) == 5 and runner is not None:
            runner.request_stop()

    runner = make_runner(manifest, on_outcome=on_outcome)
    result = await runner.run()

    rows = rows_of(tmp_path)
    assert result.exit_code == 6
    assert len(rows) == 60
    created = {r["namespace"] for r in rows if r["outcome"] == "created"}
    held = {ns.namespace_name for ns in server.store.list_for(ACCOUNT)}
    assert created == held
    assert {r["outcome"] for r in rows} == {"created", "not_attempted"}
    state = read_state(tmp_path / "reports" / JOURNAL_NAME)
    assert state is not None
    assert not state.finished


async def test_failed_trust_update_after_create_keeps_the_id(
    tmp_path: Path,
    server: SandboxServer,
    client: ApiClient,
    make_runner: RunnerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the PATCH after a create fails, the row still carries the new ID."""
    manifest = write(tmp_path / "m.csv", "namespace,trusted_workers\nt,true\n")

    async def refuse(*args: object, **kwargs: object) -> None:
        raise PermanentError("nope", status=400, code=10001)

    monkeypatch.setattr(client, "update_namespace", refuse)
    result = await make_runner(manifest).run()

    (row,) = rows_of(tmp_path)
    (held,) = server.store.list_for(ACCOUNT)
    assert result.exit_code == 3
    assert row["outcome"] == "failed"
    assert row["namespace_id"] == held.namespace_id
    assert "trusted_workers" in row["error_message"]


async def test_unsafe_unmanaged_name_is_never_deleted(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """Pruning reports an unmanaged name unsafe in a URL and leaves it alone."""
    server.seed(ACCOUNT, ["keep", "has space", "stray"])
    manifest = write(tmp_path / "m.csv", "namespace\nkeep\n")

    result = await make_runner(manifest, prune=True, force_prune=True).run()

    rows = {r["namespace"]: r for r in rows_of(tmp_path)}
    assert result.exit_code == 0
    assert rows["stray"]["outcome"] == "deleted"
    assert rows["has space"]["outcome"] == "not_attempted"
    assert "unsafe" in rows["has space"]["error_message"]
    held = sorted(ns.namespace_name for ns in server.store.list_for(ACCOUNT))
    assert held == ["has space", "keep"]


async def test_refused_only_account_is_exit_5(
    tmp_path: Path, make_runner: RunnerFactory
) -> None:
    """When the only account refuses its LIST, every row fails: exit 5."""
    other = "fedcba9876543210fedcba9876543210"
    manifest = write(
        tmp_path / "m.csv", f"namespace,account_id\na,{other}\nb,{other}\n"
    )

    result = await make_runner(manifest).run()

    assert result.exit_code == 5
    assert [r["outcome"] for r in rows_of(tmp_path)] == ["not_attempted"] * 2


async def test_report_directory_is_locked_too(
    tmp_path: Path, make_runner: RunnerFactory
) -> None:
    """A run whose report directory another run holds stops with LockHeldError."""
    manifest = write(tmp_path / "m.csv", "namespace\na\n")
    other = "fedcba9876543210fedcba9876543210"

    with (
        account_locks([other], "http://elsewhere", tmp_path, tmp_path / "reports"),
        pytest.raises(LockHeldError, match="report directory"),
    ):
        await make_runner(manifest).run()


async def test_stop_while_waiting_for_budget_ends_promptly(
    tmp_path: Path, server: SandboxServer
) -> None:
    """A stop while workers wait for the budget ends the run at once, all reported."""
    manifest_path = write(
        tmp_path / "m.csv", "namespace\n" + "\n".join(f"n-{i}" for i in range(40))
    )
    manifest = Manifest(manifest_path)
    two_created = asyncio.Event()
    seen: list[str] = []

    def on_outcome(outcome: str) -> None:
        seen.append(outcome)
        if len(seen) == 2:
            two_created.set()

    async with ApiClient(
        base_url=server.base_url, auth_headers=TOKEN_HEADERS, pacer=Pacer(3, 3600.0)
    ) as client:
        runner = Runner(
            manifest=manifest,
            validation=manifest.validate(),
            client=client,
            policy=RetryPolicy(),
            report_dir=tmp_path / "reports",
            default_account=ACCOUNT,
            concurrency=4,
            options=RunOptions(grace_s=0.2, lock_dir=tmp_path, on_outcome=on_outcome),
        )
        run = asyncio.create_task(runner.run())
        await asyncio.wait_for(two_created.wait(), 10)
        runner.request_stop()
        result = await asyncio.wait_for(run, 10)

    rows = rows_of(tmp_path)
    assert result.exit_code == 6
    assert len(rows) == 40
    assert [r["outcome"] for r in rows].count("created") == 2


async def test_unreachable_api_fails_the_rows_with_a_report(tmp_path: Path) -> None:
    """A LIST that never answers fails its account's rows: exit 3, a report."""
    manifest = Manifest(write(tmp_path / "m.csv", "namespace\na\nb\n"))
    async with ApiClient(
        base_url="http://127.0.0.1:9/client/v4",
        auth_headers=TOKEN_HEADERS,
        pacer=Pacer(100, 1.0),
    ) as client:
        result = await Runner(
            manifest=manifest,
            validation=manifest.validate(),
            client=client,
            policy=RetryPolicy(max_attempts=2, backoff_initial_s=0.001),
            report_dir=tmp_path / "reports",
            default_account=ACCOUNT,
            concurrency=2,
            options=RunOptions(lock_dir=tmp_path),
        ).run()

    rows = rows_of(tmp_path)
    assert result.exit_code == 3
    assert [r["outcome"] for r in rows] == ["failed", "failed"]
    assert rows[0]["attempts"] == 2


def test_spellings_of_one_url_share_a_lock(tmp_path: Path) -> None:
    """Case, default port and a trailing slash do not make a second lock."""
    from provisioner.lock import lock_path

    paths = {
        lock_path(ACCOUNT, url, tmp_path)
        for url in (
            "https://api.cloudflare.com/client/v4",
            "HTTPS://API.Cloudflare.com:443/client/v4/",
        )
    }

    assert len(paths) == 1


def test_unusable_lock_file_is_exit_7(tmp_path: Path) -> None:
    """A lock path that cannot be opened is a clear LockHeldError, not a crash."""
    from provisioner.lock import lock_path

    blocker = lock_path(ACCOUNT, "http://x", tmp_path)
    blocker.symlink_to(blocker)

    with (
        pytest.raises(LockHeldError, match="Cannot take the lock"),
        account_locks([ACCOUNT], "http://x", tmp_path),
    ):
        pass


async def test_another_default_account_does_not_resume(
    tmp_path: Path, client: ApiClient
) -> None:
    """An unfinished journal is resumed only for the same default account."""
    manifest = Manifest(write(tmp_path / "m.csv", "namespace\na\n"))

    def runner_for(account: str) -> Runner:
        return Runner(
            manifest=manifest,
            validation=manifest.validate(),
            client=client,
            policy=RetryPolicy(),
            report_dir=tmp_path / "reports",
            default_account=account,
            concurrency=2,
            options=RunOptions(lock_dir=tmp_path),
        )

    stopped = runner_for(ACCOUNT)
    stopped.request_stop()
    await stopped.run()
    client._halted = False  # the same client serves the second run here
    client.pacer._aborted.clear()
    other = "fedcba9876543210fedcba9876543210"
    result = await runner_for(other).run()

    assert result.summary["resumed"] is False


async def test_outcomes_ride_on_the_next_intents_sync(
    tmp_path: Path,
    make_runner: RunnerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run syncs the journal once per batch of calls, never once per record."""
    rows = 40
    manifest = write(
        tmp_path / "m.csv",
        "namespace\n" + "".join(f"tenant-{i:03d}\n" for i in range(rows)),
    )
    syncs = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        syncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("provisioner.journal.os.fsync", counting_fsync)
    runner = make_runner(manifest)
    runner.concurrency = 1

    result = await runner.run()

    assert result.summary["outcomes"]["created"] == rows
    state = read_state(result.journal_path)
    assert state is not None
    assert sum(o == "created" for o in state.outcomes.values()) == rows
    # One per batch of intents, plus a few for the header, checkpoints, end
    # and report; with a sync per outcome it would be over the rows.
    assert len(syncs) <= rows // INTENT_BATCH_PER_WORKER + 10


async def test_a_complete_run_does_not_read_the_manifest_again_to_close(
    tmp_path: Path, make_runner: RunnerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When every row has its outcome, closing the run skips the manifest sweep."""
    manifest = write(tmp_path / "m.csv", "namespace\na\nb\na\n")
    runner = make_runner(manifest)
    sweeps = []
    real_sweep = runner._sweep_unreported

    def counting_sweep(*args: Any) -> None:
        sweeps.append(args)
        real_sweep(*args)

    monkeypatch.setattr(runner, "_sweep_unreported", counting_sweep)

    result = await runner.run()

    assert result.exit_code == 0
    assert sweeps == []
    assert [r["outcome"] for r in rows_of(tmp_path)] == [
        "created",
        "created",
        "existing",
    ]


async def test_apply_reads_the_manifest_once_after_validating_it(
    tmp_path: Path, make_runner: RunnerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run streams the validated manifest once: the accounts to list come from
    what validation counted, not from a pass of their own."""
    manifest = write(tmp_path / "m.csv", "namespace\na\nb\n")
    runner = make_runner(manifest)
    passes = []
    real_rows = Manifest.rows

    def counting_rows(self: Manifest) -> Any:
        passes.append(self.path)
        return real_rows(self)

    monkeypatch.setattr(Manifest, "rows", counting_rows)

    result = await runner.run()

    assert result.exit_code == 0
    assert passes == [manifest]
    assert runner._wanted == {ACCOUNT: {"a", "b"}}


async def test_manifest_changed_after_validation_stops_the_run_with_exit_4(
    tmp_path: Path, make_runner: RunnerFactory, server: SandboxServer
) -> None:
    """A streamed manifest edited between validation and the run ends the run
    with the manifest's error (exit 4) instead of hanging, and sends no create."""
    manifest = write(tmp_path / "m.csv", "namespace\na\nb\n")
    runner = make_runner(manifest, rows_in_memory=0)
    manifest.write_text("namespace\na\nb\nc\n")

    with pytest.raises(ManifestError, match="changed after it was validated") as err:
        await asyncio.wait_for(runner.run(), timeout=30)

    assert err.value.exit_code == 4
    assert server.stats()["creates_committed"] == 0


async def test_a_crashing_worker_ends_the_run_instead_of_hanging_it(
    tmp_path: Path, make_runner: RunnerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in a worker (a bug) ends the run with that error at
    once; the producer and the other workers do not wait on it forever."""
    rows = 200
    manifest = write(
        tmp_path / "m.csv",
        "namespace\n" + "".join(f"tenant-{i:03d}\n" for i in range(rows)),
    )
    runner = make_runner(manifest)
    real_carry_out = runner._carry_out

    async def crash_on_one(decision: Any, journal: Journal) -> dict[str, Any]:
        if decision.row.namespace == "tenant-005":
            raise RuntimeError("a bug")
        return await real_carry_out(decision, journal)

    monkeypatch.setattr(runner, "_carry_out", crash_on_one)

    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(runner.run(), timeout=30)


async def test_rows_cut_off_by_the_grace_period_are_all_reported(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """Calls hung past the grace period: the producer is cancelled, every row
    still gets an outcome (in flight: unresolved; never queued: swept)."""
    server = await make_sandbox(
        quota=0, faults=FaultRates(commit_then_delay=1.0), slow_delay_s=30.0
    )
    names = "".join(f"n-{i:03d}\n" for i in range(40))
    manifest = write(tmp_path / "m.csv", f"namespace\n{names}")
    async with ApiClient(
        base_url=server.base_url, auth_headers=TOKEN_HEADERS, pacer=Pacer(10_000, 1.0)
    ) as api:
        runner = build_runner(manifest, api, tmp_path, grace_s=0.05)
        asyncio.get_running_loop().call_later(0.5, runner.request_stop)

        result = await runner.run()

    rows = rows_of(tmp_path)
    assert result.exit_code == 6
    assert len(rows) == 40
    assert {r["outcome"] for r in rows} == {"not_attempted"}
    state = read_state(result.journal_path)
    assert state is not None
    assert len(state.open_intents) == 4  # the calls in flight, looked up next run


async def test_row_log_context_stays_with_its_row(
    tmp_path: Path, make_runner: RunnerFactory
) -> None:
    """Each row's events carry that row's fields; the run's own events none."""
    manifest = write(tmp_path / "m.csv", "namespace\na\nb\nc\nd\ne\n")
    stream = io.StringIO()
    configure_logging(log_format="json", level="info", stream=stream)
    try:
        result = await make_runner(manifest).run()
    finally:
        structlog.reset_defaults()

    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    created = [e for e in events if e["event"] == "namespace_created"]
    assert result.exit_code == 0
    assert sorted((e["line"], e["namespace"]) for e in created) == [
        (2, "a"),
        (3, "b"),
        (4, "c"),
        (5, "d"),
        (6, "e"),
    ]
    finished = next(e for e in events if e["event"] == "run_finished")
    assert "namespace" not in finished
    assert "line" not in finished


async def test_intents_are_synced_a_batch_per_sync(
    tmp_path: Path,
    make_runner: RunnerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows' intents reach the disk a batch (INTENT_BATCH_PER_WORKER rows per
    worker) at a time, so a fast run pays few fsyncs."""
    rows, workers = 400, 10
    manifest = write(
        tmp_path / "m.csv",
        "namespace\n" + "".join(f"tenant-{i:03d}\n" for i in range(rows)),
    )
    synced_sizes: list[int] = []
    real_fsync = os.fsync
    journal_path = tmp_path / "reports" / JOURNAL_NAME

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        if (
            os.path.exists(journal_path)
            and os.fstat(fd).st_ino == os.stat(journal_path).st_ino
        ):
            synced_sizes.append(os.fstat(fd).st_size)

    monkeypatch.setattr("provisioner.journal.os.fsync", recording_fsync)
    runner = make_runner(manifest)
    runner.concurrency = workers

    result = await runner.run()

    assert result.summary["outcomes"]["created"] == rows
    batch = workers * INTENT_BATCH_PER_WORKER
    assert len(synced_sizes) <= rows // batch + 6


async def leave_open_intent(tmp_path: Path, manifest: Path, **intent: Any) -> None:
    """A journal of ``manifest`` as a killed run leaves it: one intent, no outcome."""
    journal = Journal.create(
        tmp_path / "reports" / JOURNAL_NAME,
        manifest=str(manifest),
        manifest_sha256=Manifest(manifest).validate().sha256,
        default_account=ACCOUNT,
    )
    journal.intent_later(account_id=ACCOUNT, **intent)
    await journal.sync()
    await journal.close()


async def test_resumed_create_still_sets_trusted_workers(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """A create an earlier (killed) run made is reported created and its
    trusted_workers still set, not left for the next run."""
    manifest = write(tmp_path / "m.csv", "namespace,trusted_workers\nct-1,true\n")
    await leave_open_intent(
        tmp_path, manifest, op="create", key="line:2", namespace="ct-1", line=2
    )
    made = server.store.create(ACCOUNT, "ct-1", "earlier-run")

    result = await make_runner(manifest).run()

    (row,) = rows_of(tmp_path)
    assert result.exit_code == 0
    assert (row["outcome"], row["namespace_id"]) == ("created", made.namespace_id)
    held = server.store.get(ACCOUNT, "ct-1")
    assert held is not None
    assert held.trusted_workers is True


async def test_resumed_update_whose_outcome_was_lost_is_reported_updated(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """An update an earlier run made before dying is reported updated, not
    existing, with no call sent for it."""
    manifest = write(tmp_path / "m.csv", "namespace,trusted_workers\nup-1,true\n")
    await leave_open_intent(
        tmp_path, manifest, op="update", key="line:2", namespace="up-1", line=2
    )
    server.store.create(ACCOUNT, "up-1", "earlier-run")
    server.store.update(ACCOUNT, "up-1", "earlier-run", trusted_workers=True)
    before = server.stats()["requests_total"]

    result = await make_runner(manifest).run()

    (row,) = rows_of(tmp_path)
    assert result.exit_code == 0
    assert row["outcome"] == "updated"
    assert server.stats()["requests_total"] - before == 1  # the LIST alone


async def test_a_delete_made_by_a_killed_run_is_reported_by_the_rerun(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """An open delete intent whose name is gone is reported deleted, once."""
    manifest = write(tmp_path / "m.csv", "namespace\nkeep\n")
    validation = Manifest(manifest).validate()
    journal = Journal.create(
        tmp_path / "reports" / JOURNAL_NAME,
        manifest=str(manifest),
        manifest_sha256=validation.sha256,
        default_account=ACCOUNT,
    )
    key = f"unmanaged:{ACCOUNT}:gone"
    journal.intent_later(
        op="delete",
        key=key,
        account_id=ACCOUNT,
        namespace="gone",
        line=None,
        namespace_id="id-of-gone",
    )
    await journal.sync()
    await journal.close()

    result = await make_runner(manifest, prune=True, force_prune=True).run()

    rows = rows_of(tmp_path)
    assert result.exit_code == 0
    deleted = [r for r in rows if r["outcome"] == "deleted"]
    assert [(r["namespace"], r["namespace_id"]) for r in deleted] == [
        ("gone", "id-of-gone")
    ]
    state = read_state(result.journal_path)
    assert state is not None
    assert key not in state.open_intents


async def test_a_delete_left_by_another_manifest_is_logged_not_reported(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """A delete a set-aside journal left open is logged as confirmed but not
    put in the new manifest's report, which holds its own rows only."""
    old = write(tmp_path / "old.csv", "namespace\nold-1\n")
    await leave_open_intent(
        tmp_path,
        old,
        op="delete",
        key=f"unmanaged:{ACCOUNT}:gone",
        namespace="gone",
        line=None,
        namespace_id="id-of-gone",
    )
    new = write(tmp_path / "new.csv", "namespace\nnew-1\n")

    with capture_logs() as events:
        result = await make_runner(new).run()

    rows = rows_of(tmp_path)
    assert result.exit_code == 0
    assert [(r["namespace"], r["outcome"]) for r in rows] == [("new-1", "created")]
    confirmed = [e for e in events if e["event"] == "earlier_delete_confirmed"]
    assert [(e["namespace"], e["namespace_id"]) for e in confirmed] == [
        ("gone", "id-of-gone")
    ]


async def test_changed_manifest_carries_unsettled_calls_by_name(
    tmp_path: Path, server: SandboxServer, make_runner: RunnerFactory
) -> None:
    """A journal of another manifest is set aside, even with --resume: the new
    report holds only the new rows, and a call the old run left unsettled is
    found by its name (reported created, not sent again)."""
    old = write(tmp_path / "old.csv", "namespace\nns-a\nns-b\nns-c\n")
    journal = Journal.create(
        tmp_path / "reports" / JOURNAL_NAME,
        manifest=str(old),
        manifest_sha256=Manifest(old).validate().sha256,
        default_account=ACCOUNT,
    )
    await journal.outcome(
        {"key": "line:2", "line": 2, "namespace": "ns-a", "outcome": "created"}
    )
    journal.intent_later(
        op="create", key="line:3", account_id=ACCOUNT, namespace="ns-b", line=3
    )
    await journal.sync()
    await journal.close()
    server.store.create(ACCOUNT, "ns-a", "earlier-run")
    made = server.store.create(ACCOUNT, "ns-b", "earlier-run")
    new = write(tmp_path / "new.csv", "namespace\nother-1\nns-b\nother-2\n")

    result = await make_runner(new, resume=True).run()

    rows = rows_of(tmp_path)
    assert result.exit_code == 0
    assert [(r["row"], r["namespace"], r["outcome"]) for r in rows] == [
        (2, "other-1", "created"),
        (3, "ns-b", "created"),
        (4, "other-2", "created"),
    ]
    assert rows[1]["namespace_id"] == made.namespace_id
    assert server.stats()["duplicate_creates"] == 0
    assert list((tmp_path / "reports" / "history").glob("journal-*.jsonl"))
