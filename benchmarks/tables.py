"""The results as Markdown tables, each followed by its targets (PASS/MISS)."""

from __future__ import annotations

from children import ChildRun
from scenarios import (
    LABELS,
    QUOTA_REQUESTS,
    WINDOW_S,
    BudgetReport,
    ClientResult,
    MemoryReport,
    OverheadReport,
)

# Targets of issue 4, item 4.
WALL_OVER_IDEAL_MAX = 1.05
CPU_OVER_BARE_MAX = 1.5
SDK_CPU_OVER_OURS_MIN = 3.0
MEMORY_LARGEST_MAX_MB = 200.0
# "Well below linear": ten times the rows, at most this many times the memory.
MEMORY_GROWTH_MAX = 2.0

_KB_PER_MB = 1000.0


def verdict(ok: bool) -> str:
    """PASS or MISS, the latter in bold."""
    return "PASS" if ok else "**MISS**"


def ended(run: ChildRun) -> str:
    """The exit code, or that the run was stopped at its time limit."""
    return "timeout" if run.timed_out else str(run.exit_code)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(names: list[str]) -> list[str]:
    return [_row(names), _row(["---"] + ["--:"] * (len(names) - 1))]


def _find(results: list[ClientResult], client: str) -> ClientResult:
    return next(result for result in results if result.client == client)


def budget_table(report: BudgetReport) -> str:
    """Table a, or b when another client shares the budget."""
    shared = report.other_share > 0
    title = (
        f"### b. Shared budget: {report.rows:,} creates while another client "
        f"spends {report.other_share:.0%} of the budget"
        if shared
        else f"### a. Budget: {report.rows:,} creates at {QUOTA_REQUESTS} "
        f"requests per {WINDOW_S:g} s"
    )
    lines = [
        title,
        "",
        f"Ideal = (N + 1) / rate = {report.rows + 1:,} / "
        f"{report.rate_per_s:g} per s = {report.ideal_s:.1f} s.",
        "",
    ]
    columns = ["client", "wall s", "wall / ideal", "429s", "lockouts"]
    columns += ["failed rows", "exit"]
    if shared:
        columns += ["other client's lists", "other client's 429s"]
    lines += _header(columns)

    for result in report.results:
        cells = [
            LABELS[result.client],
            f"{result.run.wall_s:.1f}",
            f"{result.run.wall_s / report.ideal_s:.3f}",
            f"{result.rate_limited:,}",
            f"{result.lockouts:,}",
            f"{result.failed_rows:,}",
            ended(result.run),
        ]
        if shared:
            other = result.other
            cells += [f"{other.get('sent', 0):,}", f"{other.get('429', 0):,}"]
        lines.append(_row(cells))

    ours = _find(report.results, "provisioner")
    ratio = ours.run.wall_s / report.ideal_s
    lines += ["", "Targets for `provisioner apply`:", ""]
    if not shared:
        lines.append(
            f"- wall / ideal ≤ {WALL_OVER_IDEAL_MAX}: {ratio:.3f} → "
            f"{verdict(ratio <= WALL_OVER_IDEAL_MAX and not ours.run.timed_out)}"
        )
        lines.append(
            f"- zero 429s: {ours.rate_limited} → {verdict(ours.rate_limited == 0)}"
        )
    else:
        lines.append(
            f"- zero lockouts: {ours.lockouts} → {verdict(ours.lockouts == 0)}"
        )
    lines.append(
        f"- zero failed rows: {ours.failed_rows} → {verdict(ours.failed_rows == 0)}"
    )
    return "\n".join(lines)


def overhead_table(report: OverheadReport) -> str:
    """Table c and its two ratios."""
    lines = [
        f"### c. Overhead: {report.rows:,} creates, unthrottled sandbox",
        "",
        "CPU is the client process's own (user + system), start-up included; "
        "the start-up column is a run of one create. "
        + (
            f"Each client ran {report.repeats} times, the clients taking turns, "
            "a different one first each turn; each row is that client's median "
            "run by CPU time."
            if report.repeats > 1
            else "One run of each client."
        ),
        "",
    ]
    lines += _header(
        [
            "client",
            "wall s",
            "creates / s",
            "CPU s",
            "CPU s / 1,000 creates",
            "start-up CPU s",
            "CPU s / 1,000 after start-up",
            "failed rows",
            "exit",
        ]
    )
    per_1000 = {}
    marginal = {}
    for result in report.results:
        run, startup = result.run, report.startup[result.client]
        per_1000[result.client] = run.cpu_s / result.rows * 1000
        marginal[result.client] = (
            (run.cpu_s - startup.cpu_s) / max(1, result.rows - 1) * 1000
        )
        lines.append(
            _row(
                [
                    LABELS[result.client],
                    f"{run.wall_s:.2f}",
                    f"{result.rows / run.wall_s:,.0f}",
                    f"{run.cpu_s:.2f}",
                    f"{per_1000[result.client]:.3f}",
                    f"{startup.cpu_s:.2f}",
                    f"{marginal[result.client]:.3f}",
                    f"{result.failed_rows:,}",
                    ended(run),
                ]
            )
        )

    ours_over_bare = per_1000["provisioner"] / per_1000["bare"]
    sdk_over_ours = per_1000["sdk"] / per_1000["provisioner"]
    if report.repeats > 1:
        lines += [
            "",
            f"CPU s of every run of the {report.rows:,} creates, turn by turn:",
            "",
        ]
        lines += [
            f"- {LABELS[client]}: " + ", ".join(f"{cpu_s:.2f}" for cpu_s in runs)
            for client, runs in report.cpu_s.items()
        ]
    lines += [
        "",
        "Targets (CPU s per 1,000 creates, start-up included; after start-up in "
        "brackets, for information):",
        "",
        f"- provisioner / bare loop ≤ {CPU_OVER_BARE_MAX}: {ours_over_bare:.2f} "
        f"({marginal['provisioner'] / marginal['bare']:.2f}) → "
        f"{verdict(ours_over_bare <= CPU_OVER_BARE_MAX)}",
        f"- SDK / provisioner ≥ {SDK_CPU_OVER_OURS_MIN:g}: {sdk_over_ours:.2f} "
        f"({marginal['sdk'] / marginal['provisioner']:.2f}) → "
        f"{verdict(sdk_over_ours >= SDK_CPU_OVER_OURS_MIN)}",
    ]
    return "\n".join(lines)


def memory_table(report: MemoryReport) -> str:
    """Table d and its growth ratio."""
    lines = [
        "### d. Memory: peak resident memory of `provisioner apply`",
        "",
        "Generated CSV manifests, unthrottled sandbox in another process.",
        "",
    ]
    lines += _header(["rows", "wall s", "peak RSS MB", "failed rows", "exit"])
    for result in report.results:
        lines.append(
            _row(
                [
                    f"{result.rows:,}",
                    f"{result.run.wall_s:.1f}",
                    f"{result.run.max_rss_mb:.1f}",
                    f"{result.failed_rows:,}",
                    ended(result.run),
                ]
            )
        )

    largest, middle = report.results[-1], report.results[-2]
    growth = largest.run.max_rss_mb / middle.run.max_rss_mb
    per_row_kb = (
        (largest.run.max_rss_mb - middle.run.max_rss_mb)
        * _KB_PER_MB
        / (largest.rows - middle.rows)
    )
    linear = largest.rows / middle.rows
    lines += [
        "",
        "Targets:",
        "",
        f"- {largest.rows:,} rows under {MEMORY_LARGEST_MAX_MB:g} MB: "
        f"{largest.run.max_rss_mb:.1f} MB → "
        f"{verdict(largest.run.max_rss_mb < MEMORY_LARGEST_MAX_MB)}",
        f"- growth {largest.rows:,} / {middle.rows:,} rows ≤ "
        f"{MEMORY_GROWTH_MAX:g} (linear would be {linear:g}): {growth:.2f} → "
        f"{verdict(growth <= MEMORY_GROWTH_MAX)}; "
        f"{per_row_kb:.2f} KB more per row between the two",
    ]
    return "\n".join(lines)
