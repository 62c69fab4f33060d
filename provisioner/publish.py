"""After a run: metrics (textfile, Pushgateway) and the CI step summary.

Each is best effort. The report is the record of the run; a metrics or summary
failure is logged and never changes the run's exit code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from provisioner.ci_summary import append_step_summary, plan_step_summary
from provisioner.ci_summary import step_summary_path as _step_summary_path
from provisioner.journal import read_state
from provisioner.metrics import push, render_metrics, write_textfile
from provisioner.report import iter_rows
from provisioner.settings import Settings

log = structlog.get_logger("provisioner.publish")


async def publish_run(
    settings: Settings, summary: dict[str, Any], journal_path: Path
) -> None:
    """Write metrics and the CI summary of an apply run, as configured."""
    try:
        await _metrics(settings, summary)
    except (OSError, KeyError, ValueError) as exc:
        log.warning("metrics_failed", error_type=type(exc).__name__, error=str(exc))

    path = _step_summary_path()
    if path is None:
        return
    try:
        state = read_state(journal_path)
        rows = iter_rows(journal_path, state) if state is not None else iter(())
        append_step_summary(summary, rows, path, command="apply")
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ci_summary_failed", error_type=type(exc).__name__, error=str(exc))


def publish_plan(plan_json: dict[str, Any]) -> None:
    """Append the plan to the CI step summary when one is being written."""
    path = _step_summary_path()
    if path is None:
        return
    try:
        plan_step_summary(plan_json, path)
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ci_summary_failed", error_type=type(exc).__name__, error=str(exc))


async def _metrics(settings: Settings, summary: dict[str, Any]) -> None:
    textfile = settings.metrics_textfile
    gateway = settings.pushgateway_url
    if textfile is None and gateway is None:
        return

    registry = render_metrics(summary, previous_textfile=textfile)
    if textfile is not None:
        write_textfile(registry, textfile)
        log.info("metrics_written", path=str(textfile))
    if gateway is not None:
        # push() uses a blocking HTTP client: keep it off the event loop.
        await asyncio.to_thread(
            push, registry, gateway.get_secret_value(), job=settings.pushgateway_job
        )
