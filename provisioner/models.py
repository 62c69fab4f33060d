"""Plain data shared by the manifest, the client, the engine and the report."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.StrEnum):
    """What happened to one row (or one unmanaged namespace)."""

    CREATED = "created"
    EXISTING = "existing"
    UPDATED = "updated"
    RENAMED = "renamed"
    DELETED = "deleted"
    FAILED = "failed"
    INVALID = "invalid"
    NOT_ATTEMPTED = "not_attempted"


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One tenant request, as read from a manifest.

    ``line`` is the 1-based line where the row starts in its file. ``extra``
    holds every other column, in file order, carried through to the report.
    """

    line: int
    namespace: str
    tenant_id: str | None = None
    account_id: str | None = None
    trusted_workers: bool | None = None
    previous_name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def columns(self) -> dict[str, str]:
        """The row's own columns as strings, for the report."""
        out: dict[str, str] = {"namespace": self.namespace}
        if self.tenant_id is not None:
            out["tenant_id"] = self.tenant_id
        if self.account_id is not None:
            out["account_id"] = self.account_id
        if self.trusted_workers is not None:
            out["trusted_workers"] = "true" if self.trusted_workers else "false"
        if self.previous_name is not None:
            out["previous_name"] = self.previous_name
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class Namespace:
    """A dispatch namespace as the API describes it; every field may be absent."""

    namespace_id: str | None
    namespace_name: str
    created_on: str | None = None
    modified_on: str | None = None
    script_count: int | None = None
    trusted_workers: bool | None = None

    @classmethod
    def from_api(cls, raw: Any) -> Namespace:
        """Build from a ``result`` object, ignoring what is missing or mistyped."""
        if not isinstance(raw, dict):
            raise ValueError("namespace object is not a JSON object")
        get = raw.get
        name = get("namespace_name")
        if not isinstance(name, str):
            raise ValueError("namespace object has no namespace_name")

        namespace_id = get("namespace_id")
        created_on = get("created_on")
        modified_on = get("modified_on")
        count = get("script_count")
        trusted = get("trusted_workers")
        return cls(
            namespace_id if isinstance(namespace_id, str) else None,
            name,
            created_on if isinstance(created_on, str) else None,
            modified_on if isinstance(modified_on, str) else None,
            count if isinstance(count, int) else None,
            trusted if isinstance(trusted, bool) else None,
        )
