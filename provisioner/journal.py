"""The write-ahead journal: every intent before its call, every outcome after.

One JSON object a line. An ``intent`` is written and synced to disk before
the call it announces is sent; an ``outcome`` is queued as soon as a row's fate
is known and reaches the disk with the next sync (the next intent, or the end
of the run). A run killed at any instant leaves a journal from which the next
run knows which rows are done, which calls may have reached the server (an
intent with no outcome after it: the next run looks the name up, so an outcome
lost to a kill costs one lookup, never an ID), and which rows were never
touched.

Records, by ``type``:

- ``run``: first line; ``run_id``, ``manifest``, ``manifest_sha256``, ``started_at``.
- ``resume``: a later run took the journal over.
- ``intent``: ``op`` (create, update, rename, delete), ``key``, ``account_id``,
  ``namespace``, ``line``.
- ``outcome``: ``key``, ``line`` (null for a deletion), ``outcome`` and the
  report's fields for that row.
- ``finished``: the run completed and wrote its report.

A row's ``key`` is ``line:<n>`` for manifest rows and ``unmanaged:<account>:<name>``
for namespaces outside the manifest. The last outcome of a key wins.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from provisioner.timestamps import utc_now_ms

log = structlog.get_logger("provisioner.journal")

JOURNAL_NAME = "journal.jsonl"
FORMAT_VERSION = 1


def utc_now() -> str:
    """The current time as RFC 3339 UTC with milliseconds."""
    return utc_now_ms()


@dataclass
class JournalState:
    """What an existing journal says: header, finished or not, open intents."""

    header: dict[str, Any]
    finished: bool
    # key -> the intent record that has no outcome after it
    open_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    # key -> byte offset of the key's last outcome record
    outcome_offsets: dict[str, int] = field(default_factory=dict)
    # key -> the key's last outcome ("created", "failed", ...)
    outcomes: dict[str, str] = field(default_factory=dict)
    # key -> the account of the key's last outcome
    accounts: dict[str, str] = field(default_factory=dict)
    # (time, requests sent so far by that run) of the latest records that
    # stand for requests: the run's start (its LIST), resumes, intents
    recent_calls: deque[tuple[str, int | None]] = field(
        default_factory=lambda: deque(maxlen=20_000)
    )
    # account -> outcome -> rows whose last outcome that is
    by_account: dict[str, Counter[str]] = field(default_factory=dict)
    # where the scan stopped: records from here on are not in this state yet
    end_offset: int = 0


class Journal:
    """Append-only; ``commit`` returns once the record is synced to disk.

    Records committed by concurrent workers share one write and one fsync
    (group commit), so the cost of durability does not grow with concurrency.
    ``append`` queues a record that can be recomputed if lost (an adopted row,
    say); it reaches the disk with the next commit or at ``close``.

    ``state`` is what ``read_state`` would find in the file once every queued
    record is written, kept up to date as records are queued, so the end of
    a run needs no second reading of its journal.
    """

    def __init__(
        self, path: Path, handle: IO[bytes], run_id: str, state: JournalState
    ) -> None:
        self.path = path
        self.run_id = run_id
        self.state = state
        self._handle = handle
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.records_written = 0
        self.syncs = 0

    def __repr__(self) -> str:
        return f"Journal(path={str(self.path)!r}, run_id={self.run_id!r})"

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        manifest: str,
        manifest_sha256: str,
        default_account: str | None = None,
    ) -> Journal:
        """Start a new journal at ``path`` (an older one must be moved first)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("xb")
        run_id, started_at = uuid.uuid4().hex, utc_now()
        header: dict[str, Any] = {
            "type": "run",
            "version": FORMAT_VERSION,
            "run_id": run_id,
            "manifest": manifest,
            "manifest_sha256": manifest_sha256,
            "default_account": default_account,
            "started_at": started_at,
        }
        state = JournalState(header=header, finished=False)
        state.recent_calls.append((started_at, None))
        journal = cls(path, handle, run_id, state)
        journal.append(header)
        journal.flush_now()
        _sync_directory(path.parent)
        return journal

    @classmethod
    def reopen(cls, path: Path, state: JournalState) -> Journal:
        """Continue an unfinished journal."""
        _drop_torn_tail(path)
        handle = path.open("ab")
        state.end_offset = handle.seek(0, os.SEEK_END)
        journal = cls(path, handle, str(state.header.get("run_id", "")), state)
        journal.append({"type": "resume", "at": utc_now()})
        journal.flush_now()
        return journal

    def append(self, record: dict[str, Any]) -> None:
        """Queue a record without waiting for the disk."""
        offset = self._queue(record)
        kind = record.get("type")
        if kind != "run":
            _fold(self.state, offset, kind, record)

    def _queue(self, record: dict[str, Any]) -> int:
        """Queue a record's line; returns the offset where it will start."""
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self._pending.append(line)
        offset = self.state.end_offset
        self.state.end_offset = offset + len(line)
        return offset

    async def commit(self, record: dict[str, Any]) -> None:
        """Append a record and return once it (and all before it) is synced."""
        self.append(record)
        await self.sync()

    async def sync(self) -> None:
        """Return once every record queued so far is synced to disk."""
        if not self._pending and (self._flusher is None or self._flusher.done()):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        await waiter

    def intent_later(
        self,
        *,
        op: str,
        key: str,
        account_id: str,
        namespace: str,
        line: int | None,
        sent: int | None = None,
        namespace_id: str | None = None,
        at: str | None = None,
    ) -> None:
        """Queue an intent; its call may go out only after the next ``sync``.

        ``namespace_id`` names what a delete removes, for the report of a run
        that has to settle the delete after a kill. ``at`` is when the intent
        was made (now if not given): intents queued together share one time.
        """
        record: dict[str, Any] = {
            "type": "intent",
            "op": op,
            "key": key,
            "account_id": account_id,
            "namespace": namespace,
            "line": line,
            "sent": sent,
            "at": at or utc_now(),
        }
        if namespace_id is not None:
            record["namespace_id"] = namespace_id
        self._queue(record)
        _fold_intent(self.state, record)

    async def outcome(self, record: dict[str, Any]) -> None:
        """Record, durably, a row's outcome (``key`` and ``outcome`` required)."""
        self.outcome_later(record)
        await self.sync()

    def outcome_later(self, record: dict[str, Any]) -> None:
        """Queue an outcome, written with the next sync.

        For outcomes a rerun can recompute: no call was made, or the row's
        intent stays open (and is settled by a lookup) until this is written.
        The record becomes the journal's: its ``type`` and ``at`` are set in
        place (``records`` builds outcomes with ``type`` first, for reading).
        """
        record["type"] = "outcome"
        record["at"] = utc_now()
        _fold_outcome(self.state, self._queue(record), record)

    async def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run complete; a later run will start a new journal."""
        await self.commit({"type": "finished", "at": utc_now(), "summary": summary})

    async def close(self) -> None:
        """Write what is queued, sync, and close the file."""
        if self._flusher is not None:
            await self._flusher
        self.flush_now()
        self._handle.close()

    def flush_now(self) -> None:
        """Write and sync everything queued, blocking (signal paths, start-up)."""
        lines, self._pending = self._pending, []
        self._write_synced(lines)

    async def _flush_loop(self) -> None:
        # Records nobody waits for ride along with the next sync that someone
        # does wait for (or go at close): they never cost a sync of their own.
        while self._waiters:
            lines, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            try:
                if lines:
                    await asyncio.to_thread(self._write_synced, lines)
            except OSError as exc:
                for waiter in waiters:
                    waiter.set_exception(exc)
                raise
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _write_synced(self, lines: list[bytes]) -> None:
        if not lines:
            return
        self._handle.write(b"".join(lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records_written += len(lines)
        self.syncs += 1


def read_state(path: Path) -> JournalState | None:
    """Scan a journal once; None when there is none or it has no header."""
    if not path.exists():
        return None

    state: JournalState | None = None
    for offset, end, record in iter_records(path):
        kind = record.get("type")
        if kind == "run":
            state = JournalState(header=record, finished=False)
            state.recent_calls.append((str(record.get("started_at")), None))
        elif state is None:
            return None
        else:
            _fold(state, offset, kind, record)
        state.end_offset = end

    return state


def _fold(state: JournalState, offset: int, kind: Any, record: dict[str, Any]) -> None:
    """Take one record after the header into ``state``."""
    if kind == "intent":
        _fold_intent(state, record)
    elif kind == "outcome":
        _fold_outcome(state, offset, record)
    elif kind == "resume":
        state.recent_calls.append((str(record.get("at")), None))
        state.finished = False
    elif kind == "finished":
        state.finished = True


def _fold_intent(state: JournalState, record: dict[str, Any]) -> None:
    sent = record.get("sent")
    count = sent if isinstance(sent, int) else None
    state.recent_calls.append((str(record.get("at")), count))
    key = record.get("key")
    if isinstance(key, str):
        state.open_intents[key] = record


def _fold_outcome(state: JournalState, offset: int, record: dict[str, Any]) -> None:
    key = record.get("key")
    if not isinstance(key, str):
        return
    # An outcome marked unresolved (a call cut off by a stop) leaves the
    # intent open: the next run must look the name up.
    if not record.get("unresolved"):
        state.open_intents.pop(key, None)
    # Interned: a large run holds one copy of each outcome and account name.
    outcome = sys.intern(str(record.get("outcome")))
    account = sys.intern(str(record.get("account_id") or ""))
    earlier = state.outcomes.get(key)
    if earlier is not None:
        state.by_account[state.accounts[key]][earlier] -= 1
    state.outcome_offsets[key] = offset
    state.outcomes[key] = outcome
    state.accounts[key] = account
    counts = state.by_account.get(account)
    if counts is None:
        counts = state.by_account[account] = Counter()
    counts[outcome] += 1


def iter_records(
    path: Path, *, start: int = 0
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Every complete record from byte ``start`` on, with where it begins and
    ends; a torn last line is skipped."""
    with path.open("rb") as handle:
        handle.seek(start)
        offset = start
        for raw in handle:
            begin = offset
            offset += len(raw)
            if not raw.endswith(b"\n"):
                break  # the writer died mid-line; that record never happened
            try:
                record = orjson.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield begin, offset, record


def read_record_at(handle: IO[bytes], offset: int) -> dict[str, Any]:
    """The record starting at ``offset`` of an open journal."""
    handle.seek(offset)
    record = orjson.loads(handle.readline())
    if not isinstance(record, dict):
        raise ValueError(f"journal record at byte {offset} is not an object")
    return record


def spent_ages_s(
    calls: Iterable[tuple[str, int | None]], now: datetime, *, in_flight: int
) -> list[float]:
    """How long ago each request of the journal's runs was sent, estimated.

    Intents carry the run's running count of requests, so the requests between
    two intents (lookups, retries) are counted too, at the later time. The
    last record gets ``in_flight`` more: calls sent after it went unrecorded.
    """
    ages: list[float] = []
    previous: int | None = None
    for stamp, sent in calls:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            continue
        count = 1
        if sent is not None and previous is not None and sent > previous:
            count = sent - previous
        previous = sent
        ages.extend([(now - when).total_seconds()] * count)
    if ages:
        ages.extend([ages[-1]] * in_flight)
    return ages


HISTORY_KEPT = 50


def archive(path: Path, *, keep: int = HISTORY_KEPT) -> Path:
    """Move a finished (or abandoned) journal aside; keep the newest ``keep``."""
    history = path.parent / "history"
    history.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = history / f"journal-{stamp}.jsonl"
    os.replace(path, target)

    # Names sort by time; a volume kept across nightly runs must not fill up.
    archived = sorted(history.glob("journal-*.jsonl"))
    for old in archived[: max(0, len(archived) - keep)]:
        old.unlink(missing_ok=True)
    return target


def _drop_torn_tail(path: Path) -> None:
    """Cut a half-written last line so appended records start on a fresh line."""
    with path.open("rb+") as handle:
        data_end = handle.seek(0, os.SEEK_END)
        if data_end == 0:
            return
        handle.seek(data_end - 1)
        if handle.read(1) == b"\n":
            return
        keep = 0
        handle.seek(0)
        for raw in handle:
            if raw.endswith(b"\n"):
                keep += len(raw)
        handle.truncate(keep)
        os.fsync(handle.fileno())


def _sync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
