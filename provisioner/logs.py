"""Logging setup, done once at the entry point.

structlog events with stable snake_case names and fields: JSON lines when
stderr is not a terminal (or ``--log-format json``), readable console lines on
one. Every secret value in force is masked wherever it appears, so a token
pasted into an error message by a server still never reaches a log: in each
field before a console line is drawn, and in the finished JSON line, where it
can be found however deep in the event it was.

The row a task is working on (``bind_row``) is added to each of its events.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import IO, Any, BinaryIO, TextIO, cast

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

    @property
    def secrets(self) -> list[str]:
        """The secrets masked, longest first."""
        return list(self._secrets)

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


_ROW: ContextVar[dict[str, Any] | None] = ContextVar("provisioner_row", default=None)


def bind_row(**fields: Any) -> None:
    """Add ``fields`` to every later event of the current task, in place of
    those of the row before (each asyncio task has a context of its own)."""
    _ROW.set(fields)


def add_row_fields(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The fields of ``bind_row``; an event's own fields of the same name win."""
    row = _ROW.get()
    if row is not None:
        for key, value in row.items():
            event.setdefault(key, value)
    return event


class JsonLines:
    """The renderer of JSON lines: one event as UTF-8 JSON, secrets masked.

    A secret is looked for in the finished line as JSON writes it (escapes
    included): one scan of the line per secret finds it in any field, key or
    nested value. A line where one is found is rendered again from the event
    with every text masked, keys and nested values too: masking the line
    itself could cut into an escape sequence (a secret starting with ``n``
    after a backslash) and leave a line that is not JSON. Values JSON has no
    type for are written as text.
    """

    def __init__(self, secrets: Iterable[str], *, as_text: bool) -> None:
        self._masker = SecretMasker(secrets)
        self._escaped = [orjson.dumps(s)[1:-1] for s in self._masker.secrets]
        self._as_text = as_text

    def __repr__(self) -> str:
        return f"JsonLines(secrets={len(self._escaped)})"

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> bytes | str:
        line = orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS)
        for secret in self._escaped:
            if secret in line:
                line = orjson.dumps(self._masked(event), option=orjson.OPT_NON_STR_KEYS)
                break
        return line.decode() if self._as_text else line

    def _masked(self, value: Any) -> Any:
        """``value`` with every text in it masked (keys too), as JSON types."""
        if isinstance(value, str):
            return self._masker.mask(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {self._masked(k): self._masked(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._masked(item) for item in value]
        return self._masker.mask(str(value))


def add_timestamp(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``timestamp``: now in UTC, RFC 3339 to the microsecond."""
    event["timestamp"] = utc_now_us()
    return event


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
    secrets = list(secrets)
    first: list[Any] = [
        add_row_fields,
        structlog.processors.add_log_level,
        add_timestamp,
        structlog.processors.format_exc_info,
    ]
    if not use_json(log_format, out):
        processors = [
            *first,
            SecretMasker(secrets),
            structlog.dev.ConsoleRenderer(colors=out.isatty()),
        ]
        # One write per event line (print() makes two on an unbuffered stream).
        factory: Any = structlog.WriteLoggerFactory(file=cast(TextIO, out))
    else:
        binary = _binary_of(out)
        processors = [*first, JsonLines(secrets, as_text=binary is None)]
        if binary is None:
            factory = structlog.WriteLoggerFactory(file=cast(TextIO, out))
        else:
            # JSON lines go as bytes, one write each, past the text layer.
            factory = structlog.BytesLoggerFactory(file=binary)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def _binary_of(stream: IO[str]) -> BinaryIO | None:
    """The byte stream under a text stream (flushed first), if it has one."""
    binary = getattr(stream, "buffer", None)
    if binary is None or not callable(getattr(binary, "write", None)):
        return None
    stream.flush()
    return cast(BinaryIO, binary)
