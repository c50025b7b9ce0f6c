"""Whether the installed uvicorn is one the gateway's HTTP protocol fits: its release and its shape.

:mod:`bastion.gateway.transport` subclasses uvicorn's httptools protocol and
:mod:`bastion.gateway.cycle` its request/response cycle, writing response heads as
uvicorn writes them. Both lean on callbacks, arguments and attributes that are
uvicorn's internals: :func:`shape_problem` checks that they are there and that the
release is one the code was tested on (a changed behaviour behind an unchanged
signature shows in no shape; the property tests of the cycle against uvicorn's own
ran on these releases). The cycle's module calls :func:`require_fit` at import, so
that importing either module fails with ``ImportError`` on any other uvicorn and
:func:`bastion.gateway.serving.uvicorn_options` takes uvicorn's public protocol.
"""

from __future__ import annotations

import inspect

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from bastion.gateway.fence import outside_tested

#: The uvicorn releases the protocol and its cycle were tested on: 0.53 to 0.55 (0.45 to 0.52 have the
#: shape, but their cycle writes other heads: the property tests of the cycle fail there).
TESTED_UVICORN = ((0, 53), (0, 56))
_HOOKS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "send_400_response",
    "_start_asgi_task",
)
_CYCLE_ARGUMENTS = {
    "scope",
    "transport",
    "flow",
    "default_headers",
    "access_log",
    "message_event",
    "expect_100_continue",
    "keep_alive",
    "on_response",
}


def shape_problem() -> str | None:
    """What differs in the installed uvicorn from what the gateway's protocol relies on, if anything."""
    outside = outside_tested("uvicorn", uvicorn.__version__, TESTED_UVICORN)
    if outside is not None:
        return outside
    missing = [name for name in _HOOKS if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        return f"uvicorn's httptools protocol has no {', '.join(missing)}"
    if not inspect.iscoroutinefunction(getattr(RequestResponseCycle, "send", None)):
        return "uvicorn's request/response cycle has no send coroutine"
    protocol = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    cycle = inspect.signature(RequestResponseCycle.__init__).parameters
    if (
        protocol[:4] != ["self", "config", "server_state", "app_state"]
        or not cycle.keys() >= _CYCLE_ARGUMENTS
    ):
        return "uvicorn's httptools protocol takes other arguments"
    return None


def require_fit() -> None:
    """Raise ``ImportError`` (the servers then take uvicorn's public path) unless uvicorn fits."""
    problem = shape_problem()
    if problem is not None:
        raise ImportError(problem)
