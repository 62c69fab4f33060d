"""The reconciliation report, rebuilt from the journal by streaming over it.

``report.json`` (for machines) holds ``summary`` and ``rows``; ``report.csv``
(for people) holds the rows. Rows come in manifest order, then namespaces
outside the manifest (deletions and unmanaged ones). Both files are written
to a temporary name and moved into place, so a reader never sees half a report.
"""

from __future__ import annotations

import csv
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
    row: dict[str, Any] = {
        "row": record.get("line"),
        "account_id": record.get("account_id"),
        "namespace": record.get("namespace"),
        "outcome": record.get("outcome"),
        "namespace_id": record.get("namespace_id"),
        "created_on": record.get("created_on"),
        "attempts": record.get("attempts", 0),
        "error_code": record.get("error_code"),
        "error_message": record.get("error_message"),
        "previous_name": record.get("previous_name"),
        "changes": record.get("changes"),
    }
    for column, value in (record.get("columns") or {}).items():
        if column in row and column not in ("namespace", "account_id"):
            row[f"manifest_{column}"] = value
        elif column not in row or row[column] is None:
            row[column] = value
    return row


def ordered_keys(state: JournalState) -> list[str]:
    """Manifest rows by line, then the rest by key."""

    def order(key: str) -> tuple[int, int, str]:
        kind, _, rest = key.partition(":")
        if kind == "line" and rest.isdigit():
            return (0, int(rest), "")
        return (1, 0, key)

    return sorted(state.outcome_offsets, key=order)


def iter_rows(journal_path: Path, state: JournalState) -> Iterator[dict[str, Any]]:
    """Each key's last outcome, as report rows, in report order."""
    with journal_path.open("rb") as handle:
        for key in ordered_keys(state):
            yield report_row(read_record_at(handle, state.outcome_offsets[key]))


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
    # One pass over the journal feeds both files.
    with _atomic(csv_path) as csv_handle, _atomic(json_path) as json_handle:
        csv_writer = _CsvRows(csv_handle, extra)
        json_writer = _JsonRows(json_handle, summary)
        for row in iter_rows(journal_path, state):
            csv_writer.add(row)
            json_writer.add(row)
        json_writer.close()

    return ReportPaths(json_path, csv_path)


class _CsvRows:
    """report.csv: the report's fields, then the manifest's other columns."""

    def __init__(self, handle: IO[str], extra: list[str]) -> None:
        self._fields = [*REPORT_FIELDS, *extra]
        self._writer = csv.writer(handle)
        self._writer.writerow(self._fields)

    def add(self, row: dict[str, Any]) -> None:
        cells = []
        for name in self._fields:
            value = row.get(name)
            if value is None:
                cells.append("")
                continue
            text = value if type(value) is str else _cell(value)
            cells.append(neutralise_cell(text))
        self._writer.writerow(cells)


class _JsonRows:
    """report.json: ``{"summary": ..., "rows": [...]}``, a row at a time."""

    def __init__(self, handle: IO[str], summary: dict[str, Any]) -> None:
        self._handle = handle
        self._separator = ""
        handle.write('{"summary": ')
        handle.write(json.dumps(summary, indent=2, ensure_ascii=False))
        handle.write(',\n"rows": [\n')

    def add(self, row: dict[str, Any]) -> None:
        self._handle.write(self._separator)
        self._handle.write(orjson.dumps(row).decode())
        self._separator = ",\n"

    def close(self) -> None:
        self._handle.write("\n]}\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


class _atomic:
    """Write to ``<path>.tmp``, sync, then move over ``path``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._handle: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        self._handle = self._tmp.open("w", encoding="utf-8", newline="")
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
