"""Journal outcome records: one shape for every row, deletion and failure.

Each record carries what the report shows for its key (``row_key`` for a
manifest row, ``Deletion.key`` for an unmanaged namespace); the report is
rebuilt from the last record of each key.
"""

from __future__ import annotations

from typing import Any

from provisioner.errors import ApiError
from provisioner.models import ManifestRow, Namespace, Outcome
from provisioner.prune import Deletion


def row_key(line: int) -> str:
    """The journal key of a manifest row."""
    return f"line:{line}"


def row_base(row: ManifestRow, account: str) -> dict[str, Any]:
    return {
        "type": "outcome",
        "key": row_key(row.line),
        "line": row.line,
        "account_id": account,
        "namespace": row.namespace,
        "previous_name": row.previous_name,
        "columns": row.columns(),
    }


def settled(
    row: ManifestRow, account: str, outcome: Outcome, ns: Namespace, attempts: int
) -> dict[str, Any]:
    # Filled in, not merged into a new dict: a run builds one of these per row.
    record = row_base(row, account)
    record["outcome"] = outcome
    record["namespace_id"] = ns.namespace_id
    record["created_on"] = ns.created_on
    record["attempts"] = attempts
    record["error_code"] = None
    record["error_message"] = None
    return record


def failure_fields(exc: ApiError) -> dict[str, Any]:
    detail = exc.message
    if exc.status is not None and not detail.startswith("HTTP "):
        detail = f"HTTP {exc.status}: {detail}"
    return {
        "outcome": Outcome.FAILED,
        "attempts": exc.attempts,
        "error_code": exc.code,
        "error_message": detail,
    }


def failed(
    row: ManifestRow, account: str, exc: ApiError, *, attempts: int
) -> dict[str, Any]:
    return {
        **row_base(row, account),
        "namespace_id": None,
        "created_on": None,
        "attempts": attempts,
        **failure_fields(exc),
    }


def deletion_base(deletion: Deletion) -> dict[str, Any]:
    namespace = deletion.namespace
    return {
        "type": "outcome",
        "key": deletion.key,
        "line": None,
        "account_id": deletion.account_id,
        "namespace": namespace.namespace_name,
        "namespace_id": namespace.namespace_id,
        "created_on": namespace.created_on,
        "attempts": 0,
    }


def conflict(row: ManifestRow, account: str, reason: str) -> dict[str, Any]:
    return {
        **row_base(row, account),
        "outcome": Outcome.FAILED,
        "attempts": 0,
        "error_message": reason,
    }


def unattempted(row: ManifestRow, account: str) -> dict[str, Any]:
    return {**row_base(row, account), "outcome": Outcome.NOT_ATTEMPTED, "attempts": 0}
