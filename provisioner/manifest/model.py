"""Data shared by the manifest readers: limits, the validation result, scan items.

A reader (``csvfile``, ``yamlfile``) turns a file into a stream of scan items:
``Header`` (CSV column names), ``Blank`` (a skipped empty row), ``Entry`` (one
data row, parsed and checked on its own), ``PlainRow`` (a CSV data row that
passed every check at once, with its digest) and ``Problem`` (something wrong
with the file as a whole that does not stop the scan). A problem that does stop
it is raised as ``Refused``. ``reader.Manifest`` folds the stream into a
``Validation`` or yields the rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from provisioner.errors import Problem
from provisioner.models import ManifestRow
from provisioner.names import NamePolicy

MIB = 1024 * 1024


@dataclass(frozen=True)
class ManifestLimits:
    """Caps that keep a broken or hostile manifest from exhausting the host.

    ``max_yaml_aliases`` counts the nodes that aliases stand for: an alias to a
    scalar counts 1, an alias to a list of n scalars counts n + 1. An alias bomb
    (aliases of lists of aliases) is refused while it is still small on disk.
    Values longer than the csv module's own limit (131,072 characters) are
    refused whatever ``max_field_chars`` says.
    """

    max_file_bytes: int = 512 * MIB
    max_rows: int = 2_000_000
    max_field_chars: int = 4096
    max_line_bytes: int = 1 * MIB
    max_yaml_bytes: int = 64 * MIB
    max_yaml_depth: int = 16
    max_yaml_aliases: int = 1_000_000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ManifestLimits.{name} must be a positive integer")


@dataclass
class Validation:
    """Everything one pass over a manifest found, ready to print or to act on.

    ``problems`` are in line order. A row's problems carry the row's line (the
    line where it starts, as in ``ManifestRow.line``, and as in
    ``invalid_lines``); when a YAML field sits further down its entry, the
    message starts with that field's line. ``row_problems`` groups them by row.
    """

    problems: list[Problem] = field(default_factory=list)
    rows_total: int = 0
    blank_rows_skipped: int = 0
    invalid_lines: set[int] = field(default_factory=set)
    duplicate_of: dict[int, int] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    sha256: str = ""
    row_problems: dict[int, list[Problem]] = field(default_factory=dict)
    # The values as written of rows found invalid on their own (for the
    # report's `invalid` rows); capped, so a file of bad rows stays cheap.
    invalid_values: dict[int, dict[str, str]] = field(default_factory=dict)
    # Account as written ("" for none) -> the names its valid rows keep there
    # (previous names included), so a run needs no pass of its own to learn
    # what to list; None when a check across rows invalidated a row after
    # its names were counted. Left out of ``to_dict``.
    names_by_account: dict[str, set[str]] | None = field(
        default_factory=dict, repr=False
    )
    # The first valid row that names no account, if any.
    first_line_without_account: int | None = None

    @property
    def errors(self) -> list[Problem]:
        """The problems that make a row (or the file) unusable."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The problems that change nothing but deserve a look."""
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        """Whether the manifest has no errors at all."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (sets become sorted lists)."""
        out = asdict(self)
        out["invalid_lines"] = sorted(self.invalid_lines)
        del out["names_by_account"], out["first_line_without_account"]

        return out


@dataclass(slots=True)
class RowValues:
    """One row's values as written in the file, by column name.

    The YAML reader adds ``lines``, the line of each field, and ``not_text``,
    for a scalar that some YAML parser reads as something other than a string
    (written without quotes, or tagged): how it is read and what to write
    instead. A CSV row needs neither, and one object per row (not per value)
    keeps a million-row pass light.
    """

    text: dict[str, str]
    lines: dict[str, int] | None = None
    not_text: dict[str, str] | None = None

    def line_of(self, name: str, row_line: int) -> int:
        """The line where field ``name`` is written."""
        return row_line if self.lines is None else self.lines.get(name, row_line)


@dataclass(slots=True)
class Entry:
    """One data row: its values, the row built from them, and its problems.

    ``values`` is None when the row could not even be split into fields;
    ``row`` is None when any problem of the row is an error. ``digest`` is
    equal for the rows of one file with the same values (see ``duplicates``);
    it is 0 for a row not split into fields.
    """

    line: int
    values: RowValues | None
    row: ManifestRow | None
    problems: list[Problem]
    digest: int = 0


@dataclass(frozen=True, slots=True)
class Blank:
    """A row with no values, skipped and counted."""

    line: int


@dataclass(frozen=True, slots=True)
class Header:
    """The column names of a CSV file, trimmed and case-folded, in file order."""

    columns: list[str]


# A CSV row that passed every check at once (``fields.PlainRecords``) and its
# digest. Almost every item is one, so it is a bare pair: building an Entry
# for each would cost a few thousand CPU instructions per row more.
PlainRow = tuple[ManifestRow, int]

ScanItem = PlainRow | Entry | Blank | Header | Problem


class Refused(Exception):
    """The scan cannot go on; carries the problems that say why."""

    def __init__(self, *problems: Problem) -> None:
        super().__init__(problems[0].message)
        self.problems = list(problems)


class Digest(Protocol):
    """What the readers need of a hash object such as ``hashlib.sha256()``."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass
class ScanContext:
    """What a reader needs, and what it reports back besides the items."""

    file: str
    policy: NamePolicy
    limits: ManifestLimits
    delimiter: str | None = None
    digest: Digest = field(default_factory=hashlib.sha256)
    # (size, modification time) when the file was opened, to notice a change.
    stamp: tuple[int, int] | None = None

    def problem(
        self,
        line: int | None,
        field_name: str | None,
        message: str,
        code: str,
        severity: str = "error",
    ) -> Problem:
        """A Problem located in this file."""
        return Problem(self.file, line, field_name, message, severity, code)
