"""Markdown for a GitHub Actions job summary (the file ``GITHUB_STEP_SUMMARY``).

Each function appends one section and never rewrites what earlier steps wrote.
Cells holding text from a manifest or the API are escaped, so a name or a
message holding ``|``, a line break or Markdown syntax neither breaks a table
nor renders as markup. Tables are capped: a summary is for reading, and the
report (or ``plan --json``) holds everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from provisioner.models import Outcome

EXIT_MEANINGS = {
    0: "success",
    1: "unexpected error",
    2: "changes pending",
    3: "some rows failed or were invalid",
    4: "bad input or usage, nothing was sent",
    5: "credentials refused",
    6: "interrupted, rerun to resume",
    7: "another run holds the lock",
}
# The rows a "failed rows" table lists when given every row of a report.
_PROBLEM_OUTCOMES = frozenset({Outcome.FAILED.value, Outcome.INVALID.value})
_MESSAGE_CHARS = 300
_ACCOUNTS_SHOWN = 10
# ASCII punctuation that could start markup inside a table cell. CommonMark
# lets a backslash make any ASCII punctuation literal; "$" starts GitHub math.
_MARKUP = frozenset("\\`*_[]<>|~&$!")


def step_summary_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The file GitHub Actions reads the job summary from, or None outside it."""
    env = os.environ if environ is None else environ
    value = env.get("GITHUB_STEP_SUMMARY", "")
    return Path(value) if value else None


def append_step_summary(
    summary: dict[str, Any],
    failed_rows: Iterable[dict[str, Any]],
    path: Path,
    *,
    command: str = "apply",
    max_rows: int = 50,
) -> None:
    """Append an apply run's result, counts and failed rows to ``path``.

    ``summary`` is the ``summary`` of report.json. ``failed_rows`` are report
    rows; any whose ``outcome`` is neither failed nor invalid is skipped, so
    all of a report's rows may be passed. Rows are read once, lazily.
    """
    exit_code = int(summary["exit_code"])
    lines = [f"## provisioner {command}: {describe_exit(exit_code)}", ""]
    lines.append(
        f"Manifest {_cell(summary.get('manifest', ''))}, "
        f"{summary.get('rows', 0)} rows, finished {_cell(summary['finished_at'])}."
    )
    lines.append("")

    outcomes: Mapping[str, int] = summary["outcomes"]
    lines += ["| outcome | rows |", "|---|---:|"]
    lines += [f"| {o.value} | {outcomes.get(o.value, 0)} |" for o in Outcome]
    lines.append("")

    lines += [
        "| requests sent | retries | 429 responses | duration |",
        "|---:|---:|---:|---:|",
        f"| {summary['requests_sent']} | {summary['retries']} "
        f"| {summary['rate_limited']} | {summary['duration_s']} s |",
        "",
    ]
    lines += _accounts_lines(summary.get("accounts", {}))

    problems = (
        r for r in failed_rows if r.get("outcome", "failed") in _PROBLEM_OUTCOMES
    )
    lines += _capped_table(
        "Rows that failed or were invalid",
        ["row", "namespace", "error code", "error message"],
        (
            [
                r.get("row"),
                r.get("namespace"),
                r.get("error_code"),
                r.get("error_message"),
            ]
            for r in problems
        ),
        max_rows,
        rest="see report.json",
    )

    _append(path, lines)


def plan_step_summary(
    plan_json: dict[str, Any], path: Path, *, max_rows: int = 50
) -> None:
    """Append a plan's counts per action and its changes (capped) to ``path``.

    ``plan_json`` is what ``plan --json`` prints.
    """
    counts: Mapping[str, int] = plan_json["counts"]
    pending = bool(plan_json.get("changes_pending"))
    title = describe_exit(2) if pending else "no changes"
    lines = [f"## provisioner plan: {title}", ""]

    lines += ["| action | rows |", "|---|---:|"]
    lines += [f"| {_cell(action)} | {count} |" for action, count in counts.items()]
    lines.append("")

    refused: Mapping[str, str] = plan_json.get("refused_accounts", {})
    for account, reason in sorted(refused.items()):
        lines.append(f"- account {_cell(account)} refused: {_cell(reason)}")
    if refused:
        lines.append("")

    changes = (r for r in plan_json.get("rows", []) if r.get("action") != "adopt")
    lines += _capped_table(
        "Changes",
        ["row", "action", "namespace", "account", "detail"],
        (
            [
                r.get("row"),
                r.get("action"),
                r.get("namespace"),
                r.get("account_id"),
                _detail(r),
            ]
            for r in changes
        ),
        max_rows,
        rest="see plan --json",
    )

    _append(path, lines)


def describe_exit(exit_code: int) -> str:
    """The exit code in words, with its number."""
    meaning = EXIT_MEANINGS.get(exit_code, "unknown exit code")
    return f"{meaning} (exit {exit_code})"


def _accounts_lines(accounts: Mapping[str, str]) -> list[str]:
    if not accounts:
        return []
    refused = sorted(a for a, status in accounts.items() if status == "refused")
    line = f"Accounts: {len(accounts) - len(refused)} ok, {len(refused)} refused"
    if refused:
        shown = ", ".join(_cell(a) for a in refused[:_ACCOUNTS_SHOWN])
        more = len(refused) - _ACCOUNTS_SHOWN
        line += f": {shown}" + (f" and {more} more" if more > 0 else "")
    return [line + ".", ""]


def _capped_table(
    title: str,
    header: list[str],
    cells: Iterator[list[Any]],
    max_rows: int,
    *,
    rest: str,
) -> list[str]:
    """A table of at most ``max_rows`` rows, counting the ones left out."""
    shown: list[str] = []
    total = 0
    for row in cells:
        total += 1
        if total <= max_rows:
            shown.append("| " + " | ".join(_cell(value) for value in row) + " |")
    if total == 0:
        return []

    lines = [f"### {title} ({total})", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += shown
    lines.append("")
    if total > len(shown):
        lines += [f"and {total - len(shown)} more; {rest}.", ""]
    return lines


def _detail(row: Mapping[str, Any]) -> str:
    if row.get("reason"):
        return str(row["reason"])
    changes: Mapping[str, Mapping[str, Any]] = row.get("changes") or {}
    parts = [
        f"{key}: {c.get('from')!r} to {c.get('to')!r}" for key, c in changes.items()
    ]
    if row.get("previous_name"):
        parts.insert(0, f"from {row['previous_name']}")
    return ", ".join(parts)


def _cell(value: object) -> str:
    """``value`` as one line of literal text that cannot end a table cell."""
    if value is None:
        return ""
    text = str(value)
    if len(text) > _MESSAGE_CHARS:
        text = text[:_MESSAGE_CHARS] + "…"
    return "<br>".join(
        "".join("\\" + ch if ch in _MARKUP else ch for ch in line)
        for line in text.splitlines()
    )


def _append(path: Path, lines: list[str]) -> None:
    # The leading blank line keeps this section apart from whatever an earlier
    # step wrote, even if that did not end with a newline.
    with path.open("a", encoding="utf-8") as out:
        out.write("\n" + "\n".join(lines).rstrip("\n") + "\n")
