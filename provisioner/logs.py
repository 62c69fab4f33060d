"""Logging setup, done once at the entry point.

structlog events with stable snake_case names and fields: JSON lines when
stderr is not a terminal (or ``--log-format json``), readable console lines on
one. A last processor masks every secret value in force wherever it appears,
so a token pasted into an error message by a server still never reaches a log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import IO, Any, TextIO, cast

import orjson
import structlog

from provisioner.timestamps import utc_now_us

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MASK = "***"


class SecretMasker:
    """A processor replacing each secret value in any string field with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __repr__(self) -> str:
        return f"SecretMasker(secrets={len(self._secrets)})"

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        secrets = self._secrets
        if not secrets:
            return event
        for key, value in event.items():
            if type(value) is not str:
                if isinstance(value, int | float | bool | type(None)):
                    continue
                value = str(value)
                event[key] = value
            for secret in secrets:
                if secret in value:
                    event[key] = self.mask(value)
                    break
        return event


def add_timestamp(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``timestamp``: now in UTC, RFC 3339 to the microsecond."""
    event["timestamp"] = utc_now_us()
    return event


def _dumps(event: Any, default: Any = None) -> str:
    """One event as a JSON line (orjson: a few times faster than json)."""
    return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def use_json(log_format: str, stream: IO[str]) -> bool:
    """JSON unless asked for console output, or auto on a terminal."""
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    return not stream.isatty()


def configure_logging(
    *,
    log_format: str = "auto",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> None:
    """Configure structlog for the whole process."""
    out = stream if stream is not None else sys.stderr
    as_json = use_json(log_format, out)
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_timestamp,
            structlog.processors.format_exc_info,
            SecretMasker(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write per event line (print() makes two on an unbuffered stream).
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
