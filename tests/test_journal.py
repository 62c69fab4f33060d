"""The write-ahead journal and the report rebuilt from it."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest

from provisioner import report as report_module
from provisioner.journal import (
    Journal,
    archive,
    read_state,
    spent_ages_s,
)
from provisioner.report import neutralise_cell, write_report


async def make_journal(path: Path) -> Journal:
    return Journal.create(path, manifest="m.csv", manifest_sha256="abc")


async def test_intent_without_outcome_stays_open(tmp_path: Path) -> None:
    """An intent with no outcome after it is reported as open."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)

    journal.intent_later(
        op="create", key="line:2", account_id="a", namespace="x", line=2
    )
    journal.intent_later(
        op="create", key="line:3", account_id="a", namespace="y", line=3
    )
    await journal.outcome({"key": "line:2", "line": 2, "outcome": "created"})
    await journal.close()

    state = read_state(path)
    assert state is not None
    assert list(state.open_intents) == ["line:3"]
    assert state.outcomes == {"line:2": "created"}
    assert not state.finished


async def test_unresolved_outcome_keeps_the_intent_open(tmp_path: Path) -> None:
    """A row cut off by a stop keeps its intent open for the next run's lookup."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)

    journal.intent_later(
        op="create", key="line:2", account_id="a", namespace="x", line=2
    )
    await journal.outcome(
        {"key": "line:2", "line": 2, "outcome": "not_attempted", "unresolved": True}
    )
    await journal.close()

    state = read_state(path)
    assert state is not None
    assert "line:2" in state.open_intents


async def test_commits_from_concurrent_workers_share_syncs(tmp_path: Path) -> None:
    """Group commit: many concurrent records take fewer fsyncs than records."""
    journal = await make_journal(tmp_path / "journal.jsonl")
    syncs_before = journal.syncs

    await asyncio.gather(
        *(
            journal.outcome({"key": f"line:{i}", "outcome": "created"})
            for i in range(50)
        )
    )
    await journal.close()

    assert journal.syncs - syncs_before < 50
    state = read_state(journal.path)
    assert state is not None
    assert len(state.outcomes) == 50


async def test_torn_last_line_is_ignored_and_cut_on_reopen(tmp_path: Path) -> None:
    """A half-written record (a kill mid-write) never happened, and is cut."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)
    await journal.outcome({"key": "line:2", "outcome": "created"})
    await journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"type":"outcome","key":"line:3","outc')

    state = read_state(path)
    assert state is not None
    assert state.outcomes == {"line:2": "created"}
    reopened = Journal.reopen(path, state)
    await reopened.outcome({"key": "line:3", "outcome": "created"})
    await reopened.close()

    lines = path.read_bytes().splitlines()
    assert all(json.loads(line) for line in lines)
    again = read_state(path)
    assert again is not None
    assert again.outcomes == {"line:2": "created", "line:3": "created"}


async def test_finish_marks_complete_and_archive_moves_aside(tmp_path: Path) -> None:
    """A finished journal says so, and archive() keeps it under history/."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)
    await journal.finish({"rows": 0})
    await journal.close()

    state = read_state(path)
    assert state is not None
    assert state.finished
    moved = archive(path)
    assert moved.parent.name == "history"
    assert not path.exists()


async def test_report_last_outcome_wins_in_manifest_order(tmp_path: Path) -> None:
    """The report has one row per key, its last outcome, rows by line number."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)
    columns = {"namespace": "x", "tenant_id": "t1", "plan": "=HYPERLINK(1)"}
    await journal.outcome(
        {"key": "line:10", "line": 10, "namespace": "y", "outcome": "existing"}
    )
    await journal.outcome(
        {"key": "line:2", "line": 2, "namespace": "x", "outcome": "not_attempted"}
    )
    await journal.outcome(
        {
            "key": "line:2",
            "line": 2,
            "namespace": "x",
            "outcome": "created",
            "namespace_id": "id-x",
            "columns": columns,
        }
    )
    await journal.close()
    state = read_state(path)
    assert state is not None

    paths = write_report(tmp_path, path, state, {"rows": 2}, ["tenant_id", "plan"])

    report = json.loads(paths.json_path.read_text())
    assert [r["row"] for r in report["rows"]] == [2, 10]
    assert report["rows"][0]["outcome"] == "created"
    assert report["rows"][0]["plan"] == "=HYPERLINK(1)"
    with paths.csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["namespace_id"] == "id-x"
    assert rows[0]["tenant_id"] == "t1"
    assert rows[0]["plan"] == "'=HYPERLINK(1)"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_csv_cells_are_neutralised(cell: str, expected: str) -> None:
    """Cells a spreadsheet would run as formulas get a leading quote."""
    assert neutralise_cell(cell) == expected


def test_spent_ages_count_requests_between_intents() -> None:
    """Lookups and retries between two intents are counted at the later one."""
    now = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    calls = [
        ("2026-01-01T00:00:00Z", None),  # the run's LIST
        ("2026-01-01T00:00:30Z", 1),
        ("2026-01-01T00:00:40Z", 5),
        ("not a time", 6),
    ]

    ages = spent_ages_s(calls, now, in_flight=2)

    assert ages == [60.0, 30.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0]


async def test_history_keeps_only_the_newest_journals(tmp_path: Path) -> None:
    """archive() prunes history to the newest `keep` journals."""
    path = tmp_path / "journal.jsonl"

    for _ in range(4):
        journal = await make_journal(path)
        await journal.close()
        archive(path, keep=2)

    assert len(list((tmp_path / "history").iterdir())) == 2


async def test_live_state_matches_a_reading_of_the_file(tmp_path: Path) -> None:
    """The state a journal keeps as it writes equals read_state of its file."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)
    journal.intent_later(
        op="create", key="line:2", account_id="a", namespace="x", line=2
    )
    journal.intent_later(
        op="create", key="line:3", account_id="b", namespace="y", line=3
    )
    await journal.outcome({"key": "line:2", "account_id": "a", "outcome": "failed"})
    journal.outcome_later({"key": "line:2", "account_id": "a", "outcome": "created"})
    journal.outcome_later({"key": "line:4", "account_id": "b", "outcome": "invalid"})
    await journal.close()

    read = read_state(path)

    live = journal.state
    assert read is not None
    assert live.end_offset == read.end_offset == path.stat().st_size
    assert live.outcomes == read.outcomes == {"line:2": "created", "line:4": "invalid"}
    assert live.outcome_offsets == read.outcome_offsets
    assert live.open_intents.keys() == read.open_intents.keys() == {"line:3"}
    assert live.by_account == read.by_account


async def test_reopened_journal_keeps_its_state_live(tmp_path: Path) -> None:
    """A resumed journal's state continues from the file, torn tail dropped."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)
    await journal.outcome({"key": "line:2", "account_id": "a", "outcome": "created"})
    await journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"type":"outcome","key":"line:3"')  # torn by a crash
    state = read_state(path)
    assert state is not None

    again = Journal.reopen(path, state)
    await again.outcome({"key": "line:3", "account_id": "a", "outcome": "created"})
    await again.close()

    read = read_state(path)
    assert read is not None
    assert again.state.outcome_offsets == read.outcome_offsets
    assert again.state.end_offset == path.stat().st_size


async def test_counts_by_account_follow_each_rows_last_outcome(tmp_path: Path) -> None:
    """A row's later outcome replaces its earlier one in the per-account counts."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)
    await journal.outcome({"key": "line:2", "account_id": "a", "outcome": "failed"})
    await journal.outcome({"key": "line:3", "account_id": "a", "outcome": "created"})
    await journal.outcome({"key": "line:2", "account_id": "a", "outcome": "created"})
    await journal.outcome({"key": "line:4", "account_id": "b", "outcome": "existing"})
    await journal.close()
    state = read_state(path)
    assert state is not None

    write_report(tmp_path, path, state, {}, [])

    summary = json.loads((tmp_path / "report.json").read_text())["summary"]
    assert summary["by_account"] == {"a": {"created": 2}, "b": {"existing": 1}}


async def test_report_reads_each_outcome_once_for_both_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report.json and report.csv come from one pass over the journal."""
    path = tmp_path / "journal.jsonl"
    journal = await make_journal(path)
    rows = 7
    for line in range(2, 2 + rows):
        await journal.outcome(
            {"key": f"line:{line}", "line": line, "outcome": "created"}
        )
    await journal.close()
    state = read_state(path)
    assert state is not None
    reads = []
    real_read = report_module.read_record_at

    def counting_read(handle: IO[bytes], offset: int) -> dict[str, Any]:
        reads.append(offset)
        return real_read(handle, offset)

    monkeypatch.setattr(report_module, "read_record_at", counting_read)

    paths = write_report(tmp_path, path, state, {}, [])

    assert len(reads) == rows
    assert len(json.loads(paths.json_path.read_text())["rows"]) == rows
    with paths.csv_path.open() as handle:
        assert len(list(csv.DictReader(handle))) == rows
