"""Prometheus metrics: the textfile, the last-success time across runs, pushes."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import read_report, run_cli, sandbox_env, write_csv_manifest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from sandbox_fixtures import MakeSandbox
from structlog.testing import capture_logs

from provisioner.metrics import (
    LAST_SUCCESS,
    push,
    read_last_success_s,
    redact_url,
    render_metrics,
    write_textfile,
)

FIRST_END = "2026-03-01T06:00:00.000Z"
SECOND_END = "2026-03-02T06:00:00.000Z"
FIRST_END_S = datetime.fromisoformat(FIRST_END).timestamp()
SECOND_END_S = datetime.fromisoformat(SECOND_END).timestamp()


def make_summary(exit_code: int = 0, finished_at: str = FIRST_END) -> dict[str, Any]:
    """A summary shaped like the one the runner writes into report.json."""
    return {
        "run_id": "r-1",
        "manifest": "config/onboarding.csv",
        "manifest_sha256": "abc",
        "resumed": False,
        "started_at": "2026-03-01T05:59:47.500Z",
        "finished_at": finished_at,
        "duration_s": 12.5,
        "rows": 10,
        "outcomes": {
            "created": 6,
            "existing": 2,
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
        "accounts": {"a" * 32: "ok", "b" * 32: "refused", "c" * 32: "ok"},
        "exit_code": exit_code,
    }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value from an exposition text."""
    return samples(text)[(name, tuple(sorted(labels.items())))]


class Gateway:
    """A stand-in Pushgateway on loopback recording every request."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                gateway.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "body": self.rfile.read(length).decode(),
                    }
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_POST = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the socket."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    """A running stand-in Pushgateway that answers 200."""
    server = Gateway()
    yield server
    server.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_textfile_reads_back_with_every_value(tmp_path: Path) -> None:
    """The textfile parses with Prometheus' parser and holds the run's numbers."""
    path = tmp_path / "provisioner.prom"

    write_textfile(render_metrics(make_summary()), path)

    text = path.read_text()
    assert value(text, "provisioner_rows", outcome="created") == 6
    assert value(text, "provisioner_rows", outcome="failed") == 1
    assert value(text, "provisioner_rows", outcome="invalid") == 1
    assert value(text, "provisioner_rows", outcome="not_attempted") == 0
    assert value(text, "provisioner_accounts", status="ok") == 2
    assert value(text, "provisioner_accounts", status="refused") == 1
    assert value(text, "provisioner_requests_sent") == 9
    assert value(text, "provisioner_retries") == 2
    assert value(text, "provisioner_rate_limited_responses") == 1
    assert value(text, "provisioner_run_duration_seconds") == 12.5
    assert value(text, "provisioner_exit_code") == 0
    assert value(text, "provisioner_last_run_timestamp_seconds") == FIRST_END_S
    assert value(text, LAST_SUCCESS) == FIRST_END_S


def test_every_outcome_is_present_even_when_absent_from_the_summary(
    tmp_path: Path,
) -> None:
    """Each outcome has its series, 0 when the summary does not name it."""
    summary = make_summary()
    summary["outcomes"] = {"created": 3}
    path = tmp_path / "provisioner.prom"

    write_textfile(render_metrics(summary), path)

    rows = {
        labels[0][1]: count
        for (name, labels), count in samples(path.read_text()).items()
        if name == "provisioner_rows"
    }
    assert rows == {
        "created": 3,
        "existing": 0,
        "updated": 0,
        "renamed": 0,
        "deleted": 0,
        "failed": 0,
        "invalid": 0,
        "not_attempted": 0,
    }


def test_unmanaged_namespaces_appear_only_when_the_summary_counts_them(
    tmp_path: Path,
) -> None:
    """A summary with ``unmanaged`` gets a gauge of it; one without gets none."""
    with_count = {**make_summary(), "unmanaged": 4}

    with_text = tmp_path / "with.prom"
    without_text = tmp_path / "without.prom"
    write_textfile(render_metrics(with_count), with_text)
    write_textfile(render_metrics(make_summary()), without_text)

    assert value(with_text.read_text(), "provisioner_unmanaged_namespaces") == 4
    assert "unmanaged" not in without_text.read_text()


def test_failed_run_carries_last_success_forward(tmp_path: Path) -> None:
    """A failed run keeps the previous textfile's last-success time."""
    path = tmp_path / "provisioner.prom"
    write_textfile(render_metrics(make_summary(0, FIRST_END)), path)

    failed = render_metrics(make_summary(3, SECOND_END), previous_textfile=path)
    write_textfile(failed, path)

    text = path.read_text()
    assert value(text, LAST_SUCCESS) == FIRST_END_S
    assert value(text, "provisioner_last_run_timestamp_seconds") == SECOND_END_S
    assert value(text, "provisioner_exit_code") == 3


def test_successful_run_moves_last_success_forward(tmp_path: Path) -> None:
    """A successful run after a failed one records its own end as last success."""
    path = tmp_path / "provisioner.prom"
    write_textfile(render_metrics(make_summary(0, FIRST_END)), path)
    write_textfile(
        render_metrics(make_summary(5, FIRST_END), previous_textfile=path), path
    )

    write_textfile(
        render_metrics(make_summary(0, SECOND_END), previous_textfile=path), path
    )

    assert value(path.read_text(), LAST_SUCCESS) == SECOND_END_S


@pytest.mark.parametrize("previous", [None, "provisioner.prom"])
def test_failed_first_run_leaves_last_success_out(
    tmp_path: Path, previous: str | None
) -> None:
    """With no earlier textfile, a failed run states no last-success time."""
    path = tmp_path / "provisioner.prom"
    previous_textfile = None if previous is None else tmp_path / previous

    with capture_logs() as events:
        registry = render_metrics(make_summary(3), previous_textfile=previous_textfile)
    write_textfile(registry, path)

    assert LAST_SUCCESS not in path.read_text()
    assert events == []


def test_malformed_previous_textfile_is_logged_and_ignored(tmp_path: Path) -> None:
    """An unparsable earlier textfile yields no last-success time and a warning."""
    path = tmp_path / "provisioner.prom"
    path.write_text("provisioner_last_success_timestamp_seconds not-a-number\n")

    with capture_logs() as events:
        last_success_s = read_last_success_s(path)

    assert last_success_s is None
    assert [e["event"] for e in events] == ["metrics_textfile_unreadable"]


@pytest.mark.parametrize("text", ["0", "NaN", "-5"])
def test_meaningless_last_success_is_not_carried_forward(
    tmp_path: Path, text: str
) -> None:
    """A zero, negative or NaN last-success time counts as none."""
    path = tmp_path / "provisioner.prom"
    path.write_text(f"# TYPE {LAST_SUCCESS} gauge\n{LAST_SUCCESS} {text}\n")

    assert read_last_success_s(path) is None


def test_unreadable_previous_textfile_is_logged_and_ignored(tmp_path: Path) -> None:
    """A textfile path that cannot be read (here a directory) yields a warning."""
    with capture_logs() as events:
        last_success_s = read_last_success_s(tmp_path)

    assert last_success_s is None
    assert [e["event"] for e in events] == ["metrics_textfile_unreadable"]


def test_a_time_without_zone_is_read_as_utc(tmp_path: Path) -> None:
    """A ``finished_at`` lacking a zone is taken as UTC, like the runner's."""
    path = tmp_path / "provisioner.prom"

    write_textfile(render_metrics(make_summary(0, "2026-03-01T06:00:00")), path)

    assert value(path.read_text(), LAST_SUCCESS) == FIRST_END_S


@pytest.mark.parametrize("finished_at", [None, "yesterday"])
def test_a_missing_end_time_falls_back_to_now(
    tmp_path: Path, finished_at: str | None
) -> None:
    """Without a readable ``finished_at``, the run's time is the current time."""
    summary = make_summary()
    summary["finished_at"] = finished_at
    path = tmp_path / "provisioner.prom"
    before_s = time.time()

    write_textfile(render_metrics(summary), path)

    stamp_s = value(path.read_text(), "provisioner_last_run_timestamp_seconds")
    assert before_s <= stamp_s <= time.time()


def test_write_textfile_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Writing replaces the file by rename and leaves nothing else beside it."""
    path = tmp_path / "provisioner.prom"
    path.write_text("old\n")

    write_textfile(render_metrics(make_summary()), path)

    assert [p.name for p in tmp_path.iterdir()] == ["provisioner.prom"]
    assert "provisioner_exit_code" in path.read_text()


def test_failed_write_keeps_the_previous_textfile(tmp_path: Path) -> None:
    """A write that fails midway leaves the earlier textfile whole."""

    class Broken(Collector):
        def collect(self) -> Iterator[Any]:
            raise RuntimeError("collector broke")

    path = tmp_path / "provisioner.prom"
    write_textfile(render_metrics(make_summary()), path)
    before = path.read_text()
    registry = CollectorRegistry()
    registry.register(Broken())

    with pytest.raises(RuntimeError):
        write_textfile(registry, path)

    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["provisioner.prom"]


def test_push_reaches_the_gateway(gateway: Gateway) -> None:
    """A push adds the metrics to the job's group at the gateway (POST)."""
    registry = render_metrics(make_summary())

    with capture_logs() as events:
        ok = push(registry, gateway.url, grouping_key={"env": "ci"})

    assert ok is True
    [request] = gateway.requests
    assert request["method"] == "POST"
    assert request["path"] == "/metrics/job/provisioner/env/ci"
    assert request["authorization"] is None
    assert value(request["body"], "provisioner_requests_sent") == 9
    assert value(request["body"], LAST_SUCCESS) == FIRST_END_S
    assert [e["event"] for e in events] == ["metrics_pushed"]


def test_push_sends_url_credentials_as_basic_auth(gateway: Gateway) -> None:
    """user:password in the URL becomes basic auth and never reaches a log."""
    url = f"http://ops:s3cr%40t@127.0.0.1:{gateway.port}"

    with capture_logs() as events:
        ok = push(render_metrics(make_summary()), url, job="nightly")

    assert ok is True
    [request] = gateway.requests
    assert request["path"] == "/metrics/job/nightly"
    expected = base64.b64encode(b"ops:s3cr@t").decode()
    assert request["authorization"] == f"Basic {expected}"
    assert "s3cr" not in repr(events)
    assert events[0]["gateway"] == f"http://127.0.0.1:{gateway.port}"


def test_push_to_a_closed_port_returns_false_and_logs(tmp_path: Path) -> None:
    """An unreachable gateway is a logged warning and False, never an exception."""
    url = f"https://ops:hunter2@127.0.0.1:{closed_port()}/"

    with capture_logs() as events:
        ok = push(render_metrics(make_summary()), url, timeout_s=2)

    assert ok is False
    [event] = events
    assert event["event"] == "metrics_push_failed"
    assert event["log_level"] == "warning"
    assert event["error"]
    assert "hunter2" not in repr(event)
    assert "ops" not in event["gateway"]


def test_push_refused_by_the_gateway_returns_false() -> None:
    """A gateway answering 500 makes the push fail softly."""
    failing = Gateway(status=500)
    try:
        with capture_logs() as events:
            ok = push(render_metrics(make_summary()), failing.url)
    finally:
        failing.close()

    assert ok is False
    assert [e["event"] for e in events] == ["metrics_push_failed"]
    assert "500" in events[0]["error"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@gw.example:9091/base?token=x#f", "https://gw.example:9091/base"),
        ("gw.example:9091", "http://gw.example:9091"),
        ("u:p@gw.example:9091", "http://gw.example:9091"),
        ("http://[::1]:9091", "http://[::1]:9091"),
    ],
)
def test_redact_url_drops_credentials_and_query(url: str, shown: str) -> None:
    """The logged form of a gateway URL keeps scheme, host and path only."""
    assert redact_url(url) == shown


async def test_metrics_from_a_real_apply_report(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """The summary of a real apply run renders, with its end as last success."""
    server = await make_sandbox(clock=time.monotonic)
    manifest = write_csv_manifest(tmp_path / "m.csv", ["alpha", "beta"])
    reports = tmp_path / "reports"
    result = await run_cli(
        "apply", str(manifest), "--report-dir", str(reports), env=sandbox_env(server)
    )
    assert result.code == 0, result.stderr
    summary = read_report(reports)["summary"]
    path = tmp_path / "provisioner.prom"

    write_textfile(render_metrics(summary), path)

    text = path.read_text()
    finished_s = datetime.fromisoformat(summary["finished_at"]).timestamp()
    assert value(text, "provisioner_rows", outcome="created") == 2
    assert value(text, "provisioner_requests_sent") == summary["requests_sent"]
    assert value(text, LAST_SUCCESS) == finished_s
