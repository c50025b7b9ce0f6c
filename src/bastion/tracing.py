"""Trace ids: W3C ``traceparent``, ``X-Request-ID`` and the log context that carries them.

An incoming valid ``traceparent`` is continued (same trace id, a new span id);
a malformed one or one with an all-zero id is ignored and a new trace starts.
A valid incoming ``X-Request-ID`` is echoed; otherwise the request id is the trace id.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

_HEX = frozenset(b"0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")

_current_trace_id: ContextVar[str | None] = ContextVar("bastion_trace_id", default=None)
#: The context variable behind :func:`current_trace_id`; the boundary sets it directly.
TRACE_ID = _current_trace_id


def new_trace_id() -> str:
    """A random 128-bit trace id as 32 lower-case hex digits."""
    return os.urandom(16).hex()


def new_span_id() -> str:
    """A random 64-bit span id as 16 lower-case hex digits."""
    return os.urandom(8).hex()


def parse_traceparent(value: bytes) -> tuple[str, str] | None:
    """``(trace_id, flags)`` from a W3C ``traceparent`` value, or ``None`` when it is invalid.

    Version ``00`` must have exactly four fields; later versions may add fields after
    the flags, as the specification asks parsers to allow. Version ``ff`` is invalid.
    """
    value = value.strip()
    if len(value) < 55:
        return None
    version = value[0:2]
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    if version == b"ff" or not _all_hex(version):
        return None
    if version == b"00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55:56] != b"-":
        return None
    trace_id = value[3:35]
    parent_id = value[36:52]
    flags = value[53:55]
    if not (_all_hex(trace_id) and _all_hex(parent_id) and _all_hex(flags)):
        return None
    trace = trace_id.decode()
    if trace == _ZERO_TRACE or parent_id.decode() == _ZERO_SPAN:
        return None
    return trace, flags.decode()


def _all_hex(value: bytes) -> bool:
    return all(c in _HEX for c in value)


def format_traceparent(trace_id: str, span_id: str, flags: str = "01") -> bytes:
    """The ``traceparent`` value for this hop."""
    return f"00-{trace_id}-{span_id}-{flags}".encode()


def valid_request_id(value: bytes) -> bool:
    """Whether an incoming ``X-Request-ID`` is safe to echo and log (bounded, plain characters)."""
    return _REQUEST_ID_RE.match(value) is not None


def current_trace_id() -> str | None:
    """The trace id of the request being handled in this task, or ``None``."""
    return _current_trace_id.get()


def bind_trace_id(trace_id: str | None) -> Any:
    """Make ``trace_id`` the current one; returns a token for :func:`reset_trace_id`."""
    return _current_trace_id.set(trace_id)


def reset_trace_id(token: Any) -> None:
    """Restore the trace id that was current before :func:`bind_trace_id`."""
    _current_trace_id.reset(token)


def add_trace_id(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor that adds the current trace id to application log lines."""
    trace_id = _current_trace_id.get()
    if trace_id is not None:
        event.setdefault("trace_id", trace_id)
    return event
