"""Carrying out a reconciliation: apply a manifest to the accounts it names.

The phases of ``Runner.run``:

1. journal: resume an unfinished journal of the same manifest, or start one;
2. resolve: every intent the earlier run left open is looked up (GET) before
   anything else is sent;
3. list: one LIST per account (an account that refuses it fails alone);
4. work: rows stream from the manifest through a bounded queue to workers;
   each mutating call is announced in the journal before it is sent, and its
   outcome written as soon as it is known;
5. close: rows never reached become ``not_attempted``, duplicates copy their
   first occurrence, and the report is rebuilt from the journal.

A create whose outcome is unknown (timeout, reset, 5xx or unreadable answer
after sending, any other 4xx) is resolved by looking the name up; it is sent
again only when the name is absent.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from provisioner.client import ApiClient
from provisioner.errors import (
    ApiError,
    CredentialsRefusedError,
    NotFoundError,
    PermanentError,
    RunInterruptedError,
    TransientError,
)
from provisioner.journal import (
    JOURNAL_NAME,
    Journal,
    JournalState,
    archive,
    read_record_at,
    read_state,
    spent_ages_s,
    utc_now,
)
from provisioner.lock import account_locks
from provisioner.logs import bind_row
from provisioner.manifest import Manifest, Validation
from provisioner.models import ManifestRow, Namespace, Outcome
from provisioner.plan import AccountView, list_accounts, wanted_accounts
from provisioner.prune import DEFAULT_THRESHOLD, Deletion, PrunePlan, plan_prune
from provisioner.reconcile import Action, Decision, decide, unmanaged
from provisioner.records import (
    conflict,
    deletion_base,
    failed,
    failure_fields,
    row_key,
    settled,
    unattempted,
)
from provisioner.report import ReportPaths, count_outcomes, write_report
from provisioner.retry import RetryPolicy

log = structlog.get_logger("provisioner.runner")

# Outcomes a resumed run keeps; any other row is decided again.
_FINAL = frozenset(
    {
        Outcome.CREATED,
        Outcome.EXISTING,
        Outcome.UPDATED,
        Outcome.RENAMED,
        Outcome.DELETED,
    }
)
_STOP = object()
# The event logged for a row settled with each outcome: namespace_created, ...
_SETTLED_EVENTS = {outcome: f"namespace_{outcome.value}" for outcome in Outcome}
# Rows whose intents share one fsync, per worker. An fsync costs about as much
# CPU as ten creates, so fewer of them make a fast run markedly cheaper; the
# price is paid only after a kill, when the rows of the last batches that
# never went out cost the rerun a lookup each (at most this many per worker,
# plus the queue and the calls in flight).
INTENT_BATCH_PER_WORKER = 4


@dataclass
class RunOptions:
    """Choices of one apply run."""

    skip_invalid: bool = False
    resume: bool | None = None  # None: when the journal matches; True: always
    grace_s: float = 30.0
    on_outcome: Callable[[str], None] | None = None
    prune: bool = False
    prune_threshold: float = DEFAULT_THRESHOLD
    force_prune: bool = False
    lock_dir: Path | None = None


@dataclass
class RunResult:
    """How the run ended."""

    exit_code: int
    summary: dict[str, Any]
    report: ReportPaths
    journal_path: Path


class Runner:
    """One apply run over one manifest."""

    def __init__(
        self,
        *,
        manifest: Manifest,
        validation: Validation,
        client: ApiClient,
        policy: RetryPolicy,
        report_dir: Path,
        default_account: str | None,
        concurrency: int,
        options: RunOptions | None = None,
    ) -> None:
        self.manifest = manifest
        self.validation = validation
        self.client = client
        self.policy = policy
        self.report_dir = report_dir
        self.default_account = default_account
        self.concurrency = concurrency
        self.options = options or RunOptions()

        self._stop = asyncio.Event()
        self._fatal: CredentialsRefusedError | None = None
        self._interrupted = False
        # Why the producer stopped early (the manifest changed under the run).
        self._producer_error: Exception | None = None
        self._accounts: dict[str, AccountView] = {}
        self._done: set[str] = set()
        self._uncertain: dict[str, str] = {}  # key -> op of its open intent
        # (account, name) -> op of an unsettled call of a set-aside journal
        self._carried_ops: dict[tuple[str, str], str] = {}
        self._carried: JournalState | None = None
        self._resolved: dict[str, Namespace] = {}
        self._wanted: dict[str, set[str]] = {}
        self._prune = PrunePlan()
        self._unmanaged = 0
        self._journal: Journal | None = None
        self._resumed = False
        # The module's logger resolves the configuration on every event; the
        # run binds it once when it starts, after logging is configured.
        self._log: Any = log
        policy.should_stop = self._stop.is_set

    # -- control ------------------------------------------------------------

    def request_stop(self) -> None:
        """Start no new calls; calls in flight get ``grace_s`` to finish."""
        if not self._stop.is_set():
            self._log.warning("stop_requested", grace_s=self.options.grace_s)
        self._interrupted = True
        self._stop.set()
        self.client.halt()

    def flush_journal_now(self) -> None:
        """Write what the journal has queued, blocking (for a hard exit)."""
        if self._journal is not None:
            self._journal.flush_now()

    # -- the run ------------------------------------------------------------

    async def run(self) -> RunResult:
        """All phases; returns the exit code and where the report is."""
        started_at, started_s = utc_now(), time.monotonic()
        self._log = log.bind()
        self._wanted = self._accounts_in_manifest()
        with account_locks(
            self._wanted, self.client.base_url, self.options.lock_dir, self.report_dir
        ):
            return await self._run_locked(started_at, started_s)

    async def _run_locked(self, started_at: str, started_s: float) -> RunResult:
        journal_path = self.report_dir / JOURNAL_NAME
        # A report left by an earlier run must not pass for this one's, should
        # this one end without writing its own (a second signal).
        for stale in ("report.json", "report.csv"):
            (self.report_dir / stale).unlink(missing_ok=True)
        journal, state = self._open_journal(journal_path)
        self._journal = journal
        self._log.info(
            "run_started",
            manifest=str(self.manifest.path),
            rows=self.validation.rows_total,
            resumed=self._resumed,
            run_id=journal.run_id,
        )

        try:
            self._record_invalid_rows(journal)
            if state is not None:
                await self._resolve_open_intents(state)
            await self._list_accounts(set(self._wanted))
            self._plan_unmanaged()
            if state is not None:
                self._settle_open_deletions(journal, state)
            if self._carried is not None:
                self._log_carried_deletions(self._carried)
            await self._work(journal)
            if self._producer_error is not None:
                # The rows cannot be read again to close the run: the journal
                # keeps what was done, and a rerun finishes the job.
                raise self._producer_error
            await self._close_rows(journal)
            return await self._finish(journal, started_at, started_s)
        finally:
            await journal.close()

    def _open_journal(self, path: Path) -> tuple[Journal, JournalState | None]:
        state = read_state(path)
        if state is not None:
            ages = spent_ages_s(
                state.recent_calls, datetime.now(UTC), in_flight=self.concurrency
            )
            recent = self.client.pacer.assume_spent(ages)
            if recent:
                self._log.info("budget_carried_over", requests=recent)
        if state is not None and not state.finished:
            # The same rows for the same accounts: a row without account_id
            # belongs to the default account, so that must match too.
            same = (
                state.header.get("manifest_sha256") == self.validation.sha256
                and state.header.get("default_account") == self.default_account
            )
            # Rows are keyed by line, so only the same manifest can be resumed.
            if same and self.options.resume is not False:
                self._resumed = True
                self._done = {
                    key for key, outcome in state.outcomes.items() if outcome in _FINAL
                }
                self._log.info(
                    "journal_resumed",
                    path=str(path),
                    open_intents=len(state.open_intents),
                    rows_done=len(self._done),
                )
                return Journal.reopen(path, state), state
            self._carry_unsettled(state)
            self._log.warning(
                "journal_set_aside",
                path=str(path),
                reason="--fresh" if self.options.resume is False else "other manifest",
                unsettled_calls_carried=len(state.open_intents),
            )
        if path.exists():
            archive(path)
        return (
            Journal.create(
                path,
                manifest=str(self.manifest.path),
                manifest_sha256=self.validation.sha256,
                default_account=self.default_account,
            ),
            None,
        )

    def _carry_unsettled(self, state: JournalState) -> None:
        """Calls a set-aside journal left unsettled follow their names into
        this run: a row naming one looks it up before sending anything, and
        a namespace such a call made is reported as made, not as existing."""
        self._carried = state
        for intent in state.open_intents.values():
            name = (str(intent.get("account_id")), str(intent.get("namespace")))
            self._carried_ops[name] = str(intent.get("op"))

    def _record_invalid_rows(self, journal: Journal) -> None:
        messages: dict[int, list[str]] = {}
        for problem in self.validation.errors:
            if (
                problem.line is not None
                and problem.line in self.validation.invalid_lines
            ):
                field_name = f"{problem.field}: " if problem.field else ""
                messages.setdefault(problem.line, []).append(
                    field_name + problem.message
                )
        for line, texts in messages.items():
            values = self.validation.invalid_values.get(line, {})
            journal.outcome_later(
                {
                    "key": row_key(line),
                    "line": line,
                    "namespace": values.get("namespace"),
                    "account_id": values.get("account_id") or self.default_account,
                    "columns": values,
                    "outcome": Outcome.INVALID,
                    "attempts": 0,
                    "error_message": "; ".join(texts),
                }
            )

    def _accounts_in_manifest(self) -> dict[str, set[str]]:
        """Account -> names the manifest keeps there; every row has an account."""
        return wanted_accounts(self.manifest, self.validation, self.default_account)

    def _account_of(self, row: ManifestRow) -> str:
        account = row.account_id or self.default_account
        assert account is not None  # checked by _accounts_in_manifest
        return account

    # -- phase 2: open intents ------------------------------------------------

    async def _resolve_open_intents(self, state: JournalState) -> None:
        """Look up every call an earlier run may have made without recording it.

        A name found is the earlier run's doing: its row becomes ``created``
        (or ``renamed``) when the producer reaches it. A name not found, or
        not looked up, is created again only after another lookup.
        """
        for key, intent in list(state.open_intents.items()):
            if key in self._done:
                continue
            op = str(intent.get("op"))
            self._uncertain[key] = op
            if self._stop.is_set() or op not in ("create", "rename"):
                continue
            account = str(intent.get("account_id"))
            name = str(intent.get("namespace"))
            try:
                looked_up = await self.policy.call(
                    functools.partial(self._lookup, account, name),
                    op="lookup",
                    name=name,
                    idempotent=True,
                )
                found = looked_up.value
            except RunInterruptedError:
                return
            except ApiError as exc:
                self._log.warning("intent_unresolved", namespace=name, error=str(exc))
                continue
            if found is not None:
                self._resolved[key] = found
            self._log.info("intent_resolved", namespace=name, found=found is not None)

    # -- phase 3: one LIST per account ----------------------------------------

    async def _list_accounts(self, accounts: set[str]) -> None:
        try:
            self._accounts = await list_accounts(self.client, self.policy, accounts)
        except RunInterruptedError:
            # Stopped before the LIST: every row is reported not_attempted.
            self._accounts = {account: AccountView() for account in accounts}
            return
        refusals = [v.refused for v in self._accounts.values()]
        if refusals and all(refusals):
            # Refused everywhere: the credentials, not one account, are wrong.
            first = refusals[0]
            if isinstance(first, CredentialsRefusedError):
                self._fatal = first

    def _confirmed_deletions(
        self, state: JournalState
    ) -> list[tuple[str, dict[str, Any]]]:
        """Open delete intents whose name the LIST no longer holds: they
        happened. One still held is planned again by --prune."""
        if self._stop.is_set():
            return []  # the LIST may not have run: absence proves nothing
        confirmed = []
        # A copy: the state is the journal's live one, which the records change.
        for key, intent in list(state.open_intents.items()):
            if intent.get("op") != "delete" or key in self._done:
                continue
            view = self._accounts.get(str(intent.get("account_id")))
            name = str(intent.get("namespace"))
            if view is None or view.refused is not None or name in view.namespaces:
                continue
            confirmed.append((key, intent))
        return confirmed

    def _settle_open_deletions(self, journal: Journal, state: JournalState) -> None:
        """A delete the resumed run sent that happened is reported deleted."""
        for key, intent in self._confirmed_deletions(state):
            account = str(intent.get("account_id"))
            name = str(intent.get("namespace"))
            journal.outcome_later(
                {
                    "key": key,
                    "line": None,
                    "account_id": account,
                    "namespace": name,
                    "namespace_id": intent.get("namespace_id"),
                    "outcome": Outcome.DELETED,
                    "attempts": 0,
                }
            )
            self._notify(Outcome.DELETED)

    def _log_carried_deletions(self, state: JournalState) -> None:
        """A delete the set-aside journal left open that happened is logged,
        not reported: this run's report holds this manifest's rows only, and
        the archived journal keeps the intent with the namespace ID."""
        for _key, intent in self._confirmed_deletions(state):
            self._log.warning(
                "earlier_delete_confirmed",
                account_id=intent.get("account_id"),
                namespace=intent.get("namespace"),
                namespace_id=intent.get("namespace_id"),
            )

    def _plan_unmanaged(self) -> None:
        """Count namespaces outside the manifest; with --prune, plan deletions."""
        listed = {
            account: view.namespaces
            for account, view in self._accounts.items()
            if view.refused is None
        }
        self._unmanaged = sum(
            len(unmanaged(namespaces.values(), self._wanted[account], set()))
            for account, namespaces in listed.items()
        )
        if self._unmanaged and not self.options.prune:
            self._log.info(
                "unmanaged_namespaces", count=self._unmanaged, action="left alone"
            )
        if not self.options.prune:
            return

        self._prune = plan_prune(
            listed,
            self._wanted,
            manifest_rows=self.validation.rows_total
            - len(self.validation.invalid_lines),
            threshold=self.options.prune_threshold,
            force=self.options.force_prune,
        )
        self._log.info(
            "prune_planned",
            deletions=len(self._prune.deletions),
            unsafe=len(self._prune.unsafe),
        )

    # -- phase 4: the work ----------------------------------------------------

    async def _work(self, journal: Journal) -> None:
        queue: asyncio.Queue[Decision | Deletion | object] = asyncio.Queue(
            self.concurrency * 2
        )
        workers = [
            asyncio.create_task(self._worker(queue, journal))
            for _ in range(self.concurrency)
        ]
        producer = asyncio.create_task(self._produce_then_stop(queue, journal, workers))
        tasks = [producer, *workers]
        watchdog = asyncio.create_task(self._cancel_after_grace(tasks))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            crashed = [t for t in done if not t.cancelled() and t.exception()]
            if crashed:
                # A bug, not a row's failure: stop at once (the finally below
                # cancels the rest) rather than leave the others waiting on
                # the crashed task forever. A rerun resumes from the journal.
                error = crashed[0].exception()
                assert error is not None
                raise error
        finally:
            watchdog.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(watchdog, *tasks, return_exceptions=True)
            self._drain(queue, journal)

    def _drain(
        self, queue: asyncio.Queue[Decision | Deletion | object], journal: Journal
    ) -> None:
        """Rows left queued when the workers were cancelled were never sent."""
        while not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, Decision):
                journal.outcome_later(unattempted(item.row, item.account_id))
            elif isinstance(item, Deletion):
                journal.outcome_later(
                    {**deletion_base(item), "outcome": Outcome.NOT_ATTEMPTED}
                )

    async def _produce_then_stop(
        self,
        queue: asyncio.Queue[Decision | Deletion | object],
        journal: Journal,
        workers: list[asyncio.Task[None]],
    ) -> None:
        try:
            await self._produce(queue, journal)
        except Exception as exc:
            # Rows already handed out finish or are reported by the workers;
            # nothing more is sent.
            self._producer_error = exc
            self._stop.set()
            self._log.error("run_stopped", reason=str(exc))
        for _ in workers:
            await queue.put(_STOP)

    async def _close_rows(self, journal: Journal) -> None:
        """Give every row an outcome: duplicates copy their first occurrence,
        rows cut off by a stop (whatever path it took) are not_attempted."""
        await journal.commit({"type": "checkpoint"})
        state = journal.state
        if self._unreported(state):
            self._sweep_unreported(journal, state)
            # The copies below read their first rows' records back from disk.
            await journal.commit({"type": "checkpoint"})
        self._record_duplicates(journal, state)

    def _unreported(self, state: JournalState) -> bool:
        """Whether a valid row that is not a repeat may still lack an outcome
        (counted, so that a complete run skips reading the manifest again)."""
        skipped = self.validation.invalid_lines | self.validation.duplicate_of.keys()
        expected = self.validation.rows_total - len(skipped)
        reported = 0
        for key in state.outcomes:
            kind, _, line = key.partition(":")
            if kind == "line" and int(line) not in skipped:
                reported += 1
        return reported < expected

    def _sweep_unreported(self, journal: Journal, state: JournalState) -> None:
        duplicate_of = self.validation.duplicate_of
        for row in self.manifest.rows():
            key = row_key(row.line)
            first = duplicate_of.get(row.line)
            if first is not None and row_key(first) in state.outcomes:
                continue  # copied from its first occurrence
            if key in state.outcomes:
                continue
            record = unattempted(row, self._account_of(row))
            if key in state.open_intents:
                record["unresolved"] = True
            journal.outcome_later(record)

    async def _produce(
        self, queue: asyncio.Queue[Decision | Deletion | object], journal: Journal
    ) -> None:
        batch: list[Decision] = []
        for row in self.manifest.rows():
            key = row_key(row.line)
            if key in self._done or row.line in self.validation.duplicate_of:
                continue
            account = self._account_of(row)
            view = self._accounts[account]
            if self._carried_ops:
                carried = self._carried_ops.get((account, row.namespace))
                if carried is not None:
                    self._uncertain.setdefault(key, carried)

            if self._stop.is_set() or self._fatal is not None:
                journal.outcome_later(unattempted(row, account))
                continue
            if view.refused is not None:
                journal.outcome_later(failed(row, account, view.refused, attempts=0))
                self._notify(Outcome.FAILED)
                continue

            found = self._resolved.get(key)
            if found is not None and row.trusted_workers in (
                None,
                found.trusted_workers,
            ):
                # Made by the earlier run as asked; otherwise the LIST's view
                # decides what is left (say, trusted_workers still to set).
                outcome = Outcome.RENAMED if row.previous_name else Outcome.CREATED
                await journal.outcome(settled(row, account, outcome, found, 0))
                self._notify(outcome)
                continue

            decision = decide(row, account, view.namespaces)
            if decision.action is Action.ADOPT:
                assert decision.existing is not None
                outcome = self._adopted_outcome(key)
                record = settled(row, account, outcome, decision.existing, 0)
                if outcome is Outcome.EXISTING:
                    journal.outcome_later(record)
                else:
                    await journal.outcome(record)
                self._notify(outcome)
            elif decision.action is Action.CONFLICT:
                journal.outcome_later(conflict(row, account, decision.reason))
                self._notify(Outcome.FAILED)
            else:
                batch.append(decision)
                if len(batch) >= self.concurrency * INTENT_BATCH_PER_WORKER:
                    await self._dispatch(batch, queue, journal)
                    batch = []

        await self._dispatch(batch, queue, journal)
        await self._produce_deletions(queue, journal)

    async def _dispatch(
        self,
        batch: list[Decision],
        queue: asyncio.Queue[Decision | Deletion | object],
        journal: Journal,
    ) -> None:
        """Sync the batch's intents in one write, then hand its rows to workers.

        Write-ahead holds: no row's call goes out before its intent is on
        disk. A row still queued when the run is killed leaves an open intent,
        which costs the next run a lookup (see INTENT_BATCH_PER_WORKER).
        """
        if not batch:
            return
        sent, at = self.client.stats.requests_sent, utc_now()
        for decision in batch:
            row = decision.row
            journal.intent_later(
                op=decision.action.value,
                key=row_key(row.line),
                account_id=decision.account_id,
                namespace=row.namespace,
                line=row.line,
                sent=sent,
                at=at,
            )
        await journal.sync()
        for index, decision in enumerate(batch):
            try:
                await queue.put(decision)
            except asyncio.CancelledError:
                # Cut off by the grace period: these were never handed out.
                for left in batch[index:]:
                    journal.outcome_later(unattempted(left.row, left.account_id))
                raise

    async def _produce_deletions(
        self, queue: asyncio.Queue[Decision | Deletion | object], journal: Journal
    ) -> None:
        for deletion in self._prune.unsafe:
            self._log.warning(
                "unsafe_name_not_deleted", namespace=deletion.namespace.namespace_name
            )
            journal.outcome_later(
                {
                    **deletion_base(deletion),
                    "outcome": Outcome.NOT_ATTEMPTED,
                    "error_message": "name is unsafe in a URL path; never deleted",
                }
            )
        for deletion in self._prune.deletions:
            if deletion.key in self._done:
                continue
            if self._stop.is_set() or self._fatal is not None:
                journal.outcome_later(
                    {**deletion_base(deletion), "outcome": Outcome.NOT_ATTEMPTED}
                )
                continue
            await queue.put(deletion)

    def _adopted_outcome(self, key: str) -> Outcome:
        """A name found in the LIST is ours if an earlier run's call made it."""
        op = self._uncertain.get(key)
        if op == "create":
            return Outcome.CREATED
        if op == "rename":
            return Outcome.RENAMED
        if op == "update":
            return Outcome.UPDATED
        return Outcome.EXISTING

    async def _worker(
        self, queue: asyncio.Queue[Decision | Deletion | object], journal: Journal
    ) -> None:
        # Every event of a row (retries, lookups) carries the row's fields. Each
        # worker is a task with a context of its own, so binding them for the
        # next row replaces the last row's, and no other task sees them.
        while True:
            item = await queue.get()
            if item is _STOP:
                return
            if isinstance(item, Deletion):
                bind_row(
                    namespace=item.namespace.namespace_name,
                    line=None,
                    account_id=item.account_id,
                )
                await self._work_deletion(item, journal)
                continue
            assert isinstance(item, Decision)
            if self._stop.is_set() or self._fatal is not None:
                journal.outcome_later(unattempted(item.row, item.account_id))
                continue

            bind_row(
                namespace=item.row.namespace,
                line=item.row.line,
                account_id=item.account_id,
            )
            try:
                record = await self._carry_out(item, journal)
            except asyncio.CancelledError:
                journal.outcome_later(
                    {
                        **unattempted(item.row, item.account_id),
                        "unresolved": True,
                        "error_message": "stopped while a call was in flight; "
                        "a rerun looks the name up",
                    }
                )
                raise
            # Not awaited: until this record reaches the disk (with the next
            # intent's sync, or at the end) the row's intent stays open, and a
            # run killed in between settles the row by a lookup. No ID is lost.
            journal.outcome_later(record)
            self._notify(str(record["outcome"]))

    async def _work_deletion(self, deletion: Deletion, journal: Journal) -> None:
        base = deletion_base(deletion)
        if self._stop.is_set() or self._fatal is not None:
            journal.outcome_later({**base, "outcome": Outcome.NOT_ATTEMPTED})
            return

        name = deletion.namespace.namespace_name
        journal.intent_later(
            op="delete",
            key=deletion.key,
            account_id=deletion.account_id,
            namespace=name,
            line=None,
            sent=self.client.stats.requests_sent,
            namespace_id=deletion.namespace.namespace_id,
        )
        await journal.sync()
        try:
            attempts = await self._delete(deletion.account_id, name)
        except asyncio.CancelledError:
            journal.outcome_later(
                {**base, "outcome": Outcome.NOT_ATTEMPTED, "unresolved": True}
            )
            raise
        except (RunInterruptedError, TransientError) as exc:
            if isinstance(exc, RunInterruptedError) or self._stop.is_set():
                record = {**base, "outcome": Outcome.NOT_ATTEMPTED, "unresolved": True}
            else:
                record = {**base, **failure_fields(exc)}
        except ApiError as exc:
            if isinstance(exc, CredentialsRefusedError):
                self._on_refused(exc)
            record = {**base, **failure_fields(exc)}
        else:
            self._log.info("namespace_deleted", namespace=name, attempts=attempts)
            record = {**base, "outcome": Outcome.DELETED, "attempts": attempts}
        await journal.outcome(record)
        self._notify(str(record["outcome"]))

    async def _delete(self, account: str, name: str) -> int:
        """DELETE a name; an unknown outcome or a 404 is settled by a lookup.

        aiohttp sends a DELETE again by itself after a dropped connection, so
        a 404 may answer our own earlier, successful DELETE.
        """
        uncertain = False

        async def attempt() -> None:
            nonlocal uncertain
            if uncertain and await self._lookup(account, name) is None:
                return
            try:
                await self.client.delete_namespace(account, name)
            except NotFoundError:
                if await self._lookup(account, name) is not None:
                    raise
            except ApiError as exc:
                uncertain = uncertain or exc.may_have_committed
                raise

        result = await self.policy.call(
            attempt, op="delete", name=name, idempotent=True
        )
        return result.attempts

    async def _cancel_after_grace(self, tasks: list[asyncio.Task[None]]) -> None:
        await self._stop.wait()
        await asyncio.sleep(self.options.grace_s)
        for task in tasks:
            task.cancel()

    def _notify(self, outcome: str) -> None:
        if self.options.on_outcome is not None:
            self.options.on_outcome(outcome)

    # -- one row --------------------------------------------------------------

    async def _carry_out(self, decision: Decision, journal: Journal) -> dict[str, Any]:
        row, account = decision.row, decision.account_id
        # Only a resumed run (or one carrying a set-aside journal's calls) has
        # rows whose earlier call may have happened.
        uncertain = bool(self._uncertain) and row_key(row.line) in self._uncertain
        try:
            if decision.action is Action.CREATE:
                namespace, attempts, outcome = await self._create(
                    account, row.namespace, uncertain=uncertain
                )
            elif decision.action is Action.RENAME:
                namespace, attempts, outcome = await self._rename(
                    decision, uncertain=uncertain
                )
            else:
                namespace, attempts, outcome = await self._update(decision)
        except (RunInterruptedError, TransientError) as exc:
            if isinstance(exc, TransientError) and not self._stop.is_set():
                return self._failure(decision, exc)
            # Stopped mid-row: the call may have gone out, so the next run
            # looks the name up before doing anything else with it.
            return {**unattempted(row, account), "unresolved": True}
        except ApiError as exc:
            return self._failure(decision, exc)

        if (
            decision.action is not Action.UPDATE
            and "trusted_workers" in decision.changes
        ):
            try:
                namespace, more = await self._set_trusted(account, row, namespace)
            except (ApiError, RunInterruptedError) as exc:
                if isinstance(exc, RunInterruptedError):
                    exc = TransientError("stopped before trust was set", status=None)
                # Keep the ID that was made; the next run converges the setting.
                record = self._failure(decision, exc)
                record["namespace_id"] = namespace.namespace_id
                record["created_on"] = namespace.created_on
                record["error_message"] = (
                    f"{outcome.value}, but setting trusted_workers failed: "
                    f"{record['error_message']}"
                )
                return record
            attempts += more

        self._log.info(
            _SETTLED_EVENTS[outcome],
            namespace_id=namespace.namespace_id,
            attempts=attempts,
        )
        record = settled(row, account, outcome, namespace, attempts)
        if decision.changes:
            record["changes"] = {
                k: {"from": before, "to": after}
                for k, (before, after) in decision.changes.items()
            }
        return record

    def _failure(self, decision: Decision, exc: ApiError) -> dict[str, Any]:
        if isinstance(exc, CredentialsRefusedError):
            self._on_refused(exc)
        else:
            self._log.warning(
                "namespace_failed",
                op=decision.action.value,
                status=exc.status,
                code=exc.code,
                error=exc.message,
            )
        return failed(decision.row, decision.account_id, exc, attempts=exc.attempts)

    def _on_refused(self, exc: CredentialsRefusedError) -> None:
        if self._fatal is None:
            self._log.error("credentials_refused", status=exc.status, error=exc.message)
        self._fatal = exc
        self._stop.set()
        self.client.halt()

    async def _create(
        self, account: str, name: str, *, uncertain: bool
    ) -> tuple[Namespace, int, Outcome]:
        """Create ``name``; an unknown outcome is settled by a lookup, not a resend."""
        return await self._send_settled(
            account,
            name,
            lambda: self.client.create_namespace(account, name),
            made=Outcome.CREATED,
            op="create",
            uncertain=uncertain,
        )

    async def _rename(
        self, decision: Decision, *, uncertain: bool
    ) -> tuple[Namespace, int, Outcome]:
        """Rename previous -> new; an unknown outcome is settled by a lookup.

        The new name is looked up: present means the rename happened. A PATCH
        sent again to a previous name already renamed answers 404, harmlessly.
        """
        account, new = decision.account_id, decision.row.namespace
        old = decision.row.previous_name
        assert old is not None
        return await self._send_settled(
            account,
            new,
            lambda: self.client.update_namespace(account, old, new_name=new),
            made=Outcome.RENAMED,
            op="rename",
            uncertain=uncertain,
        )

    async def _send_settled(
        self,
        account: str,
        name: str,
        send: Callable[[], Awaitable[Namespace]],
        *,
        made: Outcome,
        op: str,
        uncertain: bool,
    ) -> tuple[Namespace, int, Outcome]:
        """Send a call that brings ``name`` into being, never twice blindly.

        ``uncertain`` says an earlier attempt (maybe an earlier run's) may have
        succeeded already, so the first thing to do is look the name up. Any
        failure after the request may have reached the server sets it again;
        any other 4xx is judged by a lookup too, since Cloudflare documents no
        code for "already exists".
        """

        async def attempt() -> tuple[Namespace, Outcome]:
            nonlocal uncertain
            if uncertain:
                found = await self._lookup(account, name)
                if found is not None:
                    return found, made
            try:
                return await send(), made
            except CredentialsRefusedError:
                raise
            except PermanentError:
                found = await self._lookup(account, name)
                if found is None:
                    raise
                return found, made if uncertain else Outcome.EXISTING
            except ApiError as exc:
                uncertain = uncertain or exc.may_have_committed
                raise

        result = await self.policy.call(attempt, op=op, name=name, idempotent=True)
        namespace, outcome = result.value
        return namespace, result.attempts, outcome

    async def _update(self, decision: Decision) -> tuple[Namespace, int, Outcome]:
        account, row = decision.account_id, decision.row
        namespace, attempts = await self._set_trusted(account, row, decision.existing)
        # A namespace an earlier run made (its setting still to converge) is
        # reported as made.
        made = self._adopted_outcome(row_key(row.line))
        return (
            namespace,
            attempts,
            Outcome.UPDATED if made is Outcome.EXISTING else made,
        )

    async def _set_trusted(
        self, account: str, row: ManifestRow, current: Namespace | None
    ) -> tuple[Namespace, int]:
        """PATCH trusted_workers to the row's value (setting a value is idempotent)."""
        if row.trusted_workers is None:
            assert current is not None
            return current, 0
        result = await self.policy.call(
            lambda: self.client.update_namespace(
                account, row.namespace, trusted_workers=row.trusted_workers
            ),
            op="update",
            name=row.namespace,
            idempotent=True,
        )
        return result.value, result.attempts

    async def _lookup(self, account: str, name: str) -> Namespace | None:
        """GET one name; None when the account does not hold it."""
        try:
            return await self.client.get_namespace(account, name)
        except NotFoundError:
            return None

    # -- phase 5: close -----------------------------------------------------

    def _record_duplicates(self, journal: Journal, state: JournalState) -> None:
        if not self.validation.duplicate_of:
            return
        with journal.path.open("rb") as handle:
            for line, first in sorted(self.validation.duplicate_of.items()):
                offset = state.outcome_offsets.get(row_key(first))
                if offset is None:
                    continue
                original = read_record_at(handle, offset)
                outcome = original.get("outcome")
                if outcome in (Outcome.CREATED, Outcome.RENAMED, Outcome.UPDATED):
                    outcome = Outcome.EXISTING  # the first row did it, not this one
                copied = {k: v for k, v in original.items() if k not in ("type", "at")}
                journal.outcome_later(
                    {
                        **copied,
                        "key": row_key(line),
                        "line": line,
                        "outcome": outcome,
                        "attempts": 0,
                        "duplicate_of": first,
                    }
                )

    async def _finish(
        self, journal: Journal, started_at: str, started_s: float
    ) -> RunResult:
        await journal.commit({"type": "checkpoint"})
        state = journal.state
        counts = count_outcomes(state)
        exit_code = self._exit_code(counts)
        summary = {
            "run_id": journal.run_id,
            "manifest": str(self.manifest.path),
            "manifest_sha256": self.validation.sha256,
            "resumed": self._resumed,
            "started_at": started_at,
            "finished_at": utc_now(),
            "duration_s": round(time.monotonic() - started_s, 3),
            "rows": sum(counts.values()),
            "outcomes": counts,
            "requests_sent": self.client.stats.requests_sent,
            "retries": self.policy.retries_scheduled,
            "rate_limited": self.client.stats.rate_limited,
            "unmanaged": self._unmanaged - len(self._prune.deletions),
            "accounts": {
                account: ("refused" if view.refused else "ok")
                for account, view in sorted(self._accounts.items())
            },
            "exit_code": exit_code,
        }

        paths = write_report(
            self.report_dir, journal.path, state, summary, self.validation.columns
        )
        if exit_code not in (CredentialsRefusedError.exit_code, 6):
            # Complete: the next run starts a new journal. A run stopped early
            # leaves this one open so the next run resumes it.
            await journal.finish(summary)
        self._log.info(
            "run_finished",
            exit_code=exit_code,
            duration_s=summary["duration_s"],
            requests_sent=summary["requests_sent"],
            **counts,
        )
        return RunResult(exit_code, summary, paths, journal.path)

    def _exit_code(self, counts: dict[str, int]) -> int:
        if self._fatal is not None:
            return CredentialsRefusedError.exit_code
        if self._interrupted:
            return 6
        if counts[Outcome.FAILED] or counts[Outcome.INVALID]:
            return 3
        return 0
