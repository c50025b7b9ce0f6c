"""Structured JSON log lines: one access line per request, one line per error.

Each :class:`bastion.Bastion` owns its logger (no global structlog configuration is
touched), writing JSON lines to standard error unless given another stream.
bastion's own servers route uvicorn's loggers (and the standard library's) into the
same shape of line (:func:`server_log_config`), so their standard error is JSON only.

Lines to a file of the operating system (standard error, a pipe, a file) are written
by the process's :class:`~bastion.observability.logwriter.LogWriter`, off the request
path; an in-memory stream is written at once.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import orjson
import structlog

from bastion.observability.logwriter import LogWriter, writer_for
from bastion.tracing import add_trace_id

if TYPE_CHECKING:
    from bastion.observability.metrics import Metrics

#: Called once for each line the log writer dropped (its queue was full).
OnDrop = Callable[[], None]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def timestamp() -> float:
    """The ``ts`` of a line: the time now in seconds, to the microsecond.

    Rounded in integers: ``round(time.time(), 6)`` costs six times as much, on every request.
    """
    return (time.time_ns() + 500) // 1000 / 1e6


def _timestamp(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["ts"] = timestamp()
    return event


def _dumps(event: Any, **_kw: Any) -> bytes:
    return orjson.dumps(event, default=repr)


class QueuedLogger:
    """structlog's end of the chain for a stream with a log writer: the rendered line is handed over.

    Rendering stays on the caller's thread (these lines are few, and their fields may be
    objects the caller keeps changing); the write does not.
    """

    def __init__(self, writer: LogWriter, on_drop: OnDrop | None = None) -> None:
        self.writer = writer
        self.on_drop = on_drop

    def msg(self, message: bytes) -> None:
        """Hand one rendered line over to the writer."""
        if not self.writer.put(message + b"\n") and self.on_drop is not None:
            self.on_drop()

    debug = info = warning = warn = error = critical = exception = fatal = failure = msg


def make_logger(
    level: str = "info", stream: IO[bytes] | None = None, *, on_drop: OnDrop | None = None
) -> Any:
    """A structlog logger that writes one JSON object per line to ``stream``.

    ``on_drop`` is called for each line dropped because the log writer's queue was full.
    """
    out = stream if stream is not None else sys.stderr.buffer
    writer = writer_for(out)
    return structlog.wrap_logger(
        QueuedLogger(writer, on_drop) if writer is not None else structlog.BytesLogger(cast(BinaryIO, out)),
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
    and the fields), but costs a third as much: it runs on every request. With a log
    writer (a stream that is a file of the operating system) the request only hands the
    fields over; they are rendered and written on the writer's thread.
    """

    def __init__(
        self,
        stream: IO[bytes] | None = None,
        *,
        enabled: bool = True,
        on_drop: OnDrop | None = None,
        writer: LogWriter | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self.enabled = enabled
        #: Where the lines go off the request path (None: written at once).
        self.writer = writer if writer is not None else writer_for(self.stream)
        self.on_drop = on_drop

    def write(self, fields: dict[str, Any]) -> None:
        """Write one access line made of ``fields``, which are handed over: they must not change after."""
        fields["event"] = "request"
        fields["level"] = "info"
        fields["ts"] = timestamp()
        writer = self.writer
        if writer is not None:
            if not writer.put(fields) and self.on_drop is not None:
                self.on_drop()
            return
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
            rendered = orjson.dumps(line, default=repr, option=orjson.OPT_APPEND_NEWLINE)
            writer = writer_for(stream)
            if writer is not None:
                writer.put(rendered)
                return
            stream.write(rendered)
            stream.flush()
        except Exception:
            self.handleError(record)


def dropped_lines_counter(metrics: Metrics | None, line: str) -> OnDrop | None:
    """What counts a dropped ``line`` (``access`` or ``event``) in ``bastion_log_lines_dropped_total``."""
    if metrics is None:
        return None
    tally = metrics.tally(
        "bastion_log_lines_dropped_total",
        "Log lines dropped because the log writer's queue was full (the stream was not read fast enough).",
        ["line"],
    )
    slot = tally.slot(line)
    return lambda: tally.add(slot)


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
