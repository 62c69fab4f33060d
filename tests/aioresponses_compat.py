"""Let aioresponses 0.7.x build responses under aiohttp 3.14.

aiohttp 3.14 added a required ``stream_writer`` argument to ClientResponse,
which aioresponses (0.7.9, the newest release) does not pass; its upstream
issue #289 is open. The response it builds has already been "sent", so the
writer is only asked for its output size.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import aioresponses.core
from aiohttp import ClientResponse

_SENT = SimpleNamespace(output_size=0)


class _Response(ClientResponse):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SENT)
        super().__init__(*args, **kwargs)


if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
    aioresponses.core.ClientResponse = _Response  # type: ignore[misc]
