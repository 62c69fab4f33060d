"""The one exception tree of provisioner, split by what the run does next.

    ProvisionerError                 base of everything raised on purpose
    ├── InputError                   stop before any call (exit 4)
    │   ├── ManifestError            the manifest cannot be used; carries problems
    │   └── SettingsError            settings missing or malformed
    ├── ApiError                     an answer (or no answer) from the API
    │   ├── TransientError           retry: the call may succeed later
    │   │   ├── RateLimitedError     429: every worker pauses (retry_after_s)
    │   │   ├── ServerError          5xx, or an answer that is not an envelope
    │   │   └── TransportError       timeout, reset, refused connection
    │   ├── PermanentError           record for the row and go on
    │   │   └── NotFoundError        404: the name is not in the account
    │   └── CredentialsRefusedError  401/403: stop the run (exit 5)
    ├── RunInterruptedError          a signal asked the run to stop (exit 6)
    └── LockHeldError                another run holds the account lock (exit 7)

Every ApiError says whether the request may have reached the server
(``may_have_committed``): a create is sent again only when that is false or a
lookup has shown the name absent.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProvisionerError(Exception):
    """Base class of every error provisioner raises on purpose."""

    exit_code = 1


class InputError(ProvisionerError):
    """Bad manifest, settings or command line: nothing is sent."""

    exit_code = 4


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or doubtful) in a manifest, located to a line and field."""

    file: str
    line: int | None
    field: str | None
    message: str
    severity: str = "error"  # "error" or "warning"
    code: str = "invalid"

    def render(self) -> str:
        """Format as ``file:line: field: message`` for people."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ManifestError(InputError):
    """The manifest as a whole cannot be used (or has rows that are errors)."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class SettingsError(InputError):
    """Settings are missing or malformed."""


class ApiError(ProvisionerError):
    """A call to the API failed; carries what is known of the answer.

    Never holds request headers, so no credential can reach its text.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = None,
        code: int | None = None,
        may_have_committed: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.may_have_committed = may_have_committed
        self.attempts = 1  # set by the retry policy when it gives up

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"method={self.method!r}, path={self.path!r}, message={self.message!r})"
        )


class TransientError(ApiError):
    """The call may succeed if tried again later."""


class RateLimitedError(TransientError):
    """HTTP 429: the budget is spent; every worker waits ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float | None, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class ServerError(TransientError):
    """A 5xx, or an answer that is not a readable envelope."""


class TransportError(TransientError):
    """No answer: timeout, reset, refused connection, cut-off body."""


class PermanentError(ApiError):
    """The server refused this call for this row; trying again will not help."""


class NotFoundError(PermanentError):
    """HTTP 404: no namespace of that name in the account."""


class CredentialsRefusedError(ApiError):
    """The token or key was refused; the run stops starting calls."""

    exit_code = 5


class RunInterruptedError(ProvisionerError):
    """A signal asked the run to stop."""

    exit_code = 6


class LockHeldError(ProvisionerError):
    """Another run on this host holds the lock for the account."""

    exit_code = 7
