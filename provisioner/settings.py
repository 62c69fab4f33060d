"""Run settings: command-line flags, then environment, then a TOML file, then defaults.

The environment names are the Cloudflare ecosystem's (``CLOUDFLARE_API_TOKEN``,
``CLOUDFLARE_ACCOUNT_ID``, ``CLOUDFLARE_EMAIL``, ``CLOUDFLARE_API_KEY``,
``CLOUDFLARE_BASE_URL``); everything else is ``PROVISIONER_<FIELD>``. The TOML
file is named by ``--config`` or ``PROVISIONER_CONFIG`` and uses the field names.
"""

from __future__ import annotations

import codecs
import difflib
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from provisioner.errors import SettingsError

CLOUDFLARE_BASE_URL = "https://api.cloudflare.com/client/v4"

# Cloudflare's documented budget: 1,200 requests per 5 minutes per user or token,
# shared with the dashboard and every other script of that user.
CLOUDFLARE_QUOTA_REQUESTS = 1200
CLOUDFLARE_WINDOW_S = 300.0

# Only the default budget keeps this share back for the user's other clients; a
# budget the user sets is used exactly as given.
DEFAULT_BUDGET_SHARE = 0.9

DEFAULT_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$"

_toml_path: ContextVar[Path | None] = ContextVar("provisioner_toml_path", default=None)


class Settings(BaseSettings):
    """Everything a run needs that is not in the manifest."""

    model_config = SettingsConfigDict(
        env_prefix="PROVISIONER_",
        populate_by_name=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    account_id: str | None = Field(
        default=None, validation_alias="CLOUDFLARE_ACCOUNT_ID"
    )
    api_token: SecretStr | None = Field(
        default=None, validation_alias="CLOUDFLARE_API_TOKEN"
    )
    email: str | None = Field(default=None, validation_alias="CLOUDFLARE_EMAIL")
    api_key: SecretStr | None = Field(
        default=None, validation_alias="CLOUDFLARE_API_KEY"
    )
    base_url: str = Field(
        default=CLOUDFLARE_BASE_URL,
        validation_alias="CLOUDFLARE_BASE_URL",
    )

    budget_requests: int | None = Field(default=None, ge=1)
    budget_window_s: float | None = Field(default=None, gt=0)
    concurrency: int = Field(default=10, ge=1, le=200)
    timeout_s: float = Field(default=30.0, gt=0)
    retry_max_attempts: int = Field(default=10, ge=1)
    retry_deadline_s: float = Field(default=900.0, gt=0)
    retry_backoff_initial_s: float = Field(default=0.5, gt=0)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    grace_s: float = Field(default=30.0, ge=0)

    report_dir: Path = Path("reports")
    lock_dir: Path | None = None  # default: the system's temporary directory
    metrics_textfile: Path | None = None
    # May hold basic-auth credentials, so it is kept out of reprs like a token.
    pushgateway_url: SecretStr | None = None
    pushgateway_job: str = "provisioner"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    name_pattern: str = DEFAULT_NAME_PATTERN

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        if path is None:
            return (init_settings, env_settings)
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=path),
        )

    @field_validator("api_token", "api_key")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if not raw:
            raise ValueError("is empty; unset it or give the credential")
        if raw != raw.strip() or any(c.isspace() for c in raw):
            raise ValueError("holds whitespace; copy the credential again")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("account_id")
    @classmethod
    def _check_account_id(cls, value: str | None) -> str | None:
        if value is not None and not _is_account_id(value):
            raise ValueError("must be 32 lowercase hexadecimal characters")
        return value

    @property
    def budget(self) -> tuple[int, float]:
        """Requests allowed per window, and the window in seconds."""
        if self.budget_requests is None and self.budget_window_s is None:
            share = int(CLOUDFLARE_QUOTA_REQUESTS * DEFAULT_BUDGET_SHARE)
            return share, CLOUDFLARE_WINDOW_S
        requests = self.budget_requests or CLOUDFLARE_QUOTA_REQUESTS
        return requests, self.budget_window_s or CLOUDFLARE_WINDOW_S

    def require_credentials(self) -> None:
        """Raise SettingsError unless one auth scheme is set.

        The account may come from the manifest's rows instead; whoever needs a
        default account checks for it (``require_account``).
        """
        if self.api_token is None and (self.email is None or self.api_key is None):
            raise SettingsError(
                "No credentials: set CLOUDFLARE_API_TOKEN, or both "
                "CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY."
            )

    def require_account(self) -> str:
        """The default account, or SettingsError naming how to set it."""
        if self.account_id is None:
            raise SettingsError(
                "No account id: set CLOUDFLARE_ACCOUNT_ID or --account-id."
            )
        return self.account_id

    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a request (token preferred)."""
        if self.api_token is not None:
            return {"Authorization": f"Bearer {self.api_token.get_secret_value()}"}
        if self.email is not None and self.api_key is not None:
            return {
                "X-Auth-Email": self.email,
                "X-Auth-Key": self.api_key.get_secret_value(),
            }
        raise SettingsError("No credentials to authenticate with.")

    def secrets(self) -> list[str]:
        """Secret values in force, so output can be checked to hold none."""
        values = [self.api_token, self.api_key]
        return [v.get_secret_value() for v in values if v is not None]


def _is_account_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def load_settings(
    overrides: dict[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Build settings from flags (``overrides``), environment, TOML and defaults.

    Raises SettingsError with one sentence per bad field; never echoes a value.
    """
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_env_names(os.environ)
    path = config_file or _env_config_path()
    if path is not None:
        _check_toml(path)

    token = _toml_path.set(path)
    try:
        return Settings(**flags)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, path)) from None
    finally:
        _toml_path.reset(token)


def _env_config_path() -> Path | None:
    raw = os.environ.get("PROVISIONER_CONFIG")
    return Path(raw) if raw else None


def _check_toml(path: Path) -> None:
    import tomllib  # here: compiling its patterns is a tenth of start-up

    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            # A FIFO or a device would block the read or never end.
            raise SettingsError(f"Settings file {path} is not a regular file.")
        data = path.read_bytes()
        if data.startswith(codecs.BOM_UTF8):
            raise SettingsError(
                f"Settings file {path} starts with a byte-order mark, which TOML"
                " does not allow; save it as UTF-8 without one."
            )
        tomllib.loads(data.decode())
    except FileNotFoundError:
        raise SettingsError(f"Settings file {path} does not exist.") from None
    except IsADirectoryError:
        raise SettingsError(
            f"Settings file {path} is a directory; name the TOML file in it."
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(f"Settings file {path} cannot be read: {reason}.") from None
    except UnicodeDecodeError:
        raise SettingsError(
            f"Settings file {path} is not UTF-8 text; save it as UTF-8 TOML."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"Settings file {path} is not valid TOML: {exc}.") from None


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    return f"PROVISIONER_{field.upper()}"


def known_env_names() -> set[str]:
    """Every environment variable the settings read."""
    return {env_name(field) for field in Settings.model_fields} | {"PROVISIONER_CONFIG"}


def _check_env_names(environ: Mapping[str, str]) -> None:
    """A misspelt PROVISIONER_* variable is an error, not silently ignored."""
    known = known_env_names()
    unknown = sorted(
        name
        for name in environ
        if name.upper().startswith("PROVISIONER_") and name.upper() not in known
    )
    if unknown:
        raise SettingsError(
            f"Unknown setting {', '.join(unknown)} in the environment; "
            f"see the README's settings table (did you mean one of "
            f"{', '.join(sorted(n for n in known if n.startswith('PROVISIONER_')))}?)."
        )


def _field_of(loc: str) -> str:
    for name in Settings.model_fields:
        if loc.lower() in (name, env_name(name).lower()):
            return name
    return loc


def _describe(exc: ValidationError, config_file: Path | None = None) -> str:
    sentences = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc, list(Settings.model_fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            sentences.append(f"Unknown setting {loc} in the settings file{hint}.")
            continue
        field = _field_of(loc)
        if field not in Settings.model_fields:
            where = loc
        elif config_file is not None:
            where = f"{field} ({env_name(field)} or {field} in {config_file})"
        else:
            where = f"{field} ({env_name(field)})"
        message = str(error["msg"]).removeprefix("Value error, ")
        sentences.append(f"Setting {where}: {message}.")
    return " ".join(sentences)
