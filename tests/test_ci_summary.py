"""GitHub Actions job summaries for apply and plan."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import read_report, run_cli, sandbox_env, write_csv_manifest
from sandbox_fixtures import MakeSandbox

from provisioner.ci_summary import (
    append_step_summary,
    describe_exit,
    plan_step_summary,
    step_summary_path,
)

# A pipe that separates cells: one not preceded by an odd run of backslashes.
CELL_PIPE = re.compile(r"(?<!\\)(?:\\\\)*\|")


def make_summary(exit_code: int = 3) -> dict[str, Any]:
    """A summary shaped like the one the runner writes into report.json."""
    return {
        "run_id": "r-1",
        "manifest": "config/onboarding.csv",
        "started_at": "2026-03-01T05:59:47.500Z",
        "finished_at": "2026-03-01T06:00:00.000Z",
        "duration_s": 12.5,
        "rows": 4,
        "outcomes": {
            "created": 2,
            "existing": 0,
            "updated": 0,
            "renamed": 0,
            "deleted": 0,
            "failed": 1,
            "invalid": 1,
            "not_attempted": 0,
        },
        "requests_sent": 9,
        "retries": 2,
        "rate_limited": 1,
        "accounts": {"a" * 32: "ok", "b" * 32: "refused"},
        "exit_code": exit_code,
    }


def failed_row(line: int, namespace: str = "", message: str = "boom") -> dict[str, Any]:
    """A report row that failed."""
    return {
        "row": line,
        "namespace": namespace or f"tenant-{line}",
        "outcome": "failed",
        "error_code": 10013,
        "error_message": message,
    }


def table_rows(text: str, header_start: str) -> list[str]:
    """The body lines of the table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append(line)
    return body


def test_appends_after_what_earlier_steps_wrote(tmp_path: Path) -> None:
    """Existing content stays and each call adds its own section after it."""
    path = tmp_path / "summary.md"
    path.write_text("# Earlier step")

    append_step_summary(make_summary(0), [], path)
    append_step_summary(make_summary(3), [failed_row(2)], path)

    text = path.read_text()
    assert text.startswith("# Earlier step\n")
    assert text.count("## provisioner apply:") == 2
    assert text.index("success (exit 0)") < text.index("(exit 3)")


def test_summary_lists_counts_and_request_figures(tmp_path: Path) -> None:
    """Every outcome has a count row, and requests, retries, 429s and duration show."""
    path = tmp_path / "summary.md"

    append_step_summary(make_summary(), [], path)

    text = path.read_text()
    outcomes = table_rows(text, "| outcome |")
    assert outcomes[0] == "| created | 2 |"
    assert len(outcomes) == 8
    assert "| 9 | 2 | 1 | 12.5 s |" in text
    assert "Accounts: 1 ok, 1 refused: " + "b" * 32 + "." in text


@pytest.mark.parametrize(
    ("exit_code", "words"),
    [
        (0, "success (exit 0)"),
        (3, "some rows failed or were invalid (exit 3)"),
        (5, "credentials refused (exit 5)"),
        (6, "interrupted, rerun to resume (exit 6)"),
        (42, "unknown exit code (exit 42)"),
    ],
)
def test_heading_says_what_the_exit_code_means(
    tmp_path: Path, exit_code: int, words: str
) -> None:
    """The section's heading names the result in words and the exit code."""
    path = tmp_path / "summary.md"

    append_step_summary(make_summary(exit_code), [], path, command="apply")

    assert path.read_text().splitlines()[1] == f"## provisioner apply: {words}"


def test_pipes_and_newlines_stay_inside_their_cells(tmp_path: Path) -> None:
    """A pipe or line break in a name or message neither adds cells nor lines."""
    path = tmp_path / "summary.md"
    rows = [failed_row(7, "a|b", "first line\nsecond | line\r\nthird")]

    append_step_summary(make_summary(), rows, path)

    [line] = table_rows(path.read_text(), "| row |")
    assert len(CELL_PIPE.findall(line)) == 5
    assert "a\\|b" in line
    assert "first line<br>second \\| line<br>third" in line


def test_markup_in_cells_is_shown_literally(tmp_path: Path) -> None:
    """HTML, emphasis and a trailing backslash in a cell are escaped."""
    path = tmp_path / "summary.md"
    rows = [failed_row(3, "<b>x</b>", "*bold* `code` $x$ ends in \\")]

    append_step_summary(make_summary(), rows, path)

    [line] = table_rows(path.read_text(), "| row |")
    assert "\\<b\\>x\\</b\\>" in line
    assert "\\*bold\\* \\`code\\` \\$x\\$ ends in \\\\ |" in line
    assert len(CELL_PIPE.findall(line)) == 5


def test_failed_rows_are_capped_and_the_rest_counted(tmp_path: Path) -> None:
    """Only ``max_rows`` rows are listed; a line counts the ones left out."""
    path = tmp_path / "summary.md"
    rows = (failed_row(line) for line in range(2, 122))

    append_step_summary(make_summary(), rows, path, max_rows=50)

    text = path.read_text()
    listed = table_rows(text, "| row |")
    assert len(listed) == 50
    assert listed[-1].startswith("| 51 |")
    assert "### Rows that failed or were invalid (120)" in text
    assert "and 70 more; see report.json." in text


def test_only_failed_and_invalid_rows_are_listed(tmp_path: Path) -> None:
    """Given a whole report's rows, the table keeps the failed and invalid ones."""
    path = tmp_path / "summary.md"
    rows = [
        {"row": 2, "namespace": "ok", "outcome": "created"},
        {**failed_row(3), "outcome": "invalid"},
        failed_row(4),
        {"row": 5, "namespace": "later", "outcome": "not_attempted"},
    ]

    append_step_summary(make_summary(), rows, path)

    listed = table_rows(path.read_text(), "| row |")
    assert [line.split(" | ")[0] for line in listed] == ["| 3", "| 4"]


def test_no_failed_rows_means_no_failure_table(tmp_path: Path) -> None:
    """A clean run's section has no failed-rows table."""
    path = tmp_path / "summary.md"

    append_step_summary(make_summary(0), [], path)

    assert "failed or were invalid" not in path.read_text()


def test_long_messages_are_shortened(tmp_path: Path) -> None:
    """A very long error message is cut to keep the summary readable."""
    path = tmp_path / "summary.md"

    append_step_summary(make_summary(), [failed_row(2, message="x" * 5000)], path)

    [line] = table_rows(path.read_text(), "| row |")
    assert "x" * 300 + "…" in line
    assert "x" * 301 not in line


def test_plan_summary_counts_actions_and_lists_changes(tmp_path: Path) -> None:
    """A plan's section counts each action and lists changes, not adoptions."""
    path = tmp_path / "summary.md"
    plan = {
        "counts": {"create": 1, "update": 1, "adopt": 1, "unmanaged": 2},
        "changes_pending": True,
        "refused_accounts": {"c" * 32: "Authentication error"},
        "rows": [
            {"row": 2, "namespace": "new", "action": "create", "account_id": "a"},
            {
                "row": 3,
                "namespace": "flip",
                "action": "update",
                "account_id": "a",
                "changes": {"trusted_workers": {"from": False, "to": True}},
            },
            {"row": 4, "namespace": "same", "action": "adopt", "account_id": "a"},
        ],
        "unmanaged": [],
    }

    plan_step_summary(plan, path)

    text = path.read_text()
    assert "## provisioner plan: changes pending (exit 2)" in text
    assert "| create | 1 |" in text
    assert "| unmanaged | 2 |" in text
    assert f"- account {'c' * 32} refused: Authentication error" in text
    changes = table_rows(text, "| row | action |")
    assert changes == [
        "| 2 | create | new | a |  |",
        "| 3 | update | flip | a | trusted\\_workers: False to True |",
    ]


def test_plan_details_name_renames_and_conflicts(tmp_path: Path) -> None:
    """A rename shows its old name and a conflict its reason."""
    path = tmp_path / "summary.md"
    rows = [
        {"row": 2, "namespace": "b", "action": "rename", "previous_name": "a"},
        {"row": 3, "namespace": "c", "action": "conflict", "reason": "taken"},
    ]
    plan = {"counts": {"rename": 1, "conflict": 1}, "changes_pending": True}

    plan_step_summary({**plan, "rows": rows}, path)

    assert table_rows(path.read_text(), "| row | action |") == [
        "| 2 | rename | b |  | from a |",
        "| 3 | conflict | c |  | taken |",
    ]


def test_many_refused_accounts_are_capped(tmp_path: Path) -> None:
    """At most ten refused accounts are named; the rest are counted."""
    path = tmp_path / "summary.md"
    summary = make_summary(5)
    summary["accounts"] = {f"{n:032x}": "refused" for n in range(13)}

    append_step_summary(summary, [], path)

    text = path.read_text()
    assert "Accounts: 0 ok, 13 refused: " in text
    assert f"{9:032x} and 3 more." in text
    assert f"{10:032x}" not in text


def test_no_accounts_means_no_accounts_line(tmp_path: Path) -> None:
    """A run that listed no account (an empty manifest) has no accounts line."""
    path = tmp_path / "summary.md"
    summary = {**make_summary(0), "accounts": {}}

    append_step_summary(summary, [], path)

    assert "Accounts:" not in path.read_text()


def test_plan_summary_without_changes_says_so(tmp_path: Path) -> None:
    """A plan with nothing to do says so and has no changes table."""
    path = tmp_path / "summary.md"
    plan = {"counts": {"create": 0, "adopt": 3}, "changes_pending": False, "rows": []}

    plan_step_summary(plan, path)

    text = path.read_text()
    assert "## provisioner plan: no changes" in text
    assert "### Changes" not in text


def test_plan_changes_are_capped(tmp_path: Path) -> None:
    """A long plan lists ``max_rows`` changes and counts the rest."""
    path = tmp_path / "summary.md"
    rows = [
        {"row": n, "namespace": f"t{n}", "action": "create", "account_id": "a"}
        for n in range(2, 12)
    ]
    plan = {"counts": {"create": 10}, "changes_pending": True, "rows": rows}

    plan_step_summary(plan, path, max_rows=3)

    text = path.read_text()
    assert len(table_rows(text, "| row | action |")) == 3
    assert "and 7 more; see plan --json." in text


def test_step_summary_path_comes_from_the_environment() -> None:
    """GITHUB_STEP_SUMMARY names the file; unset or empty means none."""
    assert step_summary_path({"GITHUB_STEP_SUMMARY": "/s/step.md"}) == Path(
        "/s/step.md"
    )
    assert step_summary_path({"GITHUB_STEP_SUMMARY": ""}) is None
    assert step_summary_path({}) is None


def test_describe_exit_names_every_documented_code() -> None:
    """Each exit code the README documents has words of its own."""
    assert [describe_exit(code).startswith("unknown") for code in range(8)] == [
        False
    ] * 8


async def test_summaries_of_a_real_plan_and_apply(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """The real plan JSON and apply report render, the invalid row listed."""
    server = await make_sandbox(clock=time.monotonic)
    valid = write_csv_manifest(tmp_path / "valid.csv", ["alpha"])
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha", "Bad|Name"])
    reports = tmp_path / "reports"
    env = sandbox_env(server)
    planned = await run_cli("plan", "--json", str(valid), env=env)
    assert planned.code == 2, planned.stderr
    applied = await run_cli(
        "apply", "--skip-invalid", str(manifest), "--report-dir", str(reports), env=env
    )
    assert applied.code == 3, applied.stderr
    report = read_report(reports)
    path = tmp_path / "summary.md"

    plan_step_summary(json.loads(planned.stdout), path)
    append_step_summary(report["summary"], report["rows"], path)

    text = path.read_text()
    assert "## provisioner plan: changes pending (exit 2)" in text
    assert "| 2 | create | alpha |" in text
    assert "## provisioner apply: some rows failed or were invalid (exit 3)" in text
    [invalid] = table_rows(text, "| row | namespace |")
    assert invalid.startswith("| 3 | ")
    assert "'Bad\\|Name' contains '\\|'" in invalid
    assert len(CELL_PIPE.findall(invalid)) == 5
