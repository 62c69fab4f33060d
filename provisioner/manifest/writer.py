"""Writing rows as a manifest that ``Manifest`` reads back to the same rows.

Used by ``export``. The guarantee holds for rows as ``Manifest`` produces them:
extra column names trimmed and lowercase, and no empty optional values (an
empty value reads back as absent). ``ManifestRow.line`` is the one field that
changes, since it is where the row lands in the new file.

CSV gets a header of every column used, known columns first, in UTF-8 with
CRLF line ends; values with separators, quotes or line breaks are quoted by
the csv module. YAML is written by hand rather than by a dumper, so that every
string is double-quoted (no ``no`` or ``0123`` can turn into something else for
any reader) and ``trusted_workers`` is a bare ``true`` or ``false``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from provisioner.manifest.fields import KNOWN_COLUMNS
from provisioner.models import ManifestRow

_YAML_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def yaml_quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar that reads back unchanged.

    Printable characters are kept as they are; everything else, line breaks
    included, becomes an escape, so the scalar stays on one line.
    """
    out = ['"']
    for char in text:
        if char in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02X}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(f"\\U{ord(char):08X}")
    out.append('"')

    return "".join(out)


def _columns(rows: list[ManifestRow]) -> list[str]:
    seen: dict[str, None] = {"namespace": None}
    for row in rows:
        seen.update(dict.fromkeys(row.columns()))
    known = [c for c in KNOWN_COLUMNS if c in seen]

    return known + [c for c in seen if c not in known]


def _write_csv(out: TextIO, rows: list[ManifestRow]) -> None:
    columns = _columns(rows)
    # CRLF, as RFC 4180 has it: the csv module then quotes any value holding a
    # lone carriage return, which it would otherwise write bare.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        values = row.columns()
        writer.writerow([values.get(c, "") for c in columns])


def _write_yaml(out: TextIO, rows: list[ManifestRow]) -> None:
    if not rows:
        out.write("tenants: []\n")
        return
    out.write("tenants:\n")
    for row in rows:
        prefix = "  - "
        for name, value in row.columns().items():
            # trusted_workers is written as the bare word true or false.
            shown = value if name == "trusted_workers" else yaml_quoted(value)
            key = name if name in KNOWN_COLUMNS else yaml_quoted(name)
            out.write(f"{prefix}{key}: {shown}\n")
            prefix = "    "


def write_manifest(path: Path, rows: Iterable[ManifestRow], fmt: str) -> None:
    """Write ``rows`` to ``path`` as ``fmt`` ("csv" or "yaml"), atomically.

    The rows are gathered in memory first, since a CSV header must name every
    column before the first row. The file is written beside ``path`` and
    renamed over it, so a reader never sees half a manifest.
    """
    if fmt not in ("csv", "yaml"):
        raise ValueError(f"unknown manifest format {fmt!r}; use 'csv' or 'yaml'")
    rows = list(rows)
    path = Path(path)

    fd, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            if fmt == "csv":
                _write_csv(out, rows)
            else:
                _write_yaml(out, rows)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
