"""Decisions from one LIST: adopt, create, update, rename, conflict, unmanaged."""

from __future__ import annotations

from provisioner.models import ManifestRow, Namespace
from provisioner.reconcile import Action, decide, unmanaged

ACCOUNT = "0123456789abcdef0123456789abcdef"


def ns(name: str, trusted: bool = False, nid: str = "id") -> Namespace:
    return Namespace(
        namespace_id=f"{nid}-{name}", namespace_name=name, trusted_workers=trusted
    )


def test_missing_name_is_created() -> None:
    """A name not in the account is created."""
    decision = decide(ManifestRow(2, "acme"), ACCOUNT, {})

    assert decision.action is Action.CREATE
    assert decision.changes_account


def test_existing_name_is_adopted_without_a_call() -> None:
    """A name already there is adopted with its ID and sends nothing."""
    actual = {"acme": ns("acme")}

    decision = decide(ManifestRow(2, "acme"), ACCOUNT, actual)

    assert decision.action is Action.ADOPT
    assert decision.existing == actual["acme"]
    assert not decision.changes_account


def test_trusted_workers_difference_is_an_update() -> None:
    """An existing namespace whose trusted_workers differs is updated."""
    row = ManifestRow(2, "acme", trusted_workers=True)

    decision = decide(row, ACCOUNT, {"acme": ns("acme", trusted=False)})

    assert decision.action is Action.UPDATE
    assert decision.changes == {"trusted_workers": (False, True)}


def test_absent_trusted_workers_means_leave_as_is() -> None:
    """A row without trusted_workers never changes it."""
    decision = decide(ManifestRow(2, "acme"), ACCOUNT, {"acme": ns("acme", True)})

    assert decision.action is Action.ADOPT


def test_new_namespace_asking_trust_is_created_then_updated() -> None:
    """Create cannot set trusted_workers, so the change is carried with it."""
    decision = decide(ManifestRow(2, "acme", trusted_workers=True), ACCOUNT, {})

    assert decision.action is Action.CREATE
    assert decision.changes == {"trusted_workers": (False, True)}


def test_rename_when_only_previous_exists() -> None:
    """previous_name present and new name absent: rename, keeping the ID."""
    row = ManifestRow(2, "acme-new", previous_name="acme-old")

    decision = decide(row, ACCOUNT, {"acme-old": ns("acme-old")})

    assert decision.action is Action.RENAME
    assert decision.existing is not None
    assert decision.existing.namespace_id == "id-acme-old"


def test_rename_done_earlier_is_existing() -> None:
    """Only the new name exists: the rename happened before; adopt it."""
    row = ManifestRow(2, "acme-new", previous_name="acme-old")

    decision = decide(row, ACCOUNT, {"acme-new": ns("acme-new")})

    assert decision.action is Action.ADOPT


def test_rename_conflicts() -> None:
    """Both names, or neither, cannot be decided: a conflict with a reason."""
    row = ManifestRow(2, "acme-new", previous_name="acme-old")
    both = {"acme-new": ns("acme-new"), "acme-old": ns("acme-old")}

    assert decide(row, ACCOUNT, both).action is Action.CONFLICT
    neither = decide(row, ACCOUNT, {})
    assert neither.action is Action.CONFLICT
    assert "neither" in neither.reason


def test_unmanaged_lists_names_outside_the_manifest() -> None:
    """Namespaces named by no row (nor as a previous name) are unmanaged."""
    actual = [ns("a"), ns("b"), ns("c"), ns("old")]

    loose = unmanaged(actual, wanted={"a"}, previous={"old"})

    assert [n.namespace_name for n in loose] == ["b", "c"]
