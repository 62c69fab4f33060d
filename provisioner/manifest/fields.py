"""Rules for the values of one row, the same for CSV and YAML.

Empty means absent: an empty optional value leaves the setting as it is and an
empty extra column is left out of ``ManifestRow.extra``. Nothing is trimmed,
lowercased or otherwise fixed on the user's behalf; each message says what to
change instead.
"""

from __future__ import annotations

import re

from provisioner.errors import Problem
from provisioner.manifest.model import RowValues, ScanContext
from provisioner.models import ManifestRow

KNOWN_COLUMNS = (
    "namespace",
    "tenant_id",
    "account_id",
    "trusted_workers",
    "previous_name",
)
_KNOWN_NAMES = frozenset(KNOWN_COLUMNS)
_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_BOOLEANS = {"true": True, "false": False}
_YAML_BOOLEAN_WORDS = frozenset(
    {"yes", "no", "on", "off", "y", "n", "1", "0", "t", "f"}
)


def _sentence(text: str) -> str:
    """Close a message with a full stop (field names open some, lowercase)."""
    return text if text.endswith(".") else text + "."


_NO_NAMES: frozenset[str] = frozenset()


class _RowCheck:
    """Collects the problems of one row while its fields are read."""

    __slots__ = ("ctx", "line", "problems", "skip", "values")

    def __init__(self, ctx: ScanContext, line: int, values: RowValues) -> None:
        self.ctx = ctx
        self.line = line
        self.values = values
        self.skip: frozenset[str] = _NO_NAMES
        self.problems: list[Problem] = []

    def error(self, name: str, message: str, code: str) -> None:
        line = self.values.line_of(name, self.line)
        self.problems.append(self.ctx.problem(line, name, _sentence(message), code))

    def warning(self, name: str, message: str, code: str) -> None:
        line = self.values.line_of(name, self.line)
        self.problems.append(
            self.ctx.problem(line, name, _sentence(message), code, "warning")
        )

    def raw(self, name: str) -> str | None:
        """The value of ``name`` as written, or None when empty or skipped."""
        value = self.values.text.get(name)
        if not value or name in self.skip:
            return None

        return value

    def text(self, name: str) -> str | None:
        """The value of column ``name`` as text, or None when empty or unusable."""
        value = self.raw(name)
        if value is None or self.values.not_text is None:
            return value
        advice = self.values.not_text.get(name)
        if advice is not None:
            self.error(name, f"{name} {value!r} is not text: {advice}", "not-text")
            return None

        return value

    def name(self, name: str) -> str | None:
        """A namespace name, checked against the name policy."""
        value = self.text(name)
        if value is None:
            return None
        problems = self.ctx.policy.problems(value)
        for message in problems:
            self.error(name, message, "name")

        return None if problems else value

    def account_id(self) -> str | None:
        value = self.text("account_id")
        if value is None or _ACCOUNT_ID.fullmatch(value):
            return value

        if _ACCOUNT_ID.fullmatch(value.strip()):
            advice = "it has spaces around it; remove them (values are never trimmed)"
        elif _ACCOUNT_ID.fullmatch(value.lower()):
            advice = (
                f"it has uppercase letters; write it in lowercase: {value.lower()!r}"
            )
        elif _HEX.fullmatch(value):
            advice = (
                f"it has {len(value)} hexadecimal characters where an account id "
                "has 32; copy it again from the dashboard URL"
            )
        else:
            advice = (
                "an account id is 32 lowercase hexadecimal characters (0-9, a-f), "
                "as in the dashboard URL"
            )
        self.error(
            "account_id",
            f"account_id {value!r} is not an account id: {advice}",
            "account-id",
        )
        return None

    def trusted_workers(self) -> bool | None:
        value = self.raw("trusted_workers")
        if value is None:
            return None
        if value in _BOOLEANS:
            return _BOOLEANS[value]

        if value.lower() in _BOOLEANS:
            advice = f"write it in lowercase: {value.lower()}"
        elif value.lower() in _YAML_BOOLEAN_WORDS:
            advice = (
                "write true or false; words such as yes, on or 1 are refused "
                "because YAML 1.1 and YAML 1.2 read them differently"
            )
        else:
            advice = "write true or false, or leave it empty to keep the setting"
        self.error(
            "trusted_workers",
            f"trusted_workers {value!r} is not true or false: {advice}",
            "boolean",
        )
        return None

    def check_lengths(self) -> None:
        """Flag values over the length limit and leave them out of later checks."""
        limit = self.ctx.limits.max_field_chars
        for name, value in self.values.text.items():
            if len(value) > limit:
                self.skip |= {name}
                self.error(
                    name,
                    f"The value of {name} is {len(value):,} characters long, "
                    f"over the limit of {limit:,} (limits.max_field_chars); a "
                    "double quote left open makes the following lines one value, "
                    "so check the quotes",
                    "too-long",
                )


def build_row(
    ctx: ScanContext, line: int, values: RowValues
) -> tuple[ManifestRow | None, list[Problem]]:
    """Check one row's values; the row is None when any problem is an error."""
    check = _RowCheck(ctx, line, values)
    check.check_lengths()

    known_problems = len(check.problems)
    namespace = check.name("namespace")
    unexplained = len(check.problems) == known_problems
    if namespace is None and unexplained and "namespace" not in check.skip:
        absent = "namespace" not in values.text
        check.error(
            "namespace",
            f"{'The row has no namespace' if absent else 'namespace is empty'}; "
            "every row needs the name of its namespace",
            "missing-namespace",
        )
    tenant_id = check.text("tenant_id")
    account_id = check.account_id()
    trusted_workers = check.trusted_workers()
    previous_name = check.name("previous_name")
    if previous_name is not None and previous_name == namespace:
        check.warning(
            "previous_name",
            f"previous_name {previous_name!r} is the namespace itself, so there is "
            "nothing to rename; leave previous_name empty",
            "rename-to-self",
        )
    extra = {
        name: value
        for name, value in values.text.items()
        if value and name not in KNOWN_COLUMNS and name not in check.skip
    }

    for problem in check.problems:
        if problem.severity == "error":
            return None, check.problems
    if namespace is None:
        return None, check.problems
    row = ManifestRow(
        line=line,
        namespace=namespace,
        tenant_id=tenant_id,
        account_id=account_id,
        trusted_workers=trusted_workers,
        previous_name=previous_name,
        extra=extra,
    )
    return row, check.problems


class PlainRecords:
    """Builds the rows of one CSV file that pass every check at a glance.

    Almost every row of a real manifest is plain: short values, a namespace
    the policy accepts, and an account id, a boolean and a previous name, where
    given, that are good as written. Such a row has no problem at all. Every
    record of a CSV file has the header's columns in the header's order, so
    where each column sits is worked out once, here, and ``row`` reads values
    by position, without building a dict of them per row.

    ``row`` returns None at the first doubt, and the record then takes the
    full check, ``build_row``, which alone writes messages. Each test in
    ``row`` is the accept case of one check there, so both build the same row.
    """

    def __init__(self, ctx: ScanContext, columns: list[str]) -> None:
        self._policy = ctx.policy
        self._max_field_chars = ctx.limits.max_field_chars
        at = {name: index for index, name in enumerate(columns)}
        self._namespace_at = at["namespace"]
        self._tenant_id_at = at.get("tenant_id")
        self._account_id_at = at.get("account_id")
        self._trusted_workers_at = at.get("trusted_workers")
        self._previous_name_at = at.get("previous_name")
        self._extra_at = [
            (index, name)
            for index, name in enumerate(columns)
            if name not in _KNOWN_NAMES
        ]

    def row(self, line: int, record: list[str], chars: int) -> ManifestRow | None:
        """The row of a record with the header's columns, or None if in doubt.

        ``chars`` is the length of the record's values together: when it is
        within the limit for one value, no value can be over that limit.
        """
        if chars > self._max_field_chars:
            return None

        # An optional column absent from the header reads as an empty value.
        at = self._tenant_id_at
        tenant_id = None if at is None else record[at] or None
        at = self._account_id_at
        account_id = None if at is None else record[at] or None
        at = self._trusted_workers_at
        trusted_text = None if at is None else record[at] or None
        at = self._previous_name_at
        previous_name = None if at is None else record[at] or None
        namespace = record[self._namespace_at]
        if not (
            namespace
            and self._policy.accepts(namespace)
            and (account_id is None or _ACCOUNT_ID.fullmatch(account_id))
            and (trusted_text is None or trusted_text in _BOOLEANS)
            # A rename to the row's own name is a warning, which build_row gives.
            and (
                previous_name is None
                or (previous_name != namespace and self._policy.accepts(previous_name))
            )
        ):
            return None

        extra = {}
        for index, name in self._extra_at:
            if record[index]:
                extra[name] = record[index]

        # Positional, in ManifestRow's field order: keywords cost more on this
        # hottest line of the pass; the tests compare the row with build_row's.
        return ManifestRow(
            line,
            namespace,
            tenant_id,
            account_id,
            None if trusted_text is None else _BOOLEANS[trusted_text],
            previous_name,
            extra,
        )
