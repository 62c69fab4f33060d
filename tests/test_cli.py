"""The command line itself: validate, usage errors, progress and log setup."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from provisioner.cli import run
from provisioner.logs import SecretMasker, configure_logging, use_json
from provisioner.progress import ProgressDisplay


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validate_lists_every_problem_and_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate reports all bad rows at once, with file, line and field."""
    manifest = write(tmp_path / "m.csv", "namespace\nok-name\nBad\nbad/name\n")

    code = run(["validate", str(manifest)])

    err = capsys.readouterr().err
    assert code == 4
    assert f"{manifest}:3: namespace:" in err
    assert f"{manifest}:4: namespace:" in err


def test_validate_json_and_warnings_only_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exact repeat is only a warning: exit 0, and the JSON says so."""
    manifest = write(tmp_path / "m.csv", "namespace\nalpha\nalpha\n")

    code = run(["validate", str(manifest), "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["ok"] is True
    assert report["warnings"] == 1
    assert report["problems"][0]["line"] == 3


def test_validate_whole_file_problem_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file without the namespace column is exit 4 with a JSON error."""
    manifest = write(tmp_path / "m.csv", "tenant\nx\n")

    code = run(["validate", str(manifest), "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 4
    assert report["ok"] is False
    assert report["problems"]


def test_missing_manifest_file_is_exit_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest path that does not exist is bad input, not a crash."""
    code = run(["validate", str(tmp_path / "absent.csv")])

    assert code == 4
    assert "absent.csv" in capsys.readouterr().err


def test_version_and_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--version and --help succeed and print something useful."""
    assert run(["--version"]) == 0
    assert "provisioner" in capsys.readouterr().out
    assert run(["apply", "--help"]) == 0
    assert "--prune" in capsys.readouterr().out


def test_bad_option_value_is_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed option value is a usage error, exit 4."""
    assert run(["plan", "m.csv", "--concurrency", "many"]) == 4


def test_progress_draws_only_on_a_terminal() -> None:
    """The bar is drawn on a terminal and not elsewhere or with --quiet."""
    terminal, pipe, quiet = FakeTerminal(), io.StringIO(), FakeTerminal()

    for stream, enabled in ((terminal, True), (pipe, True), (quiet, False)):
        with ProgressDisplay(total=3, enabled=enabled, stream=stream) as progress:
            for _ in range(3):
                progress.advance("created")

    assert "3/3" in terminal.getvalue()
    assert pipe.getvalue() == ""
    assert quiet.getvalue() == ""


def test_log_format_auto_follows_the_terminal() -> None:
    """auto means console on a terminal and JSON elsewhere."""
    assert use_json("auto", io.StringIO())
    assert not use_json("auto", FakeTerminal())
    assert use_json("json", FakeTerminal())
    assert not use_json("console", io.StringIO())


def test_secret_masker_hides_secrets_in_any_field() -> None:
    """Every secret value is replaced wherever it appears in an event."""
    masker = SecretMasker(["s3cr3t"])
    event = {"event": "x", "url": "https://a/?t=s3cr3t", "error": ValueError("s3cr3t")}

    masked = masker(None, "info", event)

    assert "s3cr3t" not in json.dumps({k: str(v) for k, v in masked.items()})


def test_configured_json_logs_carry_event_and_level() -> None:
    """configure_logging writes one JSON object per event, secrets masked."""
    stream = io.StringIO()
    configure_logging(log_format="json", level="info", secrets=["tok"], stream=stream)

    structlog.get_logger("t").info("run_started", note="tok here")
    structlog.get_logger("t").debug("hidden_below_level")

    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "run_started"
    assert event["level"] == "info"
    assert event["note"] == "*** here"


def test_json_lines_mask_secrets_nested_escaped_and_in_keys() -> None:
    """A secret is masked in nested values, in keys, and where JSON escapes it."""
    quoted = 'k"ey\\1'  # a quote and a backslash: JSON writes both escaped
    stream = io.StringIO()
    configure_logging(
        log_format="json", level="info", secrets=["tok123", quoted], stream=stream
    )

    structlog.get_logger("t").info(
        "x",
        nested={"deep": ["a tok123 b"]},
        tok123="key",
        error=ValueError(f"echoed {quoted}"),
    )

    (line,) = stream.getvalue().splitlines()
    assert "tok123" not in line
    assert 'k\\"ey' not in line
    event = json.loads(line)
    assert event["nested"] == {"deep": ["a *** b"]}
    assert event["***"] == "key"
    assert event["error"] == "echoed ***"


def test_json_lines_stay_json_when_a_secret_meets_an_escape() -> None:
    """A secret that starts like an escape's letter never breaks a line's JSON:
    text that only looks like it after a tab is kept, a real one is masked."""
    stream = io.StringIO()
    configure_logging(
        log_format="json", level="info", secrets=["tok-ABCdef123456"], stream=stream
    )

    structlog.get_logger("t").info(
        "e", lookalike="col1\tok-ABCdef123456", real="a\ttok-ABCdef123456"
    )

    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["lookalike"] == "col1\tok-ABCdef123456"
    assert event["real"] == "a\t***"


def test_json_lines_go_to_the_byte_stream_under_a_text_stream() -> None:
    """On a stream with a byte layer, lines are written there, whole, in order."""
    raw = io.BytesIO()
    text = io.TextIOWrapper(raw, encoding="utf-8", line_buffering=True)
    text.write("before\n")
    configure_logging(log_format="json", level="info", stream=text)

    structlog.get_logger("t").info("first", n=1)
    structlog.get_logger("t").info("second", n="é")

    lines = raw.getvalue().decode().splitlines()
    assert lines[0] == "before"
    assert [json.loads(line)["event"] for line in lines[1:]] == ["first", "second"]
    assert json.loads(lines[2])["n"] == "é"


class CountingStream(io.StringIO):
    """A text stream that counts its write calls."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_each_event_is_one_write_on_the_stream() -> None:
    """An event line reaches the stream in one write, never torn into two."""
    stream = CountingStream()
    configure_logging(log_format="json", level="info", stream=stream)

    for index in range(3):
        structlog.get_logger("t").info("namespace_created", index=index)

    assert stream.writes == 3
    assert len(stream.getvalue().splitlines()) == 3


def test_export_checks_its_arguments_before_any_call(tmp_path: Path) -> None:
    """A bad --account or a missing output directory is exit 4, nothing sent."""
    bad_account = ["export", "-o", str(tmp_path / "x.csv"), "--account", "nothex"]
    missing_dir = ["export", "-o", str(tmp_path / "no" / "x.csv")]

    assert run(bad_account) == 4
    assert run(missing_dir) == 4


def test_start_up_reads_no_distribution_metadata_for_pydantic_plugins() -> None:
    """Loading the CLI and its settings never lists installed distributions'
    entry points (pydantic's plugin search), unless the user asks for plugins."""
    probe = (
        "import importlib.metadata as md\n"
        "calls = []\n"
        "real = md.entry_points\n"
        "md.entry_points = lambda **kw: calls.append(kw) or real(**kw)\n"
        "import provisioner.cli\n"
        "provisioner.cli.load_settings({}, None)\n"
        "print(len(calls))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}

    default = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env
    )
    asked = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "PYDANTIC_DISABLE_PLUGINS": "none-of-these"},
    )

    assert default.stdout.strip() == "0", default.stderr
    assert int(asked.stdout.strip()) >= 1, asked.stderr


def test_start_up_skips_imports_a_plain_run_does_not_need() -> None:
    """Loading the CLI loads no YAML or TOML parser, no tenacity, no bar, and
    nothing of rich (structlog imports it whenever it is installed)."""
    # Only what importing the CLI adds counts (coverage, say, may load tomllib).
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import provisioner.cli\n"
        "lazy = ('yaml', 'tomllib', 'tenacity', 'tqdm', 'rich')\n"
        "print(','.join(m for m in lazy if m in sys.modules and m not in before))\n"
    )

    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert loaded == ""
