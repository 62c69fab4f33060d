"""The reconciliation report, rebuilt from the journal by streaming over it.

``report.json`` (for machines) holds ``summary`` and ``rows``; ``report.csv``
(for people) holds the rows. Rows come in manifest order, then namespaces
outside the manifest (deletions and unmanaged ones). Both files are written
to a temporary name and moved into place, so a reader never sees half a report.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from provisioner.journal import JournalState, read_record_at
from provisioner.models import Outcome

REPORT_FIELDS = (
    "row",
    "account_id",
    "namespace",
    "outcome",
    "namespace_id",
    "created_on",
    "attempts",
    "error_code",
    "error_message",
    "previous_name",
    "changes",
)

# A spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_FIRST = frozenset("=+-@\t\r")
# The journal is read through a buffer this large: a row's record is found by
# seeking to its offset, and a seek within the buffer costs no read. Records
# come in roughly manifest order, so most seeks land in the buffer.
_READ_BUFFER_BYTES = 256 * 1024
# The csv module's line end.
_CSV_LINE_END = "\r\n"
# Manifest columns that are report fields too: the record's own value wins.
_OWN_COLUMNS = frozenset({"namespace", "account_id"})
# Report rows written at once.
_ROWS_PER_WRITE = 256


@dataclass(frozen=True, slots=True)
class ReportPaths:
    """Where the report went."""

    json_path: Path
    csv_path: Path


def neutralise_cell(value: str) -> str:
    """Make a CSV cell inert in spreadsheets (a leading quote), else unchanged."""
    return "'" + value if value[:1] in _FORMULA_FIRST else value


def report_row(record: dict[str, Any]) -> dict[str, Any]:
    """A journal outcome record as a report row (manifest columns flattened)."""
    get = record.get
    row: dict[str, Any] = {
        "row": get("line"),
        "account_id": get("account_id"),
        "namespace": get("namespace"),
        "outcome": get("outcome"),
        "namespace_id": get("namespace_id"),
        "created_on": get("created_on"),
        "attempts": get("attempts", 0),
        "error_code": get("error_code"),
        "error_message": get("error_message"),
        "previous_name": get("previous_name"),
        "changes": get("changes"),
    }
    for column, value in (get("columns") or {}).items():
        if column not in row:
            row[column] = value
        elif column not in _OWN_COLUMNS:
            row[f"manifest_{column}"] = value
        elif row[column] is None:
            row[column] = value
    return row


def ordered_offsets(state: JournalState) -> list[int]:
    """Where each key's last outcome is, manifest rows by line, then the rest
    by key."""
    lines: list[tuple[int, int]] = []
    others: list[tuple[str, int]] = []
    for key, offset in state.outcome_offsets.items():
        line = key[5:]
        if key.startswith("line:") and line.isdigit():
            lines.append((int(line), offset))
        else:
            others.append((key, offset))
    lines.sort()
    others.sort()
    return [offset for _, offset in lines] + [offset for _, offset in others]


def iter_rows(journal_path: Path, state: JournalState) -> Iterator[dict[str, Any]]:
    """Each key's last outcome, as report rows, in report order."""
    with journal_path.open("rb", buffering=_READ_BUFFER_BYTES) as handle:
        for offset in ordered_offsets(state):
            yield report_row(read_record_at(handle, offset))


def count_outcomes(state: JournalState) -> dict[str, int]:
    """Rows by outcome, every outcome named (zeros included)."""
    counts = Counter(state.outcomes.values())
    return {outcome.value: counts.get(outcome.value, 0) for outcome in Outcome}


def write_report(
    report_dir: Path,
    journal_path: Path,
    state: JournalState,
    summary: dict[str, Any],
    manifest_columns: list[str],
) -> ReportPaths:
    """Write report.json and report.csv from the journal, atomically each."""
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = report_dir / "report.json"
    csv_path = report_dir / "report.csv"

    extra = [c for c in manifest_columns if c not in REPORT_FIELDS]
    summary["by_account"] = {
        account: {outcome: n for outcome, n in sorted(counts.items()) if n}
        for account, counts in sorted(state.by_account.items())
        if any(counts.values())
    }
    # One pass over the journal feeds both files, a slice of rows at a time.
    with (
        _atomic(csv_path, "w") as csv_handle,
        _atomic(json_path, "wb") as json_handle,
    ):
        csv_writer = _CsvRows(csv_handle, extra)
        json_writer = _JsonRows(json_handle, summary)
        rows = iter_rows(journal_path, state)
        while chunk := list(itertools.islice(rows, _ROWS_PER_WRITE)):
            csv_writer.add(chunk)
            json_writer.add(chunk)
        json_writer.close()

    return ReportPaths(json_path, csv_path)


class _CsvRows:
    """report.csv: the report's fields, then the manifest's other columns.

    A row none of whose cells holds a comma, a double quote or a line break is
    written as its cells joined by commas, which is what the csv module writes
    for it; any other row goes through the csv module, which quotes it. The
    module checks every character of every cell, at about a third of the
    report's cost, for rows that hardly ever need it.
    """

    def __init__(self, handle: IO[str], extra: list[str]) -> None:
        self._handle = handle
        self._fields = [*REPORT_FIELDS, *extra]
        self._separators = len(self._fields) - 1
        self._writer = csv.writer(handle, lineterminator=_CSV_LINE_END)
        self._writer.writerow(self._fields)

    def add(self, rows: list[dict[str, Any]]) -> None:
        plain: list[str] = []
        for row in rows:
            cells = _csv_cells(row, self._fields)
            line = ",".join(cells)
            if line.count(",") == self._separators and not _needs_quotes(line):
                plain.append(line)
                continue
            plain.append("")  # ends the plain lines before this one
            self._handle.write(_CSV_LINE_END.join(plain))
            plain = []
            self._writer.writerow(cells)
        if plain:
            plain.append("")
            self._handle.write(_CSV_LINE_END.join(plain))


def _needs_quotes(line: str) -> bool:
    """Whether the csv module would quote a cell of this line (commas aside)."""
    return '"' in line or "\n" in line or "\r" in line


def _csv_cells(row: dict[str, Any], fields: list[str]) -> list[str]:
    """One row's cells as text, inert in spreadsheets."""
    cells: list[Any] = list(map(row.get, fields))
    for index, value in enumerate(cells):
        if type(value) is str:
            if value and value[0] in _FORMULA_FIRST:
                cells[index] = "'" + value
        elif value is None:
            cells[index] = ""
        elif type(value) is int and value >= 0:
            cells[index] = str(value)
        else:
            cells[index] = neutralise_cell(_cell(value))
    return cells


class _JsonRows:
    """report.json: ``{"summary": ..., "rows": [...]}``, rows in slices."""

    def __init__(self, handle: IO[bytes], summary: dict[str, Any]) -> None:
        self._handle = handle
        self._separator = b""
        handle.write(b'{"summary": ')
        handle.write(json.dumps(summary, indent=2, ensure_ascii=False).encode())
        handle.write(b',\n"rows": [\n')

    def add(self, rows: list[dict[str, Any]]) -> None:
        self._handle.write(self._separator)
        self._handle.write(b",\n".join(map(orjson.dumps, rows)))
        self._separator = b",\n"

    def close(self) -> None:
        self._handle.write(b"\n]}\n")


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


class _atomic:
    """Write to ``<path>.tmp``, sync, then move over ``path``."""

    def __init__(self, path: Path, mode: str) -> None:
        self._path = path
        self._mode = mode
        self._tmp = path.with_name(path.name + ".tmp")
        self._handle: IO[Any] | None = None

    def __enter__(self) -> IO[Any]:
        if "b" in self._mode:
            self._handle = self._tmp.open(self._mode)
        else:
            self._handle = self._tmp.open(self._mode, encoding="utf-8", newline="")
        return self._handle

    def __exit__(self, exc_type: object, *rest: object) -> None:
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        if exc_type is None:
            os.replace(self._tmp, self._path)
        else:
            self._tmp.unlink(missing_ok=True)
