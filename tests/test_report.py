"""report.csv and report.json as written from the journal, cell by cell."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.journal import Journal, read_state
from provisioner.report import REPORT_FIELDS, _csv_cells, _CsvRows, write_report

# Text with everything that makes the csv module quote a cell, or that a
# spreadsheet would run as a formula.
_TEXT = st.text(
    alphabet=st.sampled_from(list("ab ,\"\r\n=+-@\t'é;")) | st.characters(),
    max_size=12,
)
_VALUE = st.none() | _TEXT | st.integers(-5, 10**6) | st.booleans()


def _rows() -> st.SearchStrategy[list[dict[str, Any]]]:
    row = st.fixed_dictionaries(
        {name: _VALUE for name in REPORT_FIELDS if name != "changes"},
        optional={
            "changes": st.none()
            | st.just({"trusted_workers": {"from": False, "to": True}}),
            "plan": _TEXT,
        },
    )
    return st.lists(row, max_size=8)


def _by_csv_module(rows: list[dict[str, Any]], fields: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(fields)
    for row in rows:
        writer.writerow(_csv_cells(row, fields))
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(_rows())
def test_plain_rows_are_written_as_the_csv_module_writes_them(
    rows: list[dict[str, Any]],
) -> None:
    """Rows joined by commas without the csv module match its output exactly."""
    out = io.StringIO()
    fields = [*REPORT_FIELDS, "plan"]

    writer = _CsvRows(out, ["plan"])
    writer.add(rows)

    assert out.getvalue() == _by_csv_module(rows, fields)
    assert list(csv.reader(io.StringIO(out.getvalue())))[1:] == [
        _csv_cells(row, fields) for row in rows
    ]


def test_cells_are_inert_and_numbers_and_gaps_plain() -> None:
    """Formula-like text gets a leading quote; numbers and empty cells do not."""
    row = {
        "row": 7,
        "namespace": "=HYPERLINK(1)",
        "attempts": -1,
        "error_message": "+1",
        "changes": {"trusted_workers": {"from": False, "to": True}},
    }

    cells = _csv_cells(row, ["row", "namespace", "attempts", "error_message", "x"])

    assert cells == ["7", "'=HYPERLINK(1)", "'-1", "'+1", ""]
    changes = _csv_cells(row, ["changes"])[0]
    assert json.loads(changes) == row["changes"]


async def test_report_rows_come_in_line_order_whatever_the_journal_order(
    tmp_path: Path,
) -> None:
    """Rows finished out of order are reported by line, then the others by key."""
    path = tmp_path / "journal.jsonl"
    journal = Journal.create(path, manifest="m.csv", manifest_sha256="abc")
    for line in (12, 3, 100, 4, 2):
        journal.outcome_later(
            {"key": f"line:{line}", "line": line, "outcome": "created"}
        )
    journal.outcome_later({"key": "unmanaged:a:zz", "line": None, "outcome": "x"})
    journal.outcome_later({"key": "unmanaged:a:aa", "line": None, "outcome": "y"})
    await journal.close()
    state = read_state(path)
    assert state is not None

    paths = write_report(tmp_path, path, state, {}, [])

    rows = json.loads(paths.json_path.read_text())["rows"]
    assert [r["row"] for r in rows] == [2, 3, 4, 12, 100, None, None]
    assert [r["outcome"] for r in rows[-2:]] == ["y", "x"]
    with paths.csv_path.open(newline="") as handle:
        assert [r["row"] for r in csv.DictReader(handle)] == [
            "2",
            "3",
            "4",
            "12",
            "100",
            "",
            "",
        ]
