"""ASGI type aliases, the per-request context guards share, and small helpers.

Guards talk to each other only through :class:`RequestContext`, stored in the
scope under :data:`SCOPE_KEY`. The outermost guard creates it; inner guards fill
in what they learn (route, client, body) and add response headers to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

from bastion.problems import PayloadTooLarge, ProblemLinks

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

SCOPE_KEY = "bastion"
#: Marks the HTTP scope of a WebSocket handshake that the gateway runs through the
#: guards as the GET request it is; holds the WebSocket's own ``(scope, receive, send)``.
HANDSHAKE_KEY = "bastion.websocket_handshake"


class _Done:
    """An awaitable that is already finished: ``await DONE`` returns ``None`` at once.

    For ``send`` wrappers written as plain functions that return the next ``send``'s
    awaitable, on the paths where there is nothing to send.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]  # an empty iterator is a finished awaitable


#: The finished awaitable (see :class:`_Done`).
DONE: Awaitable[None] = _Done()


#: Headers that belong to one connection and never cross a proxy.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


class RequestContext:
    """What bastion knows about one request, shared by the guards through the scope.

    A plain class with slots rather than a dataclass: one is built per request, and
    this is the cheapest way Python has to build an object with these fields.
    """

    __slots__ = (
        "body",
        "client_id",
        "client_ip",
        "log",
        "operation",
        "operation_id",
        "path_params",
        "problem_code",
        "request_id",
        "response_headers",
        "route",
        "span",
        "span_id",
        "status",
        "tier",
        "trace_flags",
        "trace_id",
        "type_base",
    )

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        request_id: str,
        trace_flags: str = "01",
        type_base: str | ProblemLinks = "",
        *,
        route: str | None = None,
        operation_id: str | None = None,
        operation: Any = None,
        path_params: dict[str, str] | None = None,
        client_id: str | None = None,
        client_ip: str | None = None,
        tier: str | None = None,
        body: bytes | None = None,
        status: int | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.request_id = request_id
        self.trace_flags = trace_flags
        #: ``errors.type_base`` (with ``docs_url``), so that code outside the guards renders the
        #: same problems.
        self.type_base = type_base
        #: The route template (``/orders/{id}``) once routing found it.
        self.route = route
        self.operation_id = operation_id
        #: The compiled operation from the OpenAPI description, when there is one.
        self.operation = operation
        self.path_params: dict[str, str] = path_params if path_params is not None else {}
        self.client_id = client_id
        self.client_ip = client_ip
        self.tier = tier
        #: The request body once a guard has read it; later guards reuse it.
        self.body = body
        #: Headers every response to this request carries (rate limit headers, ...).
        self.response_headers: Headers = []
        self.status = status
        self.problem_code: str | None = None
        #: Free-form facts for the access log line (``idempotency: replayed``, ...).
        self.log: dict[str, Any] = {}
        #: The server span (``bastion.observability.otel.ServerSpan``) when tracing is on;
        #: guards add events to it with :func:`bastion.observability.record_event`.
        self.span: Any = None

    def __repr__(self) -> str:
        return f"RequestContext(trace_id={self.trace_id!r}, route={self.route!r})"


def context_of(scope: Scope) -> RequestContext | None:
    """The bastion context of a request, or ``None`` outside bastion."""
    ctx = scope.get(SCOPE_KEY)
    return ctx if isinstance(ctx, RequestContext) else None


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lower-case bytes), in order."""
    return [bytes(v) for k, v in scope["headers"] if k == name]


class ClientDisconnected(Exception):
    """The client went away before its request body arrived."""


async def read_request_body(
    receive: Receive, ctx: RequestContext, limit: int, declared_length: bytes | None = None
) -> tuple[bytes, Receive]:
    """The request body and the ``receive`` to pass inward: the one place a body is read.

    Read once per request and kept in ``ctx.body``: the guard that reads first (validation,
    else idempotency) reads it, the others and the application get it replayed. A
    ``Content-Length`` (``declared_length``) over ``limit`` is refused before anything is
    read; reading stops as soon as the body passes ``limit``. Both raise
    :class:`~bastion.problems.PayloadTooLarge`; a client gone before its body ends raises
    :class:`ClientDisconnected` (nobody is left to answer).
    """
    body = ctx.body
    if body is not None:
        return body, receive
    # More digits than any limit has are too large without int(), which refuses very long ones.
    if (
        declared_length is not None
        and declared_length.isdigit()
        and (len(declared_length) > 18 or int(declared_length) > limit)
    ):
        raise PayloadTooLarge(detail=f"the body is larger than {limit} bytes")
    message = await receive()
    size = 0
    chunks: list[bytes] = []
    while True:
        kind = message["type"]
        if kind == "http.disconnect":
            raise ClientDisconnected
        if kind == "http.request":
            chunk = message.get("body") or b""
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(detail=f"the body is larger than {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        message = await receive()
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    ctx.body = body
    return body, replay_body(body, receive)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to the real one (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_bytes(send: Send, status: int, headers: Headers, body: bytes) -> None:
    """Send a whole response in two messages."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
