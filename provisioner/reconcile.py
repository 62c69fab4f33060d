"""Desired against actual: what each manifest row needs, decided from one LIST.

Pure functions over plain data; nothing here sends a request. The runner
(``provisioner.runner``) carries the decisions out, and ``plan`` prints them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from provisioner.models import ManifestRow, Namespace
from provisioner.names import url_safe

# field -> (value now, value wanted)
Changes = dict[str, tuple[object, object]]


class Action(enum.StrEnum):
    """What a row needs."""

    ADOPT = "adopt"  # the namespace exists as asked: record it, send nothing
    CREATE = "create"
    UPDATE = "update"  # exists, but a setting differs
    RENAME = "rename"  # the previous name exists, the new one does not
    CONFLICT = "conflict"  # cannot be decided safely; an error for the row


@dataclass(frozen=True, slots=True)
class Decision:
    """One row's action, with what it acts on."""

    row: ManifestRow
    account_id: str
    action: Action
    existing: Namespace | None = None
    changes: Changes = field(default_factory=dict)
    reason: str = ""

    @property
    def changes_account(self) -> bool:
        """True when carrying it out sends a mutating call."""
        return self.action in (Action.CREATE, Action.UPDATE, Action.RENAME)


def decide(
    row: ManifestRow, account_id: str, actual: Mapping[str, Namespace]
) -> Decision:
    """The action for one row, given the account's namespaces by name."""
    current = actual.get(row.namespace)
    previous = actual.get(row.previous_name) if row.previous_name else None

    if row.previous_name and row.previous_name != row.namespace:
        if current is not None and previous is not None:
            return Decision(
                row,
                account_id,
                Action.CONFLICT,
                reason=(
                    f"both {row.previous_name!r} and {row.namespace!r} exist; "
                    "a rename would collide. Remove previous_name or one namespace."
                ),
            )
        if current is None and previous is not None:
            if not url_safe(row.previous_name):
                return Decision(
                    row,
                    account_id,
                    Action.CONFLICT,
                    reason=f"previous name {row.previous_name!r} is unsafe in a URL",
                )
            changes: Changes = {"namespace_name": (row.previous_name, row.namespace)}
            changes.update(_setting_changes(row, previous))
            return Decision(row, account_id, Action.RENAME, previous, changes)
        if current is None and previous is None:
            return Decision(
                row,
                account_id,
                Action.CONFLICT,
                reason=(
                    f"neither {row.previous_name!r} nor {row.namespace!r} exists; "
                    "nothing to rename. Remove previous_name to create it."
                ),
            )

    if current is None:
        changes = {}
        if row.trusted_workers:
            changes["trusted_workers"] = (False, True)
        return Decision(row, account_id, Action.CREATE, None, changes)

    changes = _setting_changes(row, current)
    if changes:
        return Decision(row, account_id, Action.UPDATE, current, changes)
    return Decision(row, account_id, Action.ADOPT, current)


def _setting_changes(row: ManifestRow, current: Namespace) -> Changes:
    if row.trusted_workers is None:
        return {}
    have = bool(current.trusted_workers)
    if have == row.trusted_workers:
        return {}
    return {"trusted_workers": (have, row.trusted_workers)}


def unmanaged(
    actual: Iterable[Namespace], wanted: set[str], previous: set[str]
) -> list[Namespace]:
    """Namespaces in the account that no row names (nor renames from)."""
    return sorted(
        (
            ns
            for ns in actual
            if ns.namespace_name not in wanted and ns.namespace_name not in previous
        ),
        key=lambda ns: ns.namespace_name,
    )
