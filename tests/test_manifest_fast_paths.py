"""The CSV reader's fast paths against the full checks they stand in for.

Plain rows are built by position (``fields.PlainRecords``) and clean blocks of
lines are taken whole (``csvfile._Lines``); any doubt sends a row to
``build_row`` and a block through the per-line checks. These tests compare
each fast path with its full check on values chosen to be awkward.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.errors import ManifestError, Problem
from provisioner.manifest import Manifest, ManifestLimits
from provisioner.manifest.csvfile import _Lines
from provisioner.manifest.fields import PlainRecords, build_row
from provisioner.manifest.model import Refused, RowValues, ScanContext
from provisioner.models import ManifestRow
from provisioner.names import NamePolicy

ACCOUNT = "0123456789abcdef0123456789abcdef"

POLICIES = [
    NamePolicy(),
    NamePolicy(pattern=r".*"),
    NamePolicy(pattern=r"[A-Z]+"),
    NamePolicy(pattern=r"[a-z.%]+"),
]

# Values that sit next to the edge of some check, one side or the other.
AWKWARD = [
    "",
    " ",
    "acme",
    "acme-prod",
    "Acme",
    " acme",
    "acme ",
    "ac me",
    "\u0430cme",
    "ac\u200bme",
    "caf\u00e9",
    "a" * 63,
    "a" * 64,
    "a" * 70,
    "a.b",
    "..",
    "100%",
    "a/b",
    "ACME",
    "true",
    "false",
    "True",
    "yes",
    "1",
    ACCOUNT,
    ACCOUNT.upper(),
    ACCOUNT[:-1],
    f" {ACCOUNT}",
]
values = st.one_of(st.sampled_from(AWKWARD), st.text(max_size=12))
OPTIONAL = ["tenant_id", "account_id", "trusted_workers", "previous_name"]
columns = st.lists(
    st.sampled_from([*OPTIONAL, "plan", "region"]), unique=True, max_size=6
).flatmap(lambda others: st.permutations(["namespace", *others]))


def _full_check(
    ctx: ScanContext, columns: list[str], record: list[str]
) -> tuple[ManifestRow | None, list[Problem]]:
    return build_row(ctx, 7, RowValues(dict(zip(columns, record, strict=True))))


@settings(max_examples=400)
@given(
    columns=columns,
    data=st.data(),
    policy=st.sampled_from(POLICIES),
    max_field_chars=st.sampled_from([4096, 40, 12]),
)
def test_plain_rows_are_exactly_the_full_checks_rows_without_problems(
    columns: list[str],
    data: st.DataObject,
    policy: NamePolicy,
    max_field_chars: int,
) -> None:
    """A plain row is the row build_row gives with no problem, and only that."""
    record = data.draw(st.lists(values, min_size=len(columns), max_size=len(columns)))
    limits = ManifestLimits(max_field_chars=max_field_chars)
    ctx = ScanContext("m.csv", policy, limits)
    chars = len("".join(record))

    plain = PlainRecords(ctx, columns).row(7, record, chars)
    row, problems = _full_check(ctx, columns, record)

    # The fast path may decline a clean row only when its values together are
    # longer than one value may be; it then costs time, never a difference.
    if problems or chars > max_field_chars:
        assert plain is None
    else:
        assert plain == row
        assert plain is not None


@pytest.mark.parametrize("policy", POLICIES, ids=lambda policy: policy.pattern)
@pytest.mark.parametrize(
    ("columns", "record"),
    [
        (["namespace", "tenant_id", "plan"], ["tenant-000001", "cust-1", "pro"]),
        (["plan", "namespace"], ["", "acme"]),
        (["namespace", "account_id"], ["acme", ACCOUNT]),
        (["namespace", "account_id"], ["acme", ACCOUNT.upper()]),
        (["namespace", "trusted_workers"], ["acme", "true"]),
        (["namespace", "trusted_workers"], ["acme", "yes"]),
        (["namespace", "previous_name"], ["acme", "acme"]),
        (["namespace", "previous_name"], ["acme", "old-acme"]),
        (["namespace", "previous_name"], ["acme", "Old"]),
        (["namespace", "tenant_id"], [" acme", "t"]),
        (["namespace", "tenant_id"], ["", "t"]),
        (["namespace"], ["ACME"]),
        (["namespace"], ["a.b"]),
        (["namespace"], ["100%"]),
        (["namespace"], ["a/b"]),
        (["namespace"], ["\u0430cme"]),
        (["namespace"], ["a" * 64]),
        (["namespace", "tenant_id"], ["acme", "x" * 5000]),
    ],
)
def test_plain_rows_agree_with_the_full_check_on_known_edges(
    policy: NamePolicy, columns: list[str], record: list[str]
) -> None:
    """On hand-picked edge cases, a plain row is build_row's row, problem-free."""
    ctx = ScanContext("m.csv", policy, ManifestLimits())

    plain = PlainRecords(ctx, columns).row(7, record, len("".join(record)))
    row, problems = _full_check(ctx, columns, record)

    assert plain == (None if problems else row)


# Pieces of lines that trip one per-line check or another: a NUL, bytes that
# are not UTF-8 (a lone continuation byte, a cut-off sequence), line breaks
# that are not "\n", a byte order mark, and long runs.
PIECES = [
    b"a,b",
    b"tenant-000001,cust-1,pro",
    b"\n",
    b"\r\n",
    b"\r",
    b"\x00",
    b"\x80",
    b"\xc3",
    b"\xc3\xa9",
    b"\xe2\x80\xa8",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b'"',
    b"x" * 40,
]


def _read_all(
    lines: _Lines, texts: Iterable[str], ctx: ScanContext
) -> tuple[list[str], object]:
    """The texts read, then the refusal's problems, or the counts and digest."""
    read: list[str] = []
    try:
        for text in texts:
            read.append(text)
    except Refused as exc:
        return read, exc.problems

    return read, (lines.line_no, lines.bytes_read, ctx.digest.hexdigest())


@settings(max_examples=400)
@given(
    data=st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join),
    block_bytes=st.integers(min_value=1, max_value=64),
    max_line_bytes=st.sampled_from([1024 * 1024, 48, 8]),
    max_file_bytes=st.sampled_from([512 * 1024 * 1024, 300, 60]),
)
def test_reading_in_blocks_gives_what_reading_line_by_line_gives(
    data: bytes, block_bytes: int, max_line_bytes: int, max_file_bytes: int
) -> None:
    """Blocks give the same lines, refusals, counts and digest as line by line."""
    limits = ManifestLimits(
        max_line_bytes=max_line_bytes, max_file_bytes=max_file_bytes
    )

    blocks_ctx, lines_ctx = (
        ScanContext("m.csv", NamePolicy(), limits, digest=hashlib.sha256())
        for _ in range(2)
    )
    in_blocks = _Lines(io.BytesIO(data), blocks_ctx, block_bytes)
    one_by_one = _Lines(io.BytesIO(data), lines_ctx, block_bytes)

    by_blocks = _read_all(in_blocks, in_blocks.texts(), blocks_ctx)
    by_lines = _read_all(one_by_one, one_by_one._checked(data), lines_ctx)

    assert by_blocks == by_lines


def test_a_fault_in_a_late_block_names_its_own_line(tmp_path: Path) -> None:
    """A NUL many blocks into a file is refused on its line, after clean blocks."""
    path = tmp_path / "m.csv"
    body = b"".join(b"tenant-%06d,cust\n" % i for i in range(1, 5000))
    path.write_bytes(b"namespace,tenant_id\n" + body + b"bad\x00,x\n")

    with pytest.raises(ManifestError, match="Line 5001 holds a NUL byte"):
        Manifest(path).validate()


def test_rows_served_and_read_again_are_the_same(tmp_path: Path) -> None:
    """Rows kept from validation equal rows read again, plain or not."""
    path = tmp_path / "m.csv"
    records = (
        f"tenant-{i:04d},{'' if i % 3 else ACCOUNT},{'true' if i % 2 else ''},"
        f"{f'tenant-{i:04d}' if i % 7 == 0 else ''},pro\n"
        for i in range(1, 3000)
    )
    path.write_text(
        "namespace,account_id,trusted_workers,previous_name,plan\n"
        + "".join(records)
        + "tenant-0001,,,,pro\n"
    )

    kept = Manifest(path)
    streamed = Manifest(path, rows_in_memory=0)

    assert kept.validate().to_dict() == streamed.validate().to_dict()
    assert list(kept.rows()) == list(streamed.rows())


def test_a_block_over_the_line_limit_passes_when_its_lines_do() -> None:
    """A block longer than one line may be is checked line by line, and passes."""
    data = b"".join(b"line-%04d\n" % i for i in range(1, 200))
    limits = ManifestLimits(max_line_bytes=16)
    ctx = ScanContext("m.csv", NamePolicy(), limits, digest=hashlib.sha256())

    lines = _Lines(io.BytesIO(data), ctx, block_bytes=64)
    texts = list(lines.texts())

    assert texts == data.decode().splitlines(keepends=True)
    assert (lines.line_no, lines.bytes_read) == (199, len(data))
    assert ctx.digest.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("last_row", ["acme,t", "Acme,t"])
def test_the_row_limit_counts_plain_and_checked_rows_alike(
    tmp_path: Path, last_row: str
) -> None:
    """The row past limits.max_rows is refused whether it is plain or not."""
    path = tmp_path / "m.csv"
    path.write_text(f"namespace,tenant_id\nfirst,t\n{last_row}\n")

    with pytest.raises(ManifestError, match="more than 1 rows") as caught:
        Manifest(path, limits=ManifestLimits(max_rows=1)).validate()

    assert caught.value.problems[-1].line == 3
