"""The sandbox's state: accounts holding namespaces, optionally kept in a file.

Every method is synchronous, so within one event loop each change is atomic:
no request can see half of a rename.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioner.errors import SettingsError

STATE_VERSION = 1


class NameTakenError(Exception):
    """The account already holds a namespace of that name."""


class NamespaceMissingError(Exception):
    """The account holds no namespace of that name."""


def rfc3339_now() -> str:
    """The current UTC time the way Cloudflare writes it, with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class NamespaceRecord:
    """One namespace, with exactly the fields the API returns."""

    namespace_id: str
    namespace_name: str
    created_on: str
    modified_on: str
    created_by: str
    modified_by: str
    script_count: int = 0
    trusted_workers: bool = False

    def to_api(self) -> dict[str, Any]:
        """The namespace object of an API answer."""
        return asdict(self)

    @classmethod
    def from_api(cls, raw: Any) -> NamespaceRecord:
        """Rebuild from a saved namespace object; raises ValueError if malformed."""
        if not isinstance(raw, dict):
            raise ValueError("a namespace entry is not an object")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ValueError(f"a namespace entry has bad fields: {exc}") from exc


class NamespaceStore:
    """Namespaces per account, keyed by name (case-sensitive).

    ``version`` grows with every change; ``on_change`` (if set) is called after
    each one, which is how the server knows to save the state file.
    """

    def __init__(self, now: Callable[[], str] = rfc3339_now) -> None:
        self._accounts: dict[str, dict[str, NamespaceRecord]] = {}
        self._now = now
        self.version = 0
        self.on_change: Callable[[], None] | None = None

    def list_for(self, account_id: str) -> list[NamespaceRecord]:
        """Every namespace of the account, oldest first."""
        return list(self._accounts.get(account_id, {}).values())

    def get(self, account_id: str, name: str) -> NamespaceRecord | None:
        """The namespace called ``name``, or None."""
        return self._accounts.get(account_id, {}).get(name)

    def total(self) -> int:
        """How many namespaces all accounts hold together."""
        return sum(len(held) for held in self._accounts.values())

    def create(self, account_id: str, name: str, actor_id: str) -> NamespaceRecord:
        """Add a namespace; raises NameTakenError if the name is held."""
        held = self._accounts.setdefault(account_id, {})
        if name in held:
            raise NameTakenError(name)

        stamp = self._now()
        record = NamespaceRecord(
            namespace_id=str(uuid.uuid4()),
            namespace_name=name,
            created_on=stamp,
            modified_on=stamp,
            created_by=actor_id,
            modified_by=actor_id,
        )
        held[name] = record
        self._changed()
        return record

    def update(
        self,
        account_id: str,
        name: str,
        actor_id: str,
        *,
        new_name: str | None = None,
        trusted_workers: bool | None = None,
    ) -> NamespaceRecord:
        """Rename and/or set trust, keeping the id.

        Raises NamespaceMissingError if ``name`` is absent and NameTakenError if
        ``new_name`` belongs to another namespace.
        """
        held = self._accounts.get(account_id, {})
        record = held.get(name)
        if record is None:
            raise NamespaceMissingError(name)
        target = name if new_name is None else new_name
        if target != name and target in held:
            raise NameTakenError(target)

        updated = replace(
            record,
            namespace_name=target,
            trusted_workers=(
                record.trusted_workers if trusted_workers is None else trusted_workers
            ),
            modified_on=self._now(),
            modified_by=actor_id,
        )
        del held[name]
        held[target] = updated
        self._changed()
        return updated

    def delete(self, account_id: str, name: str) -> None:
        """Remove a namespace; raises NamespaceMissingError if absent."""
        held = self._accounts.get(account_id, {})
        if held.pop(name, None) is None:
            raise NamespaceMissingError(name)
        self._changed()

    def seed(
        self, account_id: str, names: Iterable[str], actor_id: str
    ) -> list[NamespaceRecord]:
        """Create each name not yet held, for tests and demos; returns all."""
        held = self._accounts.setdefault(account_id, {})
        return [
            held[name] if name in held else self.create(account_id, name, actor_id)
            for name in names
        ]

    def dumps(self) -> str:
        """The whole state as JSON text, for the state file."""
        state = {
            "version": STATE_VERSION,
            "accounts": {
                account: [record.to_api() for record in held.values()]
                for account, held in self._accounts.items()
            },
        }
        return json.dumps(state, indent=1, ensure_ascii=False)

    def loads(self, text: str, source: str) -> None:
        """Replace the state with a saved one; SettingsError names ``source``."""
        try:
            state = json.loads(text)
            if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
                raise ValueError(f"not a version {STATE_VERSION} sandbox state")
            accounts = state.get("accounts")
            if not isinstance(accounts, dict):
                raise ValueError("no 'accounts' object")
            if not all(isinstance(entries, list) for entries in accounts.values()):
                raise ValueError("an account's namespaces are not a list")
            loaded = {
                str(account): {
                    record.namespace_name: record
                    for record in map(NamespaceRecord.from_api, entries)
                }
                for account, entries in accounts.items()
            }
        except ValueError as exc:
            raise SettingsError(
                f"Sandbox state file {source} cannot be read ({exc}); fix or delete it."
            ) from exc

        self._accounts = loaded
        self.version += 1

    def _changed(self) -> None:
        self.version += 1
        if self.on_change is not None:
            self.on_change()


def load_state(store: NamespaceStore, path: Path) -> bool:
    """Fill ``store`` from ``path`` if it exists; says whether it did."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False

    store.loads(text, str(path))
    return True


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or new file whole.

    A unique temporary name in the same directory lets writers never clobber
    each other's half-written file, and os.replace swaps it in atomically.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
