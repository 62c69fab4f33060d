"""The Manifest: one file of tenant rows, validated in one pass, then streamed."""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from pathlib import Path

from provisioner.errors import ManifestError, Problem
from provisioner.manifest.csvfile import scan_csv
from provisioner.manifest.duplicates import DuplicateTracker
from provisioner.manifest.fields import KNOWN_COLUMNS
from provisioner.manifest.model import (
    Blank,
    Entry,
    Header,
    ManifestLimits,
    Refused,
    ScanContext,
    ScanItem,
    Validation,
)
from provisioner.models import ManifestRow
from provisioner.names import NamePolicy

FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".yaml": "yaml", ".yml": "yaml"}
DEFAULT_POLICY = NamePolicy()
DEFAULT_LIMITS = ManifestLimits()


def _line_key(problem: Problem) -> int:
    return problem.line or 0


def _refusal(problems: list[Problem], reason: Problem) -> ManifestError:
    """The exception for a manifest that cannot be used, holding every problem.

    Its message is ``reason``, the problem that makes the whole file unusable.
    """
    problems = sorted(problems, key=_line_key)
    more = len(problems) - 1

    message = reason.render()
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ManifestError(message, problems)


# Values kept for invalid rows, for the report; beyond this only the line is.
_KEPT_VALUES = 100_000


class _Collector:
    """Folds scan items into a Validation, keeping up to ``rows_kept`` rows."""

    def __init__(self, file: str, limits: ManifestLimits, rows_kept: int) -> None:
        self.file = file
        self.limits = limits
        self.validation = Validation()
        self.file_problems: list[Problem] = []
        self.row_problems: list[tuple[int, Problem]] = []
        self.tracker = DuplicateTracker(file)
        self.columns: dict[str, None] = {"namespace": None}
        # Rows refused on their own values: any other invalid row was refused
        # by a check across rows, after its names went into names_by_account.
        self.refused_lines: set[int] = set()
        # Line and digest of each row that passed its own checks, in order: a
        # second reading sends nothing that differs from what was validated.
        self.lines: array[int] = array("Q")
        self.digests: array[int] = array("Q")
        # The rows that passed their own checks, until there are too many.
        self.rows_kept = rows_kept
        self.kept: list[ManifestRow] | None = [] if rows_kept > 0 else None

    def add(self, item: Entry | Blank | Header | Problem) -> None:
        """Fold in any item but a plain row (``add_plain``)."""
        if isinstance(item, Entry):
            self.add_entry(item)
        elif isinstance(item, Blank):
            self.validation.blank_rows_skipped += 1
        elif isinstance(item, Header):
            self.columns.update(dict.fromkeys(item.columns))
        else:
            self.file_problems.append(item)

    def add_plain(self, row: ManifestRow, digest: int) -> None:
        """Fold in a row that passed every check at once: almost every row."""
        validation = self.validation
        validation.rows_total += 1
        if validation.rows_total > self.limits.max_rows:
            raise self._too_many_rows(row.line)
        self._keep(row, digest)
        self.tracker.add(row.line, row.namespace, row.previous_name or "", digest)

    def add_entry(self, entry: Entry) -> None:
        self.validation.rows_total += 1
        if self.validation.rows_total > self.limits.max_rows:
            raise self._too_many_rows(entry.line)
        if entry.problems:
            self.row_problems.extend((entry.line, p) for p in entry.problems)
            invalid = self.validation.invalid_values
            erroneous = any(p.severity == "error" for p in entry.problems)
            if erroneous and entry.values is not None and len(invalid) < _KEPT_VALUES:
                invalid[entry.line] = dict(entry.values.text)
        if entry.row is None:
            self.refused_lines.add(entry.line)
        else:
            self._keep(entry.row, entry.digest)
        if entry.values is not None:
            text = entry.values.text
            name, previous = text.get("namespace", ""), text.get("previous_name", "")
            self.tracker.add(entry.line, name, previous, entry.digest)
            if not self.columns.keys() >= text.keys():
                self.columns.update(dict.fromkeys(text))

    def _too_many_rows(self, line: int) -> Refused:
        return Refused(
            Problem(
                self.file,
                line,
                None,
                f"The manifest has more than {self.limits.max_rows:,} rows "
                "(limits.max_rows); split it into several manifests.",
                code="too-many-rows",
            )
        )

    def _keep(self, row: ManifestRow, digest: int) -> None:
        """Note a row that passed its own checks: its names, line and digest."""
        validation = self.validation
        assert validation.names_by_account is not None
        account = row.account_id or ""
        if not account and validation.first_line_without_account is None:
            validation.first_line_without_account = row.line
        names = validation.names_by_account.get(account)
        if names is None:
            names = validation.names_by_account[account] = set()
        names.add(row.namespace)
        if row.previous_name:
            names.add(row.previous_name)

        self.lines.append(row.line)
        self.digests.append(digest)
        if self.kept is not None and len(self.kept) < self.rows_kept:
            self.kept.append(row)
        else:
            self.kept = None

    def problems(self) -> list[Problem]:
        """Every problem so far, in line order."""
        rows = [p for _, p in self.row_problems]
        return sorted(self.file_problems + rows, key=_line_key)

    def fatal(self) -> Problem | None:
        """The first problem of the file as a whole that makes it unusable."""
        errors = [p for p in self.file_problems if p.severity == "error"]

        return min(errors, key=_line_key) if errors else None

    def _repeats_of_invalid(self, duplicate_of: dict[int, int]) -> None:
        """Mark exact repeats of an invalid row invalid too, with the reason.

        Row checks give identical rows identical errors, but a check across
        rows (a rename conflict) is raised on the first of them only.
        """
        invalid = self.validation.invalid_lines
        for line, first in duplicate_of.items():
            if first in invalid and line not in invalid:
                problem = Problem(
                    self.file,
                    line,
                    "namespace",
                    f"This row repeats line {first}, which has errors; fix that "
                    "row, and remove this copy.",
                    code="repeats-invalid",
                )
                self.validation.row_problems.setdefault(line, []).append(problem)
                self.row_problems.append((line, problem))
                invalid.add(line)

    def finish(self, sha256: str) -> Validation:
        found, duplicate_of = self.tracker.finish()
        self.row_problems.extend(found)
        validation = self.validation
        for line, problem in self.row_problems:
            validation.row_problems.setdefault(line, []).append(problem)
            if problem.severity == "error":
                validation.invalid_lines.add(line)
        self._repeats_of_invalid(duplicate_of)
        if not validation.invalid_lines <= self.refused_lines:
            validation.names_by_account = None
            validation.first_line_without_account = None
        for problems in validation.row_problems.values():
            problems.sort(key=_line_key)

        if validation.rows_total == 0 and self.fatal() is None:
            self.file_problems.append(
                Problem(
                    self.file,
                    None,
                    None,
                    "The manifest lists no tenants.",
                    "warning",
                    "no-rows",
                )
            )
        validation.problems = self.problems()
        validation.duplicate_of = duplicate_of
        known = [c for c in KNOWN_COLUMNS if c in self.columns]
        validation.columns = known + [c for c in self.columns if c not in known]
        validation.sha256 = sha256
        return validation


# Manifests of up to this many rows, and of a file no larger than
# KEPT_FILE_BYTES, keep their validated rows in memory and are read once;
# larger ones are streamed again, each row checked against what was validated.
ROWS_KEPT_IN_MEMORY = 10_000
KEPT_FILE_BYTES = 4 * 1024 * 1024


class Manifest:
    """A manifest file: ``validate()`` once, then ``rows()`` as often as needed.

    The format comes from the extension: ``.csv``, ``.tsv`` or ``.txt`` for CSV
    (delimiter sniffed from the header unless given), ``.yaml`` or ``.yml`` for
    YAML. Any other extension raises ManifestError at once.

    Up to ``rows_in_memory`` validated rows are kept, and ``rows()`` serves
    them without reading the file again: exactly what was validated, whatever
    happens to the file afterwards. A larger manifest is read again per call.
    """

    def __init__(
        self,
        path: Path,
        *,
        policy: NamePolicy = DEFAULT_POLICY,
        limits: ManifestLimits = DEFAULT_LIMITS,
        delimiter: str | None = None,
        rows_in_memory: int = ROWS_KEPT_IN_MEMORY,
    ) -> None:
        self.path = Path(path)
        self.rows_in_memory = rows_in_memory
        self._kept: list[ManifestRow] | None = None
        self._lines: array[int] = array("Q")
        self._digests: array[int] = array("Q")
        self.file = str(path)
        self.policy = policy
        self.limits = limits
        self.delimiter = delimiter
        self._validation: Validation | None = None
        self._stamp: tuple[int, int] | None = None

        fmt = FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            problem = Problem(
                self.file,
                None,
                None,
                f"The extension {self.path.suffix or '(none)'!r} says nothing "
                "about the format; name the file .csv (or .tsv) for CSV, or .yaml "
                "for YAML.",
                code="format",
            )
            raise _refusal([problem], problem)
        self.format: str = fmt
        if delimiter is not None and (
            len(delimiter) != 1 or delimiter in '"\r\n' or delimiter.isalnum()
        ):
            problem = Problem(
                self.file,
                None,
                None,
                f"The delimiter {delimiter!r} cannot separate CSV values; give one "
                "character such as ',', ';' or a tab.",
                code="delimiter",
            )
            raise _refusal([problem], problem)

    @property
    def validation(self) -> Validation | None:
        """The result of the last ``validate()``, if any."""
        return self._validation

    def _context(self) -> ScanContext:
        return ScanContext(self.file, self.policy, self.limits, self.delimiter)

    def _scan(
        self, ctx: ScanContext, expect_stamp: tuple[int, int] | None = None
    ) -> Iterator[ScanItem]:
        """Open the file and yield its scan items; problems arrive as Refused."""
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise Refused(
                ctx.problem(
                    None,
                    None,
                    f"The file cannot be read ({exc.strerror or exc}); check the "
                    "path and its permissions.",
                    "unreadable",
                )
            ) from None

        with handle:
            stat = os.fstat(handle.fileno())
            ctx.stamp = (stat.st_size, stat.st_mtime_ns)
            if expect_stamp is not None and ctx.stamp != expect_stamp:
                raise Refused(_changed(ctx))
            if stat.st_size > self.limits.max_file_bytes:
                raise Refused(
                    ctx.problem(
                        None,
                        None,
                        f"The file is {stat.st_size:,} bytes, over the limit of "
                        f"{self.limits.max_file_bytes:,} (limits.max_file_bytes); "
                        "split it into several manifests.",
                        "too-big",
                    )
                )
            if self.format == "csv":
                scan = scan_csv
            else:
                # Only YAML manifests pay for importing the YAML parser.
                from provisioner.manifest.yamlfile import scan_yaml as scan
            try:
                yield from scan(handle, ctx)
            except OSError as exc:
                raise Refused(
                    ctx.problem(
                        None,
                        None,
                        f"Reading the file failed ({exc.strerror or exc}).",
                        "unreadable",
                    )
                ) from None

    def validate(self) -> Validation:
        """Check the whole file in one pass and report every problem found.

        Row problems are returned, never raised. Raises ManifestError when the
        file as a whole cannot be used (unreadable, not UTF-8, too big, no
        namespace column, YAML not a list, …); its ``problems`` hold that
        reason and every row problem found before it.
        """
        ctx = self._context()
        small = self.rows_in_memory > 0 and _size(self.path) <= KEPT_FILE_BYTES
        rows_kept = self.rows_in_memory if small else 0
        collector = _Collector(self.file, self.limits, rows_kept)

        try:
            for item in self._scan(ctx):
                if isinstance(item, tuple):
                    row, digest = item  # a plain row: almost every item
                    collector.add_plain(row, digest)
                else:
                    collector.add(item)
        except Refused as exc:
            problems = collector.problems() + exc.problems
            raise _refusal(problems, exc.problems[0]) from None
        validation = collector.finish(ctx.digest.hexdigest())

        fatal = collector.fatal()
        if fatal is not None:
            raise _refusal(validation.problems, fatal)
        self._validation = validation
        self._stamp = ctx.stamp
        self._kept = collector.kept
        self._lines, self._digests = collector.lines, collector.digests
        return validation

    def rows(self) -> Iterator[ManifestRow]:
        """The rows without errors: those kept by validation, or else the
        file read again on each call.

        Exact repeats are included (``Validation.duplicate_of`` says which);
        rows in ``Validation.invalid_lines`` are not. Validates first if that
        has not been done. Raises ManifestError if a file read again has
        changed since it was validated.
        """
        validation = self._validation or self.validate()
        if self._kept is not None:
            invalid = validation.invalid_lines
            for row in self._kept:
                if row.line not in invalid:
                    yield row
            return

        ctx = self._context()

        lines, digests = self._lines, self._digests
        index = 0
        try:
            for item in self._scan(ctx, expect_stamp=self._stamp):
                if isinstance(item, tuple):
                    row, digest = item
                elif isinstance(item, Entry) and item.row is not None:
                    row, digest = item.row, item.digest
                else:
                    continue
                if (
                    index >= len(lines)
                    or lines[index] != row.line
                    or digests[index] != digest
                ):
                    raise Refused(_changed(ctx))
                index += 1
                if row.line not in validation.invalid_lines:
                    yield row
        except Refused as exc:
            raise _refusal(exc.problems, exc.problems[0]) from None

        if ctx.digest.hexdigest() != validation.sha256:
            changed = _changed(ctx)
            raise _refusal([changed], changed)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # the scan reports the file as unreadable


def _changed(ctx: ScanContext) -> Problem:
    return ctx.problem(
        None,
        None,
        "The file changed after it was validated; validate it again before use.",
        "changed",
    )
