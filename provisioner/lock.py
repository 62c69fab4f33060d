"""One run at a time per account on a host: a file lock per account.

Two runs over the same account would each trust their own LIST and journal,
and each could create what the other is creating. The lock files live in the
system's temporary directory (``PROVISIONER_LOCK_DIR`` overrides it), one per
account and API base URL, taken in sorted order so that runs over overlapping
sets of accounts cannot deadlock.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout
from yarl import URL

from provisioner.errors import LockHeldError


def lock_path(account_id: str, base_url: str, directory: Path | None = None) -> Path:
    """The lock file of one account of one API (a sandbox is another API).

    The URL is normalised (scheme and host case, default port, trailing
    slash) so that spellings of one address share a lock; a second name for a
    host (``localhost`` and ``127.0.0.1``) is not recognised.
    """
    api = hashlib.sha256(_normalised(base_url).encode()).hexdigest()[:12]
    where = directory or Path(tempfile.gettempdir())
    return where / f"provisioner-{account_id}-{api}.lock"


@contextlib.contextmanager
def account_locks(
    accounts: Iterable[str],
    base_url: str,
    directory: Path | None = None,
    report_dir: Path | None = None,
) -> Iterator[None]:
    """Hold every account's lock (and the report directory's), or raise at once.

    The report directory holds one journal, so two runs over different
    accounts must not share it either.
    """
    with contextlib.ExitStack() as stack:
        for account in sorted(set(accounts)):
            path = lock_path(account, base_url, directory)
            _take(stack, path, f"account {account}")
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            _take(stack, report_dir / ".lock", f"report directory {report_dir}")
        yield


def _normalised(base_url: str) -> str:
    url = URL(base_url)
    host = (url.host or "").lower()
    port = "" if url.port is None or url.is_default_port() else f":{url.port}"
    return f"{url.scheme.lower()}://{host}{port}{url.path.rstrip('/')}"


def _take(stack: contextlib.ExitStack, path: Path, what: str) -> None:
    try:
        stack.enter_context(FileLock(path, timeout=0))
    except Timeout:
        raise LockHeldError(
            f"Another provisioner run holds the lock for {what} ({path}); "
            "wait for it to finish."
        ) from None
    except OSError as exc:
        raise LockHeldError(
            f"Cannot take the lock for {what} at {path}: {exc.strerror}. Remove "
            "what is there, or set PROVISIONER_LOCK_DIR to a private directory."
        ) from None
