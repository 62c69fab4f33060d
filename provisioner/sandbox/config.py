"""Settings of the sandbox server: credentials, accounts, rate limit, faults."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import SettingsError

DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 - a fake credential, printed on purpose
DEFAULT_EMAIL = "sandbox@example.com"
DEFAULT_API_KEY = "sandbox-key"
DEFAULT_ACCOUNT = "0123456789abcdef0123456789abcdef"
DEFAULT_USER_ID = "5a4db0c5a4db0c5a4db0c5a4db0c5a4d"

# Cloudflare allows 1200 requests per 300 s; the sandbox keeps the quota and
# shrinks the window 60-fold so a demo hits the same wall in seconds.
DEFAULT_QUOTA = 1200
DEFAULT_WINDOW_S = 5.0
CLOUDFLARE_WINDOW_S = 300.0

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probability of each injected fault per API request, each in [0, 1].

    One uniform draw per request picks at most one fault, so the rates must sum
    to at most 1. The commit-type faults apply to mutating requests only.
    """

    error_500: float = 0.0
    html_502: float = 0.0
    html_503: float = 0.0
    close: float = 0.0
    truncated: float = 0.0
    success_false: float = 0.0
    commit_then_close: float = 0.0
    commit_then_delay: float = 0.0

    def __post_init__(self) -> None:
        for kind, rate in self.items():
            if not (0.0 <= rate <= 1.0) or math.isnan(rate):
                raise SettingsError(
                    f"Fault rate {kind}={rate} is not a probability; use 0 to 1."
                )
        total = sum(rate for _, rate in self.items())
        if total > 1.0 + 1e-9:
            raise SettingsError(
                f"Fault rates sum to {total:g}, above 1; lower some of them."
            )

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        """Every fault kind, in the order the draw walks them."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, rates: Mapping[str, float]) -> FaultRates:
        """Build from ``{kind: probability}``, naming any unknown kind."""
        unknown = sorted(set(rates) - set(cls.kinds()))
        if unknown:
            raise SettingsError(
                f"Unknown fault kind {', '.join(unknown)}; "
                f"choose from {', '.join(cls.kinds())}."
            )
        return cls(**{kind: float(rate) for kind, rate in rates.items()})

    def items(self) -> tuple[tuple[str, float], ...]:
        """``(kind, probability)`` pairs in draw order."""
        return tuple((kind, getattr(self, kind)) for kind in self.kinds())

    def any(self) -> bool:
        """Whether some fault can happen at all."""
        return any(rate > 0.0 for _, rate in self.items())


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything the sandbox serves and how it misbehaves.

    ``quota`` of 0 or None turns rate limiting off. ``lockout_s`` of None means
    one full window. ``clock`` is a monotonic clock in seconds; tests pass a fake
    one to move time without sleeping. Secrets stay out of the repr.
    """

    accounts: tuple[str, ...] = (DEFAULT_ACCOUNT,)
    token: str = field(default=DEFAULT_TOKEN, repr=False)
    email: str = DEFAULT_EMAIL
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    accept_any_token: bool = False
    user_id: str = DEFAULT_USER_ID
    quota: int | None = DEFAULT_QUOTA
    window_s: float = DEFAULT_WINDOW_S
    lockout_s: float | None = None
    faults: FaultRates = field(default_factory=FaultRates)
    seed: int | None = 0
    revoke_after: int | None = None
    slow_delay_s: float = 30.0
    state_file: Path | None = None
    save_interval_s: float = 0.25
    clock: Callable[[], float] = field(
        default=time.monotonic, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.accounts:
            raise SettingsError("The sandbox serves no account; give at least one.")
        for account in self.accounts:
            if not account or len(account) > 32:
                raise SettingsError(
                    f"Account id {account!r} must be 1 to 32 characters long."
                )
        if not _HEX32.match(self.user_id):
            raise SettingsError(f"user_id {self.user_id!r} must be 32 hex digits.")
        if self.quota is not None and self.quota < 0:
            raise SettingsError(f"quota {self.quota} is negative; use 0 for none.")
        if not self.window_s > 0:
            raise SettingsError(f"window_s {self.window_s} must be above 0.")
        if self.lockout_s is not None and self.lockout_s < 0:
            raise SettingsError(f"lockout_s {self.lockout_s} must not be negative.")
        if self.revoke_after is not None and self.revoke_after < 0:
            raise SettingsError(
                f"revoke_after {self.revoke_after} must not be negative."
            )
        if self.slow_delay_s < 0 or self.save_interval_s < 0:
            raise SettingsError("slow_delay_s and save_interval_s must be >= 0.")

    @property
    def rate_limited(self) -> bool:
        """Whether a quota applies at all."""
        return bool(self.quota)

    @property
    def effective_lockout_s(self) -> float:
        """How long a credential stays locked out after going over quota."""
        return self.window_s if self.lockout_s is None else self.lockout_s
