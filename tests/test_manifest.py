"""Tests for Manifest, Validation and write_manifest beyond the corpus."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import itertools
import json
import os
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import ScalarNode

from provisioner.errors import ManifestError, Problem
from provisioner.manifest import (
    Manifest,
    ManifestLimits,
    Validation,
    reader,
    write_manifest,
)
from provisioner.manifest.writer import yaml_quoted
from provisioner.manifest.yamlfile import plain_meaning
from provisioner.models import ManifestRow

ACCOUNT = "0123456789abcdef0123456789abcdef"


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _refusal(manifest: Manifest) -> ManifestError:
    """The ManifestError that validate() raises for ``manifest``."""
    with pytest.raises(ManifestError) as caught:
        manifest.validate()
    return caught.value


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 100,000-row CSV manifest, written once for the streaming tests."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("namespace,tenant_id,account_id,trusted_workers,plan\n")
        for i in range(100_000):
            out.write(f"tenant-{i:06d},t-{i:06d},{ACCOUNT},true,pro\n")
    return path


# ------------------------------------------------------------------ streaming


def test_rows_streams_a_large_file_in_little_memory(big_csv: Path) -> None:
    """Streaming 100,000 rows holds a small fraction of the file in memory."""
    manifest = Manifest(big_csv)
    validation = manifest.validate()
    size_bytes = big_csv.stat().st_size
    rows = manifest.rows()

    # Traced over the first 10,000 rows only, since tracing every allocation
    # makes Python ten times slower: reading the file whole at the start, or
    # keeping the rows, would both show there, as megabytes.
    tracemalloc.start()
    try:
        traced = sum(1 for _ in itertools.islice(rows, 10_000))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    count = traced + sum(1 for _ in rows)

    assert validation.rows_total == count == 100_000
    assert validation.ok
    assert peak_bytes < size_bytes / 50


def test_rows_is_a_lazy_generator(tmp_path: Path) -> None:
    """rows() returns a generator that reads only as far as it is consumed."""
    path = _write(tmp_path / "m.csv", "namespace\nacme\nbeta\n")
    manifest = Manifest(path, rows_in_memory=0)
    manifest.validate()

    rows = manifest.rows()
    first = next(rows)
    rows.close()

    assert inspect.isgenerator(rows)
    assert first.namespace == "acme"


def test_default_limits_admit_a_million_rows() -> None:
    """The default caps allow at least a million rows and a 512 MiB file."""
    limits = ManifestLimits()

    assert limits.max_rows >= 1_000_000
    assert limits.max_file_bytes == 512 * 1024 * 1024


def test_a_bad_byte_deep_in_a_file_is_located(tmp_path: Path) -> None:
    """Decoding line by line names the exact line of a non-UTF-8 byte."""
    lines = ["namespace"] + [f"tenant-{i}" for i in range(5000)]
    data = ("\n".join(lines) + "\n").encode() + b"caf\xe9\n"
    manifest = Manifest(_write(tmp_path / "m.csv", data))

    error = _refusal(manifest)

    assert [(p.line, p.code) for p in error.problems] == [(5002, "encoding")]


# ------------------------------------------------------------------ validation


def test_validation_is_json_ready_and_in_line_order(tmp_path: Path) -> None:
    """Problems come in line order and the to_dict form goes through json."""
    path = _write(
        tmp_path / "m.csv",
        "namespace,trusted_workers\nB,yes\nacme,true\nacme,true\n a,\n",
    )

    validation = Manifest(path).validate()
    data = json.loads(json.dumps(validation.to_dict()))

    lines = [p.line for p in validation.problems]
    assert lines == sorted(lines)
    assert data["invalid_lines"] == [2, 5]
    assert data["duplicate_of"] == {"4": 3}
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert validation.row_problems[2] == [p for p in validation.problems if p.line == 2]
    assert not validation.ok
    assert [p.code for p in validation.warnings] == ["duplicate"]


def test_row_problems_of_yaml_carry_the_row_line(tmp_path: Path) -> None:
    """A YAML field error is filed under its row's line, naming its own line."""
    path = _write(
        tmp_path / "m.yaml",
        '- namespace: "acme"\n  plan: "x"\n  tenant_id: 0123\n',
    )

    validation = Manifest(path).validate()

    (problem,) = validation.problems
    assert problem.line == 1
    assert problem.message.startswith("Line 3: tenant_id '0123' is not text")
    assert validation.invalid_lines == {1}


def test_rows_validates_first_and_can_be_read_twice(tmp_path: Path) -> None:
    """rows() validates when needed and, streaming, reopens the file per call."""
    path = _write(tmp_path / "m.yaml", '- namespace: "acme"\n- namespace: "b"\n')
    manifest = Manifest(path, rows_in_memory=0)

    first = list(manifest.rows())
    second = list(manifest.rows())

    assert manifest.validation is not None
    assert first == second
    assert [r.namespace for r in first] == ["acme", "b"]


def test_rows_refuses_a_file_changed_since_validation(tmp_path: Path) -> None:
    """A manifest edited after validate() is refused by rows(), not half-used."""
    path = _write(tmp_path / "m.csv", "namespace\nacme\n")
    manifest = Manifest(path, rows_in_memory=0)
    manifest.validate()
    _write(path, "namespace\nacme\nbad/name\n")

    with pytest.raises(ManifestError, match="changed after it was validated"):
        list(manifest.rows())


def _edit_keeping_size_and_time(path: Path, text: str) -> None:
    """Rewrite ``path`` (same length) and give it back its modification time."""
    stat = path.stat()
    _write(path, text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_rows_notices_a_change_that_keeps_size_and_time(tmp_path: Path) -> None:
    """An edit that keeps the size and mtime is caught by the digest at the end."""
    path = _write(tmp_path / "m.csv", "namespace\nacme\n")
    manifest = Manifest(path, rows_in_memory=0)
    manifest.validate()
    _edit_keeping_size_and_time(path, "namespace\nacmf\n")

    with pytest.raises(ManifestError, match="changed after it was validated"):
        list(manifest.rows())


def test_a_small_manifest_is_served_from_what_was_validated(tmp_path: Path) -> None:
    """Up to rows_in_memory rows, rows() gives exactly the validated rows (no
    invalid ones) without reading the file again, even once it is gone."""
    path = _write(tmp_path / "m.csv", "namespace\nacme\nbad/name\nbeta\nacme\n")
    manifest = Manifest(path, rows_in_memory=4)
    validation = manifest.validate()
    path.unlink()

    rows = [(r.line, r.namespace) for r in manifest.rows()]

    assert validation.invalid_lines == {3}
    assert rows == [(2, "acme"), (4, "beta"), (5, "acme")]


def test_a_manifest_over_rows_in_memory_is_read_again(tmp_path: Path) -> None:
    """One row more than rows_in_memory and rows() reads the file again."""
    path = _write(tmp_path / "m.csv", "namespace\nacme\nbeta\n")
    manifest = Manifest(path, rows_in_memory=1)
    manifest.validate()
    path.unlink()

    with pytest.raises(ManifestError, match="cannot be read"):
        list(manifest.rows())


@pytest.mark.parametrize(
    ("entry", "field"),
    [('  note: "x \\ud800"\n', "note"), ('  "k\\ud800": "v"\n', None)],
    ids=["in a value", "in a field name"],
)
def test_a_lone_surrogate_escape_in_yaml_is_refused(
    tmp_path: Path, entry: str, field: str | None
) -> None:
    """A YAML escape of half a UTF-16 pair, in a value or in a field name, makes
    its row invalid (naming the field where it is a value's), since no UTF-8
    journal, log or report can hold it."""
    path = _write(
        tmp_path / "m.yaml", f'- namespace: "acme"\n{entry}- namespace: "beta"\n'
    )
    manifest = Manifest(path)
    validation = manifest.validate()

    (problem,) = validation.errors
    assert (problem.line, problem.code) == (1, "not-text")
    if field is not None:
        assert problem.field == field
    assert "\\ud800" in problem.message
    assert [r.namespace for r in manifest.rows()] == ["beta"]


def test_a_streamed_row_changed_since_validation_is_never_yielded(
    tmp_path: Path,
) -> None:
    """Streaming stops at the first row that differs from what was validated,
    even when the edit keeps the file's size and time: no row after it, nor
    the row itself, comes out."""
    path = _write(tmp_path / "m.csv", "namespace\nacme\nbeta\ngamma\n")
    manifest = Manifest(path, rows_in_memory=0)
    manifest.validate()
    _edit_keeping_size_and_time(path, "namespace\nacme\nbetb\ngamma\n")

    yielded = []

    def consume() -> None:
        for row in manifest.rows():
            yielded.append(row.namespace)

    with pytest.raises(ManifestError, match="changed after it was validated"):
        consume()

    assert yielded == ["acme"]


def test_a_large_file_is_streamed_however_few_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are kept in memory only for a file within KEPT_FILE_BYTES, so a
    few huge rows never pile up."""
    monkeypatch.setattr(reader, "KEPT_FILE_BYTES", 10)
    path = _write(tmp_path / "m.csv", "namespace\nacme\nbeta\n")
    manifest = Manifest(path)
    manifest.validate()
    path.unlink()

    with pytest.raises(ManifestError, match="cannot be read"):
        list(manifest.rows())


def test_whole_file_problems_come_with_row_problems_found_so_far(
    tmp_path: Path,
) -> None:
    """A refusal carries every problem known when it happened, in line order."""
    path = _write(tmp_path / "m.csv", b"namespace\nBad\nok\nx\xff\n")

    error = _refusal(Manifest(path))

    assert [(p.line, p.code) for p in error.problems] == [
        (2, "name"),
        (4, "encoding"),
    ]
    assert "m.csv:4:" in str(error)
    assert "(and 1 more problem)" in str(error)


@pytest.mark.parametrize("delimiter", ["", ";;", '"', "\n", "a"])
def test_an_unusable_delimiter_is_refused(tmp_path: Path, delimiter: str) -> None:
    """A delimiter that cannot separate CSV values raises ManifestError at once."""
    with pytest.raises(ManifestError, match="cannot separate CSV values"):
        Manifest(tmp_path / "m.csv", delimiter=delimiter)


def test_a_wrong_explicit_delimiter_gets_a_hint(tmp_path: Path) -> None:
    """A semicolon file read with ',' says the header looks semicolon-separated."""
    path = _write(tmp_path / "m.csv", "namespace;tenant_id\nacme;t-1\n")

    error = _refusal(Manifest(path, delimiter=","))

    assert "separated by semicolons" in error.problems[0].message


def test_a_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    """An unreadable path is a ManifestError with a sentence, not an OSError."""
    error = _refusal(Manifest(tmp_path / "absent.csv"))

    assert error.problems[0].code == "unreadable"


def test_a_value_beyond_the_csv_module_limit_is_refused(tmp_path: Path) -> None:
    """A value longer than csv's own limit is refused with a line, not a traceback."""
    size = csv.field_size_limit() + 10
    path = _write(tmp_path / "m.csv", f'namespace,notes\nacme,"{"x" * size}"\n')

    error = _refusal(Manifest(path))

    assert [(p.line, p.code) for p in error.problems] == [(2, "csv-syntax")]


def test_an_overlong_line_is_refused(tmp_path: Path) -> None:
    """A physical line over limits.max_line_bytes is refused before parsing."""
    path = _write(tmp_path / "m.csv", "namespace\n" + "a" * 100 + "\n")

    error = _refusal(Manifest(path, limits=ManifestLimits(max_line_bytes=64)))

    assert [(p.line, p.code) for p in error.problems] == [(2, "too-long")]


def test_limits_must_be_positive() -> None:
    """A zero or negative cap is a programming error, raised at once."""
    with pytest.raises(ValueError, match="max_rows"):
        ManifestLimits(max_rows=0)


# ------------------------------------------------------------------ YAML


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no", "YAML 1.1 reads it as a boolean"),
        ("Off", "YAML 1.1 reads it as a boolean"),
        ("y", "YAML 1.1 reads it as a boolean"),
        ("N", "YAML 1.1 reads it as a boolean"),
        ("TRUE", "YAML 1.1 and 1.2 both read it as a boolean"),
        ("0123", "YAML 1.1 and 1.2 both read it as an integer"),
        ("-17", "YAML 1.1 and 1.2 both read it as an integer"),
        ("0b101", "YAML 1.1 reads it as an integer"),
        ("190:20:30", "YAML 1.1 reads it as an integer"),
        ("0o17", "YAML 1.2 reads it as an integer"),
        ("1e3", "YAML 1.2 reads it as a number"),
        ("1.", "YAML 1.1 and 1.2 both read it as a number"),
        ("+.INF", "YAML 1.1 and 1.2 both read it as a number"),
        ("2024-01-02", "YAML 1.1 reads it as a date"),
        ("", "YAML 1.1 and 1.2 both read it as null"),
        ("NULL", "YAML 1.1 and 1.2 both read it as null"),
        ("<<", "YAML 1.1 reads it as a merge key"),
        ("acme", None),
        ("tenant-0123", None),
        ("0x", None),
        ("e3", None),
        ("1.2.3", None),
        ("yes-please", None),
    ],
)
def test_plain_scalars_are_judged_by_both_yaml_versions(
    value: str, expected: str | None
) -> None:
    """An unquoted value is flagged when YAML 1.1 or 1.2 reads it as non-text."""
    tag = yaml.SafeLoader("").resolve(ScalarNode, value, (True, False))

    meaning = plain_meaning(value, tag)

    if expected is None:
        assert meaning is None
    else:
        assert meaning is not None
        assert meaning.startswith(expected)


def test_aliases_to_scalars_are_allowed_within_the_cap(tmp_path: Path) -> None:
    """A few aliases for a shared value are fine; more than the cap is refused."""
    entries = "".join(f'- namespace: "t{i}"\n  account_id: *acct\n' for i in range(5))
    text = f'- namespace: "t"\n  account_id: &acct "{ACCOUNT}"\n' + entries
    path = _write(tmp_path / "m.yaml", text)

    accepted = Manifest(path, limits=ManifestLimits(max_yaml_aliases=5)).validate()
    refused = _refusal(Manifest(path, limits=ManifestLimits(max_yaml_aliases=4)))

    assert accepted.ok
    assert accepted.rows_total == 6
    assert refused.problems[-1].code == "alias-limit"


def test_aliases_count_the_values_they_stand_for(tmp_path: Path) -> None:
    """One alias of a list of nine counts as ten values against the cap."""
    text = 'x: &a [1,2,3,4,5,6,7,8,9]\ny: *a\ntenants: [{namespace: "a"}]\n'
    path = _write(tmp_path / "m.yaml", text)

    error = _refusal(Manifest(path, limits=ManifestLimits(max_yaml_aliases=9)))

    assert [p.code for p in error.problems][-1] == "alias-limit"


def test_yaml_files_over_their_own_cap_are_refused(tmp_path: Path) -> None:
    """A YAML file over limits.max_yaml_bytes is refused with advice to use CSV."""
    path = _write(tmp_path / "m.yaml", '- namespace: "acme"\n' * 10)

    error = _refusal(Manifest(path, limits=ManifestLimits(max_yaml_bytes=50)))

    assert "write a manifest this big as CSV" in error.problems[0].message


def test_yaml_depth_is_capped(tmp_path: Path) -> None:
    """Nesting beyond limits.max_yaml_depth is refused with its line."""
    path = _write(tmp_path / "m.yaml", '- namespace: "a"\n- x: [[[1]]]\n')

    error = _refusal(Manifest(path, limits=ManifestLimits(max_yaml_depth=4)))

    assert [(p.line, p.code) for p in error.problems][-1] == (2, "depth-limit")


# ------------------------------------------------------------------ writing

names = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,8}[a-z0-9])?", fullmatch=True)
texts = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
    min_size=1,
    max_size=20,
)
# Namespaces start with n and rename sources with p, so that no row renames
# from another row's namespace (a conflict the reader rightly reports).
manifest_rows = st.builds(
    ManifestRow,
    line=st.just(0),
    namespace=names.map(lambda name: "n" + name),
    tenant_id=st.none() | texts,
    account_id=st.none() | st.just(ACCOUNT),
    trusted_workers=st.none() | st.booleans(),
    previous_name=st.none() | names.map(lambda name: "p" + name),
    extra=st.dictionaries(st.sampled_from(["plan", "note", "z-x"]), texts),
)
valid_manifests = st.lists(
    manifest_rows,
    max_size=6,
    unique_by=(
        lambda row: row.namespace,
        lambda row: row.previous_name or row.namespace,
    ),
)


def _without_lines(rows: list[ManifestRow]) -> list[ManifestRow]:
    return [dataclasses.replace(row, line=0) for row in rows]


@pytest.mark.parametrize("fmt", ["csv", "yaml"])
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=valid_manifests)
def test_written_manifests_read_back_to_the_same_rows(
    tmp_path: Path, fmt: str, rows: list[ManifestRow]
) -> None:
    """write_manifest output reads back to the identical rows, in CSV and YAML."""
    path = tmp_path / f"out.{fmt}"

    write_manifest(path, rows, fmt)
    manifest = Manifest(path)
    validation = manifest.validate()

    assert [p for p in validation.problems if p.code != "no-rows"] == []
    assert _without_lines(list(manifest.rows())) == _without_lines(rows)


def test_yaml_output_quotes_every_string(tmp_path: Path) -> None:
    """Strings YAML would misread (no, 0123, ~) are written in double quotes."""
    row = ManifestRow(line=0, namespace="no", tenant_id="0123", extra={"note": "~"})
    path = tmp_path / "out.yaml"

    write_manifest(path, [row], "yaml")

    text = path.read_text()
    assert 'namespace: "no"' in text
    assert 'tenant_id: "0123"' in text
    assert '"note": "~"' in text


@pytest.mark.parametrize(
    "text", ["", "plain", 'quo"te', "back\\slash", "tab\tnew\nline", "\x85\u2028"]
)
def test_yaml_quoting_round_trips(text: str) -> None:
    """A double-quoted scalar from yaml_quoted loads back to the same text."""
    assert yaml.safe_load(yaml_quoted(text)) == text


def test_write_manifest_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Writing replaces the target atomically and cleans up after itself."""
    path = tmp_path / "out.csv"

    write_manifest(path, [ManifestRow(line=0, namespace="acme")], "csv")

    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert path.read_bytes() == b"namespace\r\nacme\r\n"


def test_write_manifest_refuses_an_unknown_format(tmp_path: Path) -> None:
    """Only csv and yaml can be written."""
    with pytest.raises(ValueError, match="unknown manifest format"):
        write_manifest(tmp_path / "out.json", [], "json")


def test_problem_render_names_file_line_and_field() -> None:
    """Problems render as file:line: field: message, the shape people grep."""
    problem = Problem("m.csv", 3, "namespace", "Bad.", "error", "name")

    assert problem.render() == "m.csv:3: namespace: Bad."
    assert Validation(problems=[problem]).errors == [problem]
