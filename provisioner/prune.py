"""Pruning: which unmanaged namespaces may be deleted, and when to refuse.

Deleting a namespace deletes every Worker in it, so pruning happens only when
asked for, never on an empty manifest, and never when it would delete more
than a threshold share of an account's namespaces unless forced. A name that
is unsafe in a URL path is never deleted (the DELETE would hit another path);
it is reported instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from provisioner.errors import InputError
from provisioner.models import Namespace
from provisioner.names import url_safe
from provisioner.reconcile import unmanaged

DEFAULT_THRESHOLD = 0.10


class PruneRefusedError(InputError):
    """Pruning would delete too much, or the manifest is empty; nothing is sent."""


@dataclass(frozen=True, slots=True)
class Deletion:
    """One unmanaged namespace to delete."""

    account_id: str
    namespace: Namespace

    @property
    def key(self) -> str:
        """The journal key of this deletion."""
        return f"unmanaged:{self.account_id}:{self.namespace.namespace_name}"


@dataclass
class PrunePlan:
    """Deletions per account, and unmanaged names that are unsafe to delete."""

    deletions: list[Deletion] = field(default_factory=list)
    unsafe: list[Deletion] = field(default_factory=list)


def plan_prune(
    actual: Mapping[str, Mapping[str, Namespace]],
    wanted: Mapping[str, set[str]],
    *,
    manifest_rows: int,
    threshold: float = DEFAULT_THRESHOLD,
    force: bool = False,
) -> PrunePlan:
    """Decide deletions for every listed account; raise PruneRefusedError.

    ``actual`` holds the namespaces of each account that could be listed;
    ``wanted`` the names the manifest keeps there (previous names included).
    """
    if manifest_rows == 0:
        raise PruneRefusedError(
            "Refusing to prune with an empty manifest: it would delete every "
            "namespace of the account."
        )

    plan = PrunePlan()
    for account, namespaces in sorted(actual.items()):
        loose = unmanaged(namespaces.values(), wanted.get(account, set()), set())
        safe = [ns for ns in loose if url_safe(ns.namespace_name)]
        plan.deletions.extend(Deletion(account, ns) for ns in safe)
        plan.unsafe.extend(
            Deletion(account, ns) for ns in loose if not url_safe(ns.namespace_name)
        )

        share = len(safe) / len(namespaces) if namespaces else 0.0
        if share > threshold and not force:
            raise PruneRefusedError(
                f"Refusing to prune account {account}: it would delete {len(safe)} "
                f"of {len(namespaces)} namespaces ({share:.0%}), above the "
                f"{threshold:.0%} threshold. Check the plan, then pass "
                "--force-prune or raise --prune-threshold."
            )

    return plan
