"""Shared test setup; fixtures live in modules listed here."""

pytest_plugins = ["sandbox_fixtures", "aioresponses_compat"]
