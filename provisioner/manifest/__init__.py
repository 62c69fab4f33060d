"""Reading tenant manifests (CSV or YAML) and writing them back.

Public surface::

    Manifest(path, *, policy=NamePolicy(), limits=ManifestLimits(), delimiter=None)
        .format            "csv" or "yaml", from the extension
        .validate()        -> Validation: one pass, every problem at once
        .rows()            -> Iterator[ManifestRow]: the rows without errors
    Validation             problems, counts, invalid_lines, duplicate_of, sha256
    ManifestLimits         caps on size, rows, value length, YAML depth/aliases
    write_manifest(path, rows, fmt)

Columns: ``namespace`` (required), ``tenant_id``, ``account_id`` (32 lowercase
hex), ``trusted_workers`` (true or false; empty leaves the setting as it is),
``previous_name`` (rename from; same name policy); any other column is carried
as text in ``ManifestRow.extra`` to the report.

Every problem is a ``provisioner.errors.Problem`` naming the file, the line and
the field. Its ``code`` is stable, for tests and tooling:

    whole file (ManifestError):  unreadable, format, delimiter, too-big, empty,
        encoding, csv-syntax, yaml-syntax, header, repeated-column,
        missing-column, not-a-list, unknown-key, duplicate-key (top level),
        multiple-documents, same-line, alias-limit, depth-limit,
        too-many-rows, changed
    one row (error):  field-count, too-long, not-text, not-a-mapping,
        not-a-value, alias-entry, merge-key, duplicate-key, missing-namespace,
        name, account-id, boolean, conflict, case-conflict, rename-conflict,
        repeats-invalid
    warnings:  duplicate, rename-to-self, no-rows
"""

from provisioner.manifest.model import ManifestLimits, Validation
from provisioner.manifest.reader import Manifest
from provisioner.manifest.writer import write_manifest

__all__ = ["Manifest", "ManifestLimits", "Validation", "write_manifest"]
