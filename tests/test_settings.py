"""Settings: precedence, the ecosystem's names, budgets, and secret hygiene."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioner.errors import SettingsError
from provisioner.settings import load_settings

ACCOUNT = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start with none of the variables settings read."""
    for name in [
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_ACCOUNT_ID",
        "CLOUDFLARE_EMAIL",
        "CLOUDFLARE_API_KEY",
        "CLOUDFLARE_BASE_URL",
        "PROVISIONER_CONFIG",
        "PROVISIONER_CONCURRENCY",
        "PROVISIONER_REPORT_DIR",
    ]:
        monkeypatch.delenv(name, raising=False)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_defaults_keep_a_safety_margin_in_the_budget() -> None:
    """With no budget set, 90% of Cloudflare's 1,200 per 300 s is used."""
    settings = load_settings()

    assert settings.budget == (1080, 300.0)
    assert settings.base_url == "https://api.cloudflare.com/client/v4"
    assert settings.report_dir == Path("reports")


def test_a_budget_the_user_sets_is_used_as_given() -> None:
    """A set budget has no margin taken off."""
    settings = load_settings({"budget_requests": 100, "budget_window_s": 10.0})

    assert settings.budget == (100, 10.0)


def test_ecosystem_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLOUDFLARE_* variables set the account, token and base URL."""
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok-123")
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9/client/v4/")
    monkeypatch.setenv("PROVISIONER_REPORT_DIR", "/tmp/r")

    settings = load_settings()

    assert settings.account_id == ACCOUNT
    assert settings.auth_headers() == {"Authorization": "Bearer tok-123"}
    assert settings.base_url == "http://127.0.0.1:9/client/v4"
    assert settings.report_dir == Path("/tmp/r")


def test_precedence_flags_env_toml_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flags beat the environment, which beats the TOML file, which beats defaults."""
    path = write_toml(
        tmp_path, f'account_id = "{OTHER}"\nconcurrency = 3\ntimeout_s = 7\n'
    )
    monkeypatch.setenv("PROVISIONER_CONCURRENCY", "5")
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)

    settings = load_settings({"concurrency": 9}, path)

    assert settings.concurrency == 9
    assert settings.account_id == ACCOUNT
    assert settings.timeout_s == 7.0
    assert settings.retry_max_attempts == 10


def test_config_file_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROVISIONER_CONFIG names the TOML file when --config is absent."""
    monkeypatch.setenv("PROVISIONER_CONFIG", str(write_toml(tmp_path, "grace_s = 1")))

    assert load_settings().grace_s == 1.0


def test_email_and_key_scheme() -> None:
    """The legacy scheme sends X-Auth-Email and X-Auth-Key."""
    settings = load_settings({"email": "a@example.com", "api_key": "k"})

    assert settings.auth_headers() == {
        "X-Auth-Email": "a@example.com",
        "X-Auth-Key": "k",
    }


def test_missing_credentials_is_one_sentence() -> None:
    """No token and no email+key is a SettingsError naming the variables."""
    settings = load_settings({"account_id": ACCOUNT})

    with pytest.raises(SettingsError, match="CLOUDFLARE_API_TOKEN"):
        settings.require_credentials()


def test_missing_account() -> None:
    """No default account is a SettingsError naming CLOUDFLARE_ACCOUNT_ID."""
    settings = load_settings({"api_token": "t"})

    settings.require_credentials()  # rows may still name their accounts
    with pytest.raises(SettingsError, match="CLOUDFLARE_ACCOUNT_ID"):
        settings.require_account()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"account_id": "nothex"}, "CLOUDFLARE_ACCOUNT_ID"),
        ({"base_url": "ftp://x"}, "CLOUDFLARE_BASE_URL"),
        ({"log_level": "loud"}, "log_level"),
    ],
)
def test_malformed_settings_name_the_field(
    overrides: dict[str, object], field: str
) -> None:
    """A bad value is a SettingsError that names its setting."""
    with pytest.raises(SettingsError, match=field):
        load_settings(overrides)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    """An unreadable or absent settings file is a SettingsError naming it."""
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(config_file=write_toml(tmp_path, "concurrency = = 3"))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(config_file=tmp_path / "absent.toml")


def test_settings_file_not_utf8_or_a_directory_is_a_settings_error(
    tmp_path: Path,
) -> None:
    """A binary file or a directory as the settings file is exit 4, not a crash."""
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe bad")

    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(config_file=binary)
    with pytest.raises(SettingsError, match="is a directory"):
        load_settings(config_file=tmp_path)


def test_settings_file_that_is_a_fifo_is_refused_without_reading(
    tmp_path: Path,
) -> None:
    """A FIFO as the settings file is a SettingsError at once, not a hang."""
    fifo = tmp_path / "settings.toml"
    os.mkfifo(fifo)

    with pytest.raises(SettingsError, match="not a regular file"):
        load_settings(config_file=fifo)


def test_settings_file_with_a_byte_order_mark_says_so(tmp_path: Path) -> None:
    """A TOML file saved with a UTF-8 BOM gets an error naming the BOM."""
    marked = tmp_path / "settings.toml"
    marked.write_bytes(b"\xef\xbb\xbfconcurrency = 3\n")

    with pytest.raises(SettingsError, match="byte-order mark"):
        load_settings(config_file=marked)


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    """A misspelt key in the file is an error, not silently ignored."""
    with pytest.raises(SettingsError, match=r"concurency.*did you mean concurrency"):
        load_settings(config_file=write_toml(tmp_path, "concurency = 3"))


def test_secrets_stay_out_of_repr_and_errors() -> None:
    """The token and key appear in no repr and no validation error."""
    settings = load_settings({"api_token": "s3cr3t-token", "api_key": "s3cr3t-key"})

    assert "s3cr3t" not in repr(settings)
    assert sorted(settings.secrets()) == ["s3cr3t-key", "s3cr3t-token"]
    with pytest.raises(SettingsError) as caught:
        load_settings({"api_token": "s3cr3t-token", "concurrency": "many"})
    assert "s3cr3t" not in str(caught.value)


def test_bare_field_names_in_the_environment_are_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BASE_URL or API_TOKEN without the CLOUDFLARE_ prefix are ignored."""
    monkeypatch.setenv("BASE_URL", "http://attacker.invalid")
    monkeypatch.setenv("API_TOKEN", "stray")
    monkeypatch.setenv("account_id", ACCOUNT)

    settings = load_settings()

    assert settings.base_url == "https://api.cloudflare.com/client/v4"
    assert settings.api_token is None
    assert settings.account_id is None


def test_misspelt_provisioner_variable_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unknown PROVISIONER_* variable is refused, naming it."""
    monkeypatch.setenv("PROVISIONER_REPORTDIR", "/tmp/x")

    with pytest.raises(SettingsError, match="PROVISIONER_REPORTDIR"):
        load_settings()


@pytest.mark.parametrize("token", ["", " tok", "tok en"])
def test_empty_or_spaced_token_is_refused(token: str) -> None:
    """An empty token, or one with whitespace, is a settings error, not a 401."""
    with pytest.raises(SettingsError, match="api_token"):
        load_settings({"api_token": token})


def test_a_bad_value_from_the_settings_file_names_the_file(tmp_path: Path) -> None:
    """A wrong type in the settings file is reported with the file's name."""
    config = write_toml(tmp_path, 'concurrency = "many"')

    with pytest.raises(SettingsError, match=r"concurrency in .*\.toml"):
        load_settings(config_file=config)
