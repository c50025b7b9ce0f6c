"""Structured JSON log lines: one access line per request, one line per error.

Each :class:`bastion.Bastion` owns its logger (no global structlog configuration is
touched), writing JSON lines to standard error unless given another stream.
bastion's own servers route uvicorn's loggers (and the standard library's) into the
same shape of line (:func:`server_log_config`), so their standard error is JSON only.
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


class JsonLineHandler(logging.Handler):
    """A :mod:`logging` handler writing each record as one JSON line shaped like bastion's own.

    The line has ``event`` (the message), ``level``, ``ts`` and ``logger``, plus
    ``exception`` (the formatted traceback) when the record carries one.
    """

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` as one line."""
        try:
            line: dict[str, Any] = {
                "event": record.getMessage(),
                "level": record.levelname.lower(),
                "ts": round(record.created, 6),
                "logger": record.name,
            }
            if record.exc_info:
                line["exception"] = logging.Formatter().formatException(record.exc_info)
            stream = self.stream if self.stream is not None else sys.stderr.buffer
            stream.write(orjson.dumps(line, default=repr, option=orjson.OPT_APPEND_NEWLINE))
            stream.flush()
        except Exception:
            self.handleError(record)


def server_log_config(level: str = "warning") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` configuration: uvicorn's loggers and the root as JSON lines.

    Given to ``uvicorn.run(log_config=...)``, it is applied in every worker process too.
    """
    name = level.upper()
    json_only = {"handlers": ["json"], "level": name, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"json": {"class": f"{__name__}.JsonLineHandler"}},
        "loggers": {"uvicorn": json_only, "uvicorn.error": {"level": name}, "uvicorn.access": json_only},
        "root": {"handlers": ["json"], "level": name},
    }
