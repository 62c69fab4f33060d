"""`plan`: what `apply` would do, from one LIST per account; nothing else is sent."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from provisioner.client import ApiClient
from provisioner.errors import ApiError, CredentialsRefusedError, SettingsError
from provisioner.manifest import Manifest, Validation
from provisioner.models import ManifestRow, Namespace
from provisioner.names import url_safe
from provisioner.prune import (
    DEFAULT_THRESHOLD,
    PrunePlan,
    PruneRefusedError,
    plan_prune,
)
from provisioner.reconcile import Action, Decision, decide, unmanaged
from provisioner.retry import RetryPolicy

log = structlog.get_logger("provisioner.plan")


@dataclass
class AccountView:
    """An account's namespaces by name, or why it could not be listed."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    refused: ApiError | None = None


async def list_accounts(
    client: ApiClient, policy: RetryPolicy, accounts: Iterable[str]
) -> dict[str, AccountView]:
    """One LIST per account; an account that refuses it is marked, not fatal."""
    views: dict[str, AccountView] = {}
    for account in sorted(accounts):
        view = AccountView()
        views[account] = view
        try:
            listed = await policy.call(
                functools.partial(client.list_namespaces, account),
                op="list",
                name=account,
                idempotent=True,
            )
        except ApiError as exc:
            # Refused (401/403/404), or unreachable past every retry: the
            # account fails alone; the others go on.
            view.refused = exc
            log.error(
                "account_refused",
                account_id=account,
                status=exc.status,
                error=exc.message,
            )
            continue
        view.namespaces = {ns.namespace_name: ns for ns in listed.value}
        log.info("account_listed", account_id=account, namespaces=len(view.namespaces))
    return views


def accounts_of(
    rows: Iterable[ManifestRow], default: str | None, *, source: str = "manifest"
) -> dict[str, set[str]]:
    """Account -> names the manifest wants there (previous names included).

    A row with no account_id when no default account is set is a
    SettingsError naming its line. With no rows, the default account is
    listed all the same (its namespaces are all unmanaged).
    """
    wanted: dict[str, set[str]] = {}
    for row in rows:
        account = row.account_id or default
        if account is None:
            raise SettingsError(_no_account_message(source, row.line))
        names = wanted.setdefault(account, set())
        names.add(row.namespace)
        if row.previous_name:
            names.add(row.previous_name)
    if not wanted and default is not None:
        wanted[default] = set()
    return wanted


def wanted_accounts(
    manifest: Manifest, validation: Validation, default: str | None
) -> dict[str, set[str]]:
    """``accounts_of`` the manifest's valid rows, from what validation
    counted when it could (no second reading of the file), else from a pass."""
    source = str(manifest.path)
    counted = validation.names_by_account
    if counted is None:
        return accounts_of(manifest.rows(), default, source=source)

    first_without = validation.first_line_without_account
    if default is None and first_without is not None:
        raise SettingsError(_no_account_message(source, first_without))
    wanted: dict[str, set[str]] = {}
    for account, names in counted.items():
        key = account or default
        assert key is not None
        wanted.setdefault(key, set()).update(names)
    if not wanted and default is not None:
        wanted[default] = set()
    return wanted


def _no_account_message(source: str, line: int) -> str:
    return (
        f"{source}:{line}: the row has no account_id and no default "
        "account is set; set CLOUDFLARE_ACCOUNT_ID."
    )


@dataclass
class Plan:
    """Every row's decision, the unmanaged namespaces, and refused accounts."""

    decisions: list[Decision]
    unmanaged: dict[str, list[Namespace]]
    refused: dict[str, str]
    invalid_rows: int = 0
    credentials_refused: bool = False
    prune: PrunePlan | None = None
    prune_refused: str | None = None

    def counts(self) -> dict[str, int]:
        """Rows by action, plus unmanaged namespaces."""
        counts = Counter(d.action.value for d in self.decisions)
        out = {action.value: counts.get(action.value, 0) for action in Action}
        out["delete"] = len(self.prune.deletions) if self.prune else 0
        loose = sum(len(v) for v in self.unmanaged.values())
        out["unmanaged"] = loose - out["delete"]
        return out

    @property
    def has_changes(self) -> bool:
        """True when apply would send a call that changes an account."""
        deleting = bool(self.prune and self.prune.deletions)
        return deleting or any(d.changes_account for d in self.decisions)

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data."""
        return {
            "counts": self.counts(),
            "changes_pending": self.has_changes,
            "refused_accounts": self.refused,
            "prune_refused": self.prune_refused,
            "deletions": [
                {
                    "account_id": d.account_id,
                    "namespace": d.namespace.namespace_name,
                    "namespace_id": d.namespace.namespace_id,
                }
                for d in (self.prune.deletions if self.prune else [])
            ],
            "rows": [_decision_json(d) for d in self.decisions],
            "unmanaged": [
                {
                    "account_id": account,
                    "namespace": ns.namespace_name,
                    "namespace_id": ns.namespace_id,
                    "url_safe": url_safe(ns.namespace_name),
                }
                for account, namespaces in sorted(self.unmanaged.items())
                for ns in namespaces
            ],
        }

    def render_text(self) -> str:
        """The plan for people, one line per change."""
        lines = []
        for d in self.decisions:
            if d.action is Action.ADOPT:
                continue
            lines.append(_decision_line(d))
        deleting = {
            (d.account_id, d.namespace.namespace_name)
            for d in (self.prune.deletions if self.prune else [])
        }
        for account, namespaces in sorted(self.unmanaged.items()):
            for ns in namespaces:
                name = ns.namespace_name
                if (account, name) in deleting:
                    lines.append(
                        f"  - delete {name} [{account}] (id {ns.namespace_id}; "
                        "deletes every Worker in it)"
                    )
                    continue
                note = "" if url_safe(name) else " (unsafe name: never deleted)"
                lines.append(
                    f"  ? unmanaged {name} [{account}]{note}: "
                    "in the account, not in the manifest; left alone"
                )
        if self.prune_refused:
            lines.append(f"  ! prune refused: {self.prune_refused}")
        for account, reason in sorted(self.refused.items()):
            lines.append(f"  ! account {account} refused: {reason}")
        counts = self.counts()
        lines.append(
            "Plan: {create} to create, {update} to update, {rename} to rename, "
            "{delete} to delete, {adopt} existing, {conflict} in conflict, "
            "{unmanaged} unmanaged.".format(**counts)
        )
        return "\n".join(lines)


_SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.RENAME: ">",
    Action.CONFLICT: "!",
    Action.ADOPT: "=",
}


def _decision_line(d: Decision) -> str:
    changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in d.changes.items())
    detail = d.reason or changes
    suffix = f" ({detail})" if detail else ""
    return (
        f"  {_SYMBOLS[d.action]} {d.action.value} {d.row.namespace} "
        f"[line {d.row.line}]{suffix}"
    )


def _decision_json(d: Decision) -> dict[str, Any]:
    return {
        "row": d.row.line,
        "account_id": d.account_id,
        "namespace": d.row.namespace,
        "action": d.action.value,
        "namespace_id": d.existing.namespace_id if d.existing else None,
        "previous_name": d.row.previous_name,
        "changes": {k: {"from": a, "to": b} for k, (a, b) in d.changes.items()},
        "reason": d.reason or None,
    }


async def build_plan(
    manifest: Manifest,
    validation: Validation,
    client: ApiClient,
    policy: RetryPolicy,
    default_account: str | None,
    *,
    prune: bool = False,
    prune_threshold: float = DEFAULT_THRESHOLD,
    force_prune: bool = False,
) -> Plan:
    """Decide every row against one LIST per account (and deletions, if pruning)."""
    wanted = wanted_accounts(manifest, validation, default_account)
    views = await list_accounts(client, policy, wanted)

    decisions = []
    for row in manifest.rows():
        account = row.account_id or default_account
        if account is None or views[account].refused is not None:
            continue
        if row.line in validation.duplicate_of:
            continue
        decisions.append(decide(row, account, views[account].namespaces))

    loose = {
        account: unmanaged(view.namespaces.values(), wanted[account], set())
        for account, view in views.items()
        if view.refused is None
    }
    refused = {
        account: view.refused.message
        for account, view in views.items()
        if view.refused is not None
    }
    the_plan = Plan(decisions, loose, refused, len(validation.invalid_lines))
    the_plan.credentials_refused = any(
        isinstance(view.refused, CredentialsRefusedError) for view in views.values()
    )
    if prune:
        listed = {a: v.namespaces for a, v in views.items() if v.refused is None}
        try:
            the_plan.prune = plan_prune(
                listed,
                wanted,
                manifest_rows=validation.rows_total - len(validation.invalid_lines),
                threshold=prune_threshold,
                force=force_prune,
            )
        except PruneRefusedError as exc:
            the_plan.prune_refused = str(exc)
    return the_plan
