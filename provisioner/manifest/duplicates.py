"""Checks across rows: repeated namespaces and renames that collide.

A row that repeats an earlier one exactly is a warning and is provisioned once
(``Validation.duplicate_of``). Rows that share a namespace but differ in any
other value, or whose namespaces differ only in case, are errors for every row
concerned: the tool cannot tell which one the user meant. A name that two rows
rename from, or that one row renames away while another keeps it, is an error
for both.

Memory: one dictionary entry per distinct namespace (its case-folded name and a
packed integer), about 150 bytes, so a million rows need about 150 MB. The rest
of the row is not kept; whether two rows are identical is decided by a 64-bit
hash of their values, where a false match has odds of about 2**-64 per pair of
rows sharing a namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.errors import Problem
from provisioner.manifest.model import RowValues

_DIGEST_BITS = 64
_DIGEST_MASK = (1 << _DIGEST_BITS) - 1
_MAX_LINES_LISTED = 10


@dataclass(frozen=True, slots=True)
class _Seen:
    line: int
    spelling: str
    digest: int


def row_digest(values: RowValues) -> int:
    """A 64-bit digest of a row's non-empty values, independent of their order.

    A YAML ``no`` and ``"no"`` differ: one is refused, the other accepted.
    Python's string hash is keyed per process, which is all a single pass needs.
    """
    if "" in values.text.values():
        written = frozenset((name, text) for name, text in values.text.items() if text)
    else:
        written = frozenset(values.text.items())
    typed = frozenset(values.not_text or ())

    return hash((written, typed)) & _DIGEST_MASK


def record_digest(record: list[str]) -> int:
    """``row_digest`` for a CSV record, from its list of values alone.

    Every record of a CSV file has the header's columns in the header's order,
    so two records have the same values exactly when their lists are equal;
    hashing the list skips building a set of (column, value) pairs per row.
    """
    return hash(tuple(record)) & _DIGEST_MASK


def lines_text(lines: list[int]) -> str:
    """``line 4``, ``lines 4 and 9``, ``lines 4, 9, … and 12 more``."""
    if len(lines) == 1:
        return f"line {lines[0]}"
    shown = [str(n) for n in lines[:_MAX_LINES_LISTED]]
    if len(lines) > _MAX_LINES_LISTED:
        return f"lines {', '.join(shown)} and {len(lines) - len(shown)} more"

    return f"lines {', '.join(shown[:-1])} and {shown[-1]}"


class DuplicateTracker:
    """Remembers each namespace's first row and reports repeats at the end."""

    def __init__(self, file: str) -> None:
        self._file = file
        # Folded name -> first line and digest packed into one int (compact).
        self._first: dict[str, int] = {}
        # Folded name -> first spelling, kept only where it differs from the key.
        self._spellings: dict[str, str] = {}
        self._repeats: dict[str, list[_Seen]] = {}
        self._renames: dict[str, list[_Seen]] = {}

    def _first_seen(self, key: str) -> _Seen | None:
        packed = self._first.get(key)
        if packed is None:
            return None

        return _Seen(
            packed >> _DIGEST_BITS, self._spellings.get(key, key), packed & _DIGEST_MASK
        )

    def add(self, line: int, name: str, previous: str, digest: int) -> None:
        """Note one row by its namespace and previous name as written ("" for
        none) and its digest; rows without a namespace take no part."""
        if name == "":
            return
        key = name.casefold()

        # A namespace's first row, the common case, builds no _Seen.
        if key not in self._first:
            self._first[key] = line << _DIGEST_BITS | digest
            if name != key:
                self._spellings[key] = name
        else:
            first = self._first_seen(key)
            assert first is not None
            self._repeats.setdefault(key, [first]).append(_Seen(line, name, digest))
            if (name, digest) == (first.spelling, first.digest):
                return  # an exact repeat renames nothing the first row does not
        if previous != "":
            self._note_rename(line, name, previous)

    def _note_rename(self, line: int, name: str, previous: str) -> None:
        if previous.casefold() == name.casefold():
            return  # renaming to itself is a warning of the row's own
        self._renames.setdefault(previous.casefold(), []).append(
            _Seen(line, previous, 0)
        )

    def _problem(
        self, line: int, field: str, message: str, code: str, severity: str = "error"
    ) -> tuple[int, Problem]:
        return line, Problem(self._file, line, field, message, severity, code)

    def _repeat_problems(self, group: list[_Seen]) -> list[tuple[int, Problem]]:
        first = group[0]
        if all((s.spelling, s.digest) == (first.spelling, first.digest) for s in group):
            return [
                self._problem(
                    s.line,
                    "namespace",
                    f"This row repeats line {first.line} exactly; namespace "
                    f"{s.spelling!r} is provisioned once.",
                    "duplicate",
                    "warning",
                )
                for s in group[1:]
            ]

        out = []
        for s in group:
            other_spellings = [o for o in group if o.spelling != s.spelling]
            if other_spellings:
                shown = ", ".join(sorted({repr(o.spelling) for o in other_spellings}))
                where = lines_text([o.line for o in other_spellings])
                message = (
                    f"Namespace {s.spelling!r} differs only in case from {shown} "
                    f"on {where}; the API may treat them as one namespace, so keep "
                    "one spelling."
                )
                code = "case-conflict"
            else:
                where = lines_text([o.line for o in group if o is not s])
                message = (
                    f"Namespace {s.spelling!r} is also on {where} with other "
                    "values; keep one row per namespace (exact repeats are "
                    "allowed)."
                )
                code = "conflict"
            out.append(self._problem(s.line, "namespace", message, code))
        return out

    def _rename_problems(
        self, key: str, renamers: list[_Seen]
    ) -> list[tuple[int, Problem]]:
        out = []
        if len(renamers) > 1:
            for r in renamers:
                where = lines_text([o.line for o in renamers if o is not r])
                out.append(
                    self._problem(
                        r.line,
                        "previous_name",
                        f"previous_name {r.spelling!r} is also renamed from on "
                        f"{where}; a namespace can be renamed only once, so keep "
                        "one of these rows.",
                        "rename-conflict",
                    )
                )

        kept = self._first_seen(key)
        if kept is not None:
            for r in renamers:
                out.append(
                    self._problem(
                        r.line,
                        "previous_name",
                        f"previous_name {r.spelling!r} is the namespace of line "
                        f"{kept.line}, which keeps it; a name cannot be renamed "
                        "away and kept at once.",
                        "rename-conflict",
                    )
                )
                out.append(
                    self._problem(
                        kept.line,
                        "namespace",
                        f"Namespace {kept.spelling!r} is renamed away by "
                        f"previous_name on line {r.line}; remove one of the two "
                        "rows, or rename in two runs.",
                        "rename-conflict",
                    )
                )
        return out

    def finish(self) -> tuple[list[tuple[int, Problem]], dict[int, int]]:
        """(row line, problem) pairs, and each exact repeat's first line."""
        found: list[tuple[int, Problem]] = []
        duplicate_of: dict[int, int] = {}
        for group in self._repeats.values():
            problems = self._repeat_problems(group)
            found.extend(problems)
            for line, problem in problems:
                if problem.code == "duplicate":
                    duplicate_of[line] = group[0].line

        for key, renamers in self._renames.items():
            found.extend(self._rename_problems(key, renamers))

        return found, duplicate_of
