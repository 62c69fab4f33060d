"""Prometheus metrics of one apply run, for node_exporter or a Pushgateway.

Every metric is a gauge describing the last run: a batch job's totals are not
counters that grow across runs. Names are stable (alerts and dashboards use
them) and labels are few: ``outcome`` and ``status`` take a fixed handful of
values, and nothing is labelled per account, namespace or run id.

``provisioner_last_success_timestamp_seconds`` answers "when did this last
work?" across runs, so an alert such as

    time() - provisioner_last_success_timestamp_seconds > 26 * 3600
      or absent(provisioner_last_success_timestamp_seconds)

catches a job that keeps failing or never ran. A failed run carries the value
forward from the previous textfile; when there is none, the metric is left out
of the registry rather than set to a made-up value, and ``push`` adds to the
Pushgateway's group (POST) instead of replacing it (PUT), so the gateway keeps
the value an earlier successful run pushed.
"""

from __future__ import annotations

import http.client
import math
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    pushadd_to_gateway,
    write_to_textfile,
)
from prometheus_client.parser import text_string_to_metric_families

from provisioner.logs import SecretMasker
from provisioner.models import Outcome

log = structlog.get_logger("provisioner.metrics")

LAST_SUCCESS = "provisioner_last_success_timestamp_seconds"
ACCOUNT_STATUSES = ("ok", "refused")


def render_metrics(
    summary: dict[str, Any], *, previous_textfile: Path | None = None
) -> CollectorRegistry:
    """A fresh registry holding the metrics of the run ``summary`` describes.

    ``summary`` is the ``summary`` of report.json. ``previous_textfile`` is the
    textfile an earlier run wrote (usually the one about to be replaced); a
    failed run takes its last-success time from there.
    """
    registry = CollectorRegistry()
    finished_s = _epoch_s(summary.get("finished_at"))

    rows = Gauge(
        "provisioner_rows",
        "Manifest rows of the last run, by outcome.",
        ["outcome"],
        registry=registry,
    )
    outcomes = summary["outcomes"]
    for outcome in Outcome:
        rows.labels(outcome=outcome.value).set(outcomes.get(outcome.value, 0))

    accounts = Gauge(
        "provisioner_accounts",
        "Accounts the last run listed, by whether the API let it in.",
        ["status"],
        registry=registry,
    )
    statuses = list(summary["accounts"].values())
    for status in ACCOUNT_STATUSES:
        accounts.labels(status=status).set(statuses.count(status))

    _gauge(registry, "provisioner_requests_sent", "Requests the last run sent.").set(
        summary["requests_sent"]
    )
    _gauge(registry, "provisioner_retries", "Retries the last run scheduled.").set(
        summary["retries"]
    )
    _gauge(
        registry,
        "provisioner_rate_limited_responses",
        "HTTP 429 answers the last run received.",
    ).set(summary["rate_limited"])
    _gauge(
        registry,
        "provisioner_run_duration_seconds",
        "Wall-clock duration of the last run.",
    ).set(summary["duration_s"])
    _gauge(
        registry, "provisioner_exit_code", "Exit code of the last run (0: success)."
    ).set(summary["exit_code"])
    if "unmanaged" in summary:
        # Newer summaries count namespaces the accounts hold but the manifest
        # does not name; older ones lack the key, and a made-up 0 would lie.
        _gauge(
            registry,
            "provisioner_unmanaged_namespaces",
            "Namespaces in the accounts that the manifest does not name.",
        ).set(summary["unmanaged"])
    _gauge(
        registry,
        "provisioner_last_run_timestamp_seconds",
        "When the last run finished, in seconds since the epoch.",
    ).set(finished_s)

    if summary["exit_code"] == 0:
        last_success_s: float | None = finished_s
    elif previous_textfile is not None:
        last_success_s = read_last_success_s(previous_textfile)
    else:
        last_success_s = None
    if last_success_s is not None:
        _gauge(
            registry,
            LAST_SUCCESS,
            "When a run last finished with exit code 0, in seconds since the epoch.",
        ).set(last_success_s)

    return registry


def read_last_success_s(path: Path) -> float | None:
    """The last-success time a textfile holds, or None if it holds none.

    A missing file is an ordinary first run; an unreadable or malformed one is
    logged and treated as holding nothing, since metrics must not stop a run.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("metrics_textfile_unreadable", path=str(path), error=str(exc))
        return None

    try:
        for family in text_string_to_metric_families(text):
            if family.name == LAST_SUCCESS and family.samples:
                value = float(family.samples[0].value)
                return value if math.isfinite(value) and value > 0 else None
    except ValueError as exc:
        log.warning("metrics_textfile_unreadable", path=str(path), error=str(exc))
    return None


def write_textfile(registry: CollectorRegistry, path: Path) -> None:
    """Write ``registry`` for node_exporter's textfile collector, atomically.

    prometheus_client writes a temporary file beside ``path`` and renames it
    over ``path``, so the collector never reads half a file; the temporary
    name does not end in ``.prom``, so the collector skips it. node_exporter
    reads only files ending in ``.prom``. Raises OSError when the directory is
    missing or not writable.
    """
    write_to_textfile(str(path), registry)


def push(
    registry: CollectorRegistry,
    gateway_url: str,
    *,
    job: str = "provisioner",
    grouping_key: dict[str, str] | None = None,
    timeout_s: float = 10,
) -> bool:
    """Send ``registry`` to a Pushgateway; True on success, False if it failed.

    A failure is logged as ``metrics_push_failed`` and never raised: the run's
    outcome is already decided and recorded in the report. Credentials in the
    URL (``https://user:password@host``) are sent as basic auth and never
    logged. ``timeout_s`` bounds each connect and read, not the whole push.
    This blocks; from async code, call it through ``asyncio.to_thread``.
    """
    url, handler, secrets = _split_credentials(gateway_url)
    shown = redact_url(gateway_url)

    try:
        # POST adds to the group, so a last-success time this registry lacks
        # (a failed run with no textfile to read it from) stays on the gateway.
        pushadd_to_gateway(
            url,
            job=job,
            registry=registry,
            grouping_key=grouping_key,
            timeout=timeout_s,
            handler=handler,
        )
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.warning(
            "metrics_push_failed",
            gateway=shown,
            job=job,
            error_type=type(exc).__name__,
            error=SecretMasker(secrets).mask(str(exc)),
        )
        return False

    log.info("metrics_pushed", gateway=shown, job=job)
    return True


def redact_url(url: str) -> str:
    """``url`` without user, password, query or fragment, for logs."""
    parts = urllib.parse.urlsplit(_with_scheme(url))
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


Handler = Callable[..., Callable[[], None]]


def _split_credentials(url: str) -> tuple[str, Handler, list[str]]:
    """The URL without credentials, a handler sending them, and the secrets."""
    parts = urllib.parse.urlsplit(_with_scheme(url))
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return urllib.parse.urlunsplit(parts), default_handler, []

    # urllib would take "user:password@host" for a host name; send basic auth.
    user_raw, _, password_raw = userinfo.partition(":")
    username = urllib.parse.unquote(user_raw)
    password = urllib.parse.unquote(password_raw)
    bare = urllib.parse.urlunsplit(parts._replace(netloc=host))

    def handler(
        url: str,
        method: str,
        timeout: float | None,
        headers: list[tuple[str, str]],
        data: bytes,
    ) -> Callable[[], None]:
        handle: Callable[[], None] = basic_auth_handler(
            url, method, timeout, headers, data, username, password
        )
        return handle

    secrets = [s for s in (userinfo, password_raw, password) if s]
    return bare, handler, secrets


def _with_scheme(url: str) -> str:
    # The same default as prometheus_client: a bare host:port means http.
    scheme = urllib.parse.urlsplit(url).scheme
    return url if scheme in ("http", "https") else f"http://{url}"


def _gauge(registry: CollectorRegistry, name: str, documentation: str) -> Gauge:
    return Gauge(name, documentation, registry=registry)


def _epoch_s(timestamp: object) -> float:
    """An RFC 3339 time as epoch seconds; now when it is missing or unreadable.

    The summary's ``finished_at`` is written moments before metrics are made,
    so the current time is a close stand-in if a hand-built summary lacks it.
    """
    if isinstance(timestamp, str):
        try:
            moment = datetime.fromisoformat(timestamp)
        except ValueError:
            return time.time()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return time.time()
