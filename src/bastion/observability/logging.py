"""Structured JSON log lines: one access line per request, one line per error.

Each :class:`bastion.Bastion` owns its logger (no global structlog configuration is
touched), writing JSON lines to standard error unless given another stream.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import IO, Any, BinaryIO, cast

import orjson
import structlog

from bastion.tracing import add_trace_id

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _timestamp(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["ts"] = round(time.time(), 6)
    return event


def _dumps(event: Any, **_kw: Any) -> bytes:
    return orjson.dumps(event, default=repr)


def make_logger(level: str = "info", stream: IO[bytes] | None = None) -> Any:
    """A structlog logger that writes one JSON object per line to ``stream``."""
    out = stream if stream is not None else sys.stderr.buffer
    return structlog.wrap_logger(
        structlog.BytesLogger(cast(BinaryIO, out)),
        processors=[
            structlog.processors.add_log_level,
            _timestamp,
            add_trace_id,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )


class AccessLog:
    """Writes the one access line per request, without structlog's processor chain.

    The line has the same shape as the other log lines (``event``, ``level``, ``ts``
    and the fields), but costs a third as much: it runs on every request.
    """

    def __init__(self, stream: IO[bytes] | None = None, *, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self.enabled = enabled

    def write(self, fields: dict[str, Any]) -> None:
        """Write one access line made of ``fields``."""
        fields["event"] = "request"
        fields["level"] = "info"
        fields["ts"] = round(time.time(), 6)
        try:
            self.stream.write(orjson.dumps(fields, default=repr, option=orjson.OPT_APPEND_NEWLINE))
            self.stream.flush()
        except (OSError, ValueError):
            # A closed or broken log stream must not fail the request it describes.
            pass
