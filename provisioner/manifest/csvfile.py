"""Reading a CSV manifest as a stream of rows, a block of lines at a time.

The file is read in binary, a few kilobytes of whole lines at a time, and a
block with any fault in it is gone through line by line, so a byte that is not
UTF-8 is reported with its line, and memory holds one block and one record at
a time whatever the file's size. The header is the first non-blank line; its
names are trimmed and case-folded. Without an explicit delimiter, the one among
comma, semicolon and tab that splits the header into the most columns, one of
them ``namespace``, is used. A record's line is the physical line where it
starts (a quoted value may hold line breaks).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from provisioner.manifest.duplicates import record_digest
from provisioner.manifest.fields import PlainRecords, build_row
from provisioner.manifest.model import (
    Blank,
    Entry,
    Header,
    Refused,
    RowValues,
    ScanContext,
    ScanItem,
)
from provisioner.manifest.text import (
    UTF8_BOM,
    check_start,
    refuse_nul,
    refuse_undecodable,
)

DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}


# Bytes read at a time after the first line, then up to the end of the line:
# small enough that a block and its text stay a few tens of kilobytes.
_BLOCK_BYTES = 8 * 1024


class _Lines:
    """The file's physical lines as text, hashed and checked, in file order.

    The file is read a block of lines at a time. A block where no line can be
    at fault (no longer than the line limit, within the file limit, UTF-8
    without NUL) is hashed and decoded at once, and the csv module takes its
    lines without a step per line in Python: most of a manifest's cost is per
    line. The first line, and any other block, go line by line through
    ``_checked``, which refuses the first line at fault as it is reached.
    """

    def __init__(
        self, handle: BinaryIO, ctx: ScanContext, block_bytes: int = _BLOCK_BYTES
    ) -> None:
        self._handle = handle
        self._ctx = ctx
        self._block_bytes = block_bytes
        self.line_no = 0
        self.bytes_read = 0

    def texts(self) -> Iterator[str]:
        """Each physical line as text, its line break kept."""
        return itertools.chain.from_iterable(self._blocks())

    def _blocks(self) -> Iterator[Iterable[str]]:
        max_line_bytes = self._ctx.limits.max_line_bytes
        # The first line alone: it may open with a byte order mark.
        yield self._checked(self._handle.readline(max_line_bytes + 1))
        while block := self._handle.read(self._block_bytes):
            if not block.endswith(b"\n"):
                block += self._handle.readline(max_line_bytes + 1)
            text = self._clean_text(block)
            if text is None:
                yield self._checked(block)
                continue

            # A clean block is hashed, counted and split into lines at once.
            self._ctx.digest.update(block)
            self.bytes_read += len(block)
            self.line_no += text.count("\n")
            if not text.endswith("\n"):
                self.line_no += 1  # the file's last line, without a line break
            # newline="\n": lines end at "\n" only, as in the bytes, unchanged.
            yield io.StringIO(text, newline="\n")

    def _clean_text(self, block: bytes) -> str | None:
        """The block as text when no line in it can be at fault, else None."""
        limits = self._ctx.limits
        if len(block) > limits.max_line_bytes:
            return None
        if self.bytes_read + len(block) > limits.max_file_bytes:
            return None
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            return None

        return None if "\x00" in text else text

    def _checked(self, block: bytes) -> Iterator[str]:
        """The block's lines one at a time, each checked when it is reached."""
        ctx = self._ctx
        max_line_bytes = ctx.limits.max_line_bytes
        lines = io.BytesIO(block)
        while raw := lines.readline(max_line_bytes + 1):
            self.line_no += 1
            self.bytes_read += len(raw)
            ctx.digest.update(raw)

            if len(raw) > max_line_bytes:
                raise Refused(
                    ctx.problem(
                        self.line_no,
                        None,
                        f"Line {self.line_no} is longer than {max_line_bytes:,} "
                        "bytes (limits.max_line_bytes); is this really a CSV "
                        "manifest?",
                        "too-long",
                    )
                )
            if self.bytes_read > ctx.limits.max_file_bytes:
                raise _too_big(ctx, self.bytes_read)
            if self.line_no == 1:
                check_start(ctx, raw[:4])
                raw = raw.removeprefix(UTF8_BOM)
            if b"\x00" in raw:
                raise refuse_nul(ctx, self.line_no)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise refuse_undecodable(ctx, self.line_no, raw, exc) from None
            yield text


def _too_big(ctx: ScanContext, size_bytes: int) -> Refused:
    limit = ctx.limits.max_file_bytes
    return Refused(
        ctx.problem(
            None,
            None,
            f"The file is {size_bytes:,} bytes, over the limit of {limit:,} "
            "(limits.max_file_bytes); split it into several manifests.",
            "too-big",
        )
    )


def sniff_delimiter(header_line: str) -> str:
    """The delimiter that best splits a header line holding ``namespace``."""
    best, best_score = DELIMITERS[0], (False, 1)
    for candidate in DELIMITERS:
        try:
            fields = next(csv.reader([header_line], delimiter=candidate), [])
        except csv.Error:
            continue  # the real parse reports the same fault with its line
        names = {name.strip().casefold() for name in fields}
        score = ("namespace" in names, len(fields))
        if score > best_score:
            best, best_score = candidate, score

    return best


def _csv_error(ctx: ScanContext, line: int, error: csv.Error) -> Refused:
    """A csv module error as a sentence that says where to look."""
    text = str(error)
    if "field larger than field limit" in text:
        message = (
            f"A value starting on line {line} is longer than "
            f"{csv.field_size_limit():,} characters; a double quote that is never "
            f"closed makes the rest of the file one value, so check the quotes "
            f"from line {line} on."
        )
    elif "unexpected end of data" in text:
        message = (
            f"The file ends inside a quoted value that starts on line {line}; "
            "close the double quote."
        )
    elif "expected after" in text:
        message = (
            f"The record starting on line {line} has text right after a closing "
            'double quote; a quote inside a quoted value is written twice ("").'
        )
    elif "new-line character" in text:
        message = (
            f"The record starting on line {line} holds a carriage return that "
            "does not end a line; save the file with ordinary line endings."
        )
    else:
        message = f"The record starting on line {line} is not valid CSV ({text})."

    return Refused(ctx.problem(line, None, message, "csv-syntax"))


def _header_columns(
    ctx: ScanContext, line: int, header: list[str], delimiter: str
) -> list[str]:
    """Trimmed, case-folded column names; refuses unusable headers."""
    columns = [name.strip().casefold() for name in header]
    problems = []
    first_column: dict[str, int] = {}
    for number, name in enumerate(columns, start=1):
        if name == "":
            problems.append(
                ctx.problem(
                    line,
                    None,
                    f"Column {number} of the header has no name; name it, or remove "
                    "the separator that makes it.",
                    "header",
                )
            )
        elif name in first_column:
            problems.append(
                ctx.problem(
                    line,
                    name,
                    f"The header names column {name!r} twice (columns "
                    f"{first_column[name]} and {number}); keep one.",
                    "repeated-column",
                )
            )
        else:
            first_column[name] = number

    if "namespace" not in first_column:
        found = ", ".join(repr(name) for name in columns)
        hint = ""
        others = [d for d in DELIMITERS if d != delimiter and d in "".join(header)]
        if len(columns) == 1 and others:
            hint = (
                f" The header reads as one column split by "
                f"{_DELIMITER_NAMES.get(delimiter, repr(delimiter))}; is the file "
                f"separated by {_DELIMITER_NAMES[others[0]]}s?"
            )
        problems.append(
            ctx.problem(
                line,
                "namespace",
                f"The header has no namespace column (found {found}); add one "
                f"holding each row's namespace name.{hint}",
                "missing-column",
            )
        )
    if problems:
        raise Refused(*problems)
    return columns


def _field_count_message(line: int, found: int, expected: int, sep: str) -> str:
    if found > expected:
        fix = (
            f"a value holding {sep!r} must be in double quotes, and extra "
            "separators at the end must go"
        )
    else:
        fix = "add the missing separators (an empty value is allowed)"

    return (
        f"Line {line} has {found} value{'s' if found != 1 else ''} but the header "
        f"has {expected} columns; "
        f"{fix}. The row is not used."
    )


def scan_csv(handle: BinaryIO, ctx: ScanContext) -> Iterator[ScanItem]:
    """Yield the header, then each record as an Entry or a Blank."""
    lines = _Lines(handle, ctx).texts()
    header_line, first = 0, None
    for text in lines:
        header_line += 1
        if text.strip():
            first = text
            break
    if first is None:
        raise Refused(
            ctx.problem(
                None,
                None,
                "The file is empty; a CSV manifest starts with a header line such "
                "as 'namespace,tenant_id'.",
                "empty",
            )
        )
    delimiter = ctx.delimiter or sniff_delimiter(first)
    reader = csv.reader(
        itertools.chain([first], lines), delimiter=delimiter, strict=True
    )
    try:
        header = next(reader)
    except csv.Error as exc:
        raise _csv_error(ctx, header_line, exc) from None
    columns = _header_columns(ctx, header_line, header, delimiter)
    plain = PlainRecords(ctx, columns)
    yield Header(columns)

    while True:
        # The reader counts the lines it takes, the header's included.
        line = header_line + reader.line_num
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _csv_error(ctx, line, exc) from None

        joined = "".join(record)
        if not joined.strip():
            yield Blank(line)
        elif len(record) != len(columns):
            message = _field_count_message(line, len(record), len(columns), delimiter)
            problem = ctx.problem(line, None, message, "field-count")
            yield Entry(line, None, None, [problem])
        else:
            row = plain.row(line, record, len(joined))
            if row is not None:
                # A plain row holds its values itself; its record needs no dict.
                yield row, record_digest(record)
                continue
            values = RowValues(dict(zip(columns, record, strict=True)))
            row, problems = build_row(ctx, line, values)
            yield Entry(line, values, row, problems, record_digest(record))
