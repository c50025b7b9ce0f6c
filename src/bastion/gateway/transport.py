"""One write per response, one check per response head: the gateway's HTTP protocol for uvicorn.

uvicorn writes a response's head as soon as the app sends ``http.response.start``
and its body on the next message: two system calls and two TCP segments for a
small response that a proxy hands on whole. The gateway's protocol gives uvicorn
a transport that gathers the writes made in one turn of the event loop and sends
them together at the end of it, so a small proxied response costs one write.
Nothing waits longer than that turn; closing or half-closing sends what is
gathered first.

uvicorn also checks every response header name and value with a regular
expression of its own, two searches per header: a proxied response with the
rate limit and trace headers has a dozen. The bytes those expressions reject do
not depend on where one header ends and the next begins, so the gateway's cycle
checks all the names at once and all the values at once, for the same bytes,
and writes the head as uvicorn does; when something is refused, or out of the
ordinary, uvicorn's own code runs and raises its own error.

Both classes build on :class:`GuardedHttpProtocol`, uvicorn's httptools protocol with
the limits of :mod:`bastion.gateway.serving` (head and body timeouts, head size,
connection ceiling, problems for its own errors), which ``bastion demo`` serves with
too. They subclass uvicorn's protocol and lean on its callbacks and attributes: the
import checks their shape first and raises ``ImportError`` when it differs, so that
the servers fall back to uvicorn's public settings.
"""

from __future__ import annotations

import asyncio
import inspect
from itertools import chain
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from bastion.gateway.serving import (
    RefusalLog,
    ServerLimits,
    headers_too_large,
    invalid_request,
    problem_response,
    request_timeout,
    too_many_connections,
)
from bastion.problems import Problem

#: The uvicorn releases whose httptools protocol has the shape the classes here rely on.
TESTED_UVICORN = ((0, 30), (1, 0))
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
_CYCLE_ARGUMENTS = {"transport", "flow", "message_event", "expect_100_continue", "keep_alive", "on_response"}


def _shape_problem() -> str | None:
    """What differs in the installed uvicorn from what the protocols here rely on, if anything."""
    try:
        version = tuple(int(part) for part in uvicorn.__version__.split(".")[:2])
    except ValueError:
        return f"uvicorn {uvicorn.__version__} has an unknown version scheme"
    if not TESTED_UVICORN[0] <= version < TESTED_UVICORN[1]:
        return f"uvicorn {uvicorn.__version__} is outside the tested range"
    missing = [name for name in _HOOKS if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        return f"uvicorn's httptools protocol has no {', '.join(missing)}"
    protocol = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    cycle = inspect.signature(RequestResponseCycle.__init__).parameters
    if (
        protocol[:4] != ["self", "config", "server_state", "app_state"]
        or not cycle.keys() >= _CYCLE_ARGUMENTS
    ):
        return "uvicorn's httptools protocol takes other arguments"
    return None


_SHAPE_PROBLEM = _shape_problem()
if _SHAPE_PROBLEM is not None:
    raise ImportError(_SHAPE_PROBLEM)

#: Translation tables: 1 for each byte uvicorn's expressions refuse in a header name (but the
#: newline, counted apart) or value, else 0.
_NAME_REFUSED_BUT_LF = bytes(1 if HEADER_RE.match(bytes([b])) and b != 10 else 0 for b in range(256))
_VALUE_REFUSED = bytes(1 if HEADER_VALUE_RE.match(bytes([b])) else 0 for b in range(256))


class CoalescingTransport:
    """Wraps a transport: writes made in one event-loop turn go out as one write."""

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; it is written when the current event-loop turn ends."""
        if not data:
            return
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        """Queue every chunk, as :meth:`write` does."""
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Write what is queued now."""
        if not self._buffer:
            return
        buffer = self._buffer
        self._buffer = []
        if self._transport.is_closing():
            return
        self._transport.write(buffer[0] if len(buffer) == 1 else b"".join(buffer))

    def close(self) -> None:
        """Write what is queued, then close."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Write what is queued, then half-close."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is queued and close at once."""
        self._buffer = []
        self._transport.abort()

    def is_closing(self) -> bool:
        """Whether the connection is closing (asked after every response: no ``__getattr__`` detour)."""
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        """Bytes waiting to be written, queued here or in the transport."""
        return sum(len(b) for b in self._buffer) + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayResponseCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, with the response head checked in one pass per side.

    The head is written here, as uvicorn writes it; everything else (the body, the
    access log on, a refused header, a head with its own ``Transfer-Encoding`` or
    ``Connection``, a message out of order) goes to uvicorn's own ``send``, which
    raises its own errors. A property test holds the two to the same
    bytes and states. (Writing the body here too saved 3,200 instructions per request
    of 608,000: not worth a second copy of uvicorn's framing.)
    """

    async def send(self, message: Any) -> None:
        """Send an ASGI message to the client."""
        if (
            self.response_started
            or self.disconnected
            or self.access_log
            or message.get("type") != "http.response.start"
        ):
            await super().send(message)
            return
        if self.flow.write_paused:
            await self.flow.drain()
            if self.disconnected:
                return
        headers = self.default_headers + list(message.get("headers", []))
        # The names joined by newlines and lowered, the values joined: one pass each in C
        # (translation tables) finds any byte uvicorn refuses. A newline inside a name is
        # refused too: it shows as one newline too many.
        try:
            names, values = zip(*headers, strict=True)  # pairs only, else ValueError
            lowered = b"\n".join(names).lower()
            refused = (
                1 in lowered.translate(_NAME_REFUSED_BUT_LF)
                or lowered.count(b"\n") != len(headers) - 1
                or 1 in b"".join(values).translate(_VALUE_REFUSED)
            )
        except (TypeError, ValueError):  # no headers, or not pairs of bytes: uvicorn's loop says which
            refused = True
        if refused:
            await super().send(message)
            return
        lowered_names = lowered.split(b"\n")
        if b"transfer-encoding" in lowered_names or b"connection" in lowered_names:
            # Framing or connection headers of the app's own: uvicorn's loop reads them. A
            # proxied response never has them (both are hop-by-hop).
            await super().send(message)
            return
        length = None
        if b"content-length" in lowered_names:
            try:
                length = int(values[lowered_names.index(b"content-length")].decode())
            except ValueError:  # uvicorn's loop raises its own error, in its own state
                await super().send(message)
                return
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        content = [STATUS_LINE[status_code]]
        if length is not None:
            self.expected_content_length = length
            self.chunked_encoding = False
        content += (b"\r\n".join(map(b": ".join, zip(lowered_names, values, strict=True))), b"\r\n")
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status_code not in (204, 304):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bastion's limits on each client connection.

    A head must arrive whole within ``header_timeout`` of the connection or of its
    first byte; a body may pause at most ``body_timeout`` between chunks (unless the
    server paused reading); a head is capped in bytes and fields; a connection over
    the per-process ceiling is answered with a problem and closed. Everything the
    server answers itself is a problem, after which the connection is closed.
    """

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ServerLimits,
        refusals: RefusalLog,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.refusals = refusals
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True
        self._head_begun = False
        self._head_too_large = False
        #: Bytes received for a head the parser has not finished: a field still growing
        #: (which the parser reports only once it ends) is counted here.
        self._raw_head_bytes = 0
        self._heads_parsed = 0
        #: The size of the read being parsed.
        self._read_size = 0
        self._body_pending = False
        self._last_body_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.refusals.refused_one(self.loop.time(), len(self.connections) - 1)
            self._refuse(too_many_connections())
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # The callbacks run for every request: they call uvicorn's by name, which costs less
    # than super() on Python 3.11, and the head is measured once, when it is complete
    # (bytes of a head still arriving are counted in data_received).

    def data_received(self, data: bytes) -> None:
        awaiting = self._awaiting_head
        parsed = self._heads_parsed
        self._read_size = len(data)
        HttpToolsProtocol.data_received(self, data)
        # Timers are armed once the bytes are parsed, and only for what is still awaited:
        # a request that arrives whole in one read costs none.
        if self.transport.is_closing():
            return
        if self._awaiting_head:
            if awaiting and parsed == self._heads_parsed:
                # No head was completed by these bytes: all of them belong to the one awaited.
                self._head_begun = True
                self._raw_head_bytes += len(data)
                if self._raw_head_bytes > self.limits.max_header_bytes:
                    self._refuse(headers_too_large(self.limits))
                    return
            if self._head_begun and self._head_timer is None:
                self._arm_head_timer()
        elif self._body_pending and self._body_timer is None:
            self._last_body_at = self.loop.time()
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._head_begun = True
        self._raw_head_bytes = 0

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._awaiting_head = self._head_begun = False
        self._heads_parsed += 1
        headers = self.headers
        limits = self.limits
        if len(headers) > limits.max_headers or (
            # The bytes read for this head bound its size; only a head read in more bytes
            # than the limit is measured: the target, each name and value, ": " and CRLF.
            self._raw_head_bytes + self._read_size > limits.max_header_bytes
            and len(self.url) + sum(map(len, chain.from_iterable(headers))) + 4 * len(headers)
            > limits.max_header_bytes
        ):
            self._head_too_large = True
            # Stops the parser: uvicorn's data_received then calls send_400_response.
            raise ValueError("request head over the limits")
        previous = self.cycle
        HttpToolsProtocol.on_headers_complete(self)
        # A request (not an upgrade): its body may follow.
        self._body_pending = self.cycle is not previous

    def on_body(self, body: bytes) -> None:
        self._last_body_at = self.loop.time()
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body_pending = False
        self._awaiting_head = True

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused (or a head over the limits) with a problem."""
        self._refuse(headers_too_large(self.limits) if self._head_too_large else invalid_request())

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # A connection that sent nothing asked nothing: it is closed without an answer.
        self._refuse(request_timeout("head", self.limits.header_timeout) if self._head_begun else None)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle.response_complete:  # answered already: only the connection is left to close
            self._refuse(None)
            return
        now = self.loop.time()
        # Silence the server caused (reading paused while the app catches up, or a client
        # waiting for the 100 Continue the app has not asked for yet) is not the client's.
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            self._last_body_at = now
        idle = now - self._last_body_at
        if idle < self.limits.body_timeout:
            self._body_timer = self.loop.call_later(self.limits.body_timeout - idle, self._body_timed_out)
            return
        self._refuse(request_timeout("body", self.limits.body_timeout))

    def _refuse(self, problem: Problem | None) -> None:
        """Answer ``problem`` (if any, and unless a response has begun) and close the connection."""
        self._cancel_timers()
        cycle = self.cycle
        started = False
        if cycle is not None and not cycle.response_complete:
            started = cycle.response_started
            # The app's receive() now returns http.disconnect and its sends go nowhere.
            cycle.keep_alive = False
            cycle.disconnected = True
            cycle.message_event.set()
        if problem is not None and not started and not self.transport.is_closing():
            self.transport.write(
                problem_response(problem, self.limits.type_base, self.server_state.default_headers)
            )
        self.transport.close()


class GatewayHttpProtocol(GuardedHttpProtocol):
    """The guarded protocol over a :class:`CoalescingTransport`, with the gateway's cycle."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        """uvicorn's, but an absolute-form target (``GET http://host/x``) stays whole in ``raw_path``.

        uvicorn keeps only its path, so the guards could not tell which host the client
        named; :mod:`bastion.routing.paths` accepts the target only for this server.
        """
        super().on_headers_complete()
        if self.url[:1] != b"/" and "raw_path" in self.scope:
            self.scope["raw_path"] = self.url.partition(b"?")[0]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn builds the cycle inside on_headers_complete, which offers no hook for
        # the class; every cycle passes through here before its task starts, and the
        # subclass adds no state, so the object is retyped in place.
        cycle.__class__ = GatewayResponseCycle
        super()._start_asgi_task(cycle, app)
