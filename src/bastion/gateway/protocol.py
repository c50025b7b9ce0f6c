"""The gateway's own HTTP/1.1 server: llhttp (httptools) on an asyncio protocol, one object per connection.

uvicorn still runs the processes (workers, signals, lifespan, graceful shutdown):
this class fills the slot uvicorn offers for an HTTP protocol class (its ``http``
setting), so the contract with it is the constructor's arguments, the
``server_state`` it shares between connections (``connections``, ``tasks``,
``total_requests``, ``default_headers``) and ``shutdown()``. :func:`slot_problem`
checks that contract once; where it does not hold, the servers take uvicorn's own
protocol (:func:`bastion.gateway.serving.uvicorn_options`).

What a connection does:

- each request is an :class:`~bastion.gateway.exchange.Exchange` run as one task;
  requests pipelined behind it wait, in order, with reading paused, and their
  bodies are buffered only up to what one read brings;
- the limits of :class:`~bastion.gateway.serving.ServerLimits`: the whole head within
  ``header_timeout`` of the connection or of its first byte, at most
  ``body_timeout`` of silence inside a body (silence the server caused does not
  count), heads capped in bytes (counted as they arrive, so a field that never ends
  is never buffered past the cap) and fields (counted one by one), at most
  ``max_connections`` per process, idle keep-alive connections closed after
  ``keepalive_timeout``;
- everything it answers itself is a problem, after which it closes: a request
  llhttp refuses (strict: no ``Content-Length`` with ``Transfer-Encoding``, no bare
  line feeds, no obsolete line folding) is ``400``;
- a response that ends before its request body has all arrived closes the
  connection: the rest of that body must never be read as the next request;
- a WebSocket upgrade goes to uvicorn's WebSocket protocol (its ``ws`` setting),
  which then owns the connection; another upgrade is served as a plain request and
  the connection closed after it.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from typing import Any

import httptools

from bastion.gateway.exchange import Exchange
from bastion.gateway.fence import outside_tested
from bastion.gateway.serving import (
    RefusalLog,
    ServerLimits,
    headers_too_large,
    invalid_request,
    problem_response,
    request_timeout,
    too_many_connections,
)
from bastion.problems import InternalError, Problem

_log = logging.getLogger("uvicorn.error")

#: Request body bytes buffered for the app before reading pauses.
HIGH_WATER = 65_536
#: After the last response, how long and how much of what the client still sends is read and
#: dropped before the connection closes (see :meth:`GatewayProtocol._close`).
LINGER_SECONDS = 5.0
LINGER_BYTES = 64 << 20
_ASGI = {"version": "3.0", "spec_version": "2.3"}


class _HeadOverLimits(Exception):
    """Raised from a parser callback: the head has more fields than allowed."""


#: The uvicorn releases whose protocol slot the class was tested in (0.30 up to 0.56, not included).
TESTED_UVICORN = ((0, 30), (0, 56))


def slot_problem() -> str | None:
    """What in the installed uvicorn differs from what the protocol relies on, if anything.

    The contract is uvicorn's slot for a protocol class: the keyword arguments it is
    built with, the state its server shares between connections, and ``shutdown()``.
    The release is checked (a changed behaviour shows in no attribute), then the state.
    """
    import uvicorn
    from uvicorn.server import ServerState

    outside = outside_tested("uvicorn", uvicorn.__version__, TESTED_UVICORN)
    if outside is not None:
        return outside
    state = ServerState()
    missing = [
        name
        for name in ("connections", "tasks", "total_requests", "default_headers")
        if not hasattr(state, name)
    ]
    if missing:
        return f"uvicorn's server state has no {', '.join(missing)}"
    return None


class GatewayProtocol(asyncio.Protocol):
    """One client connection: parse requests, run each through the app, write the responses."""

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
        self.config = config
        self.app = config.loaded_app
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.limits = limits
        self.refusals = refusals
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.root_path: str = config.root_path
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        #: The exchange the app runs, and those parsed behind it (pipelined), in order.
        self.current: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        #: The exchange the parser fills (the last one parsed).
        self.parsing: Exchange | None = None
        # The head being parsed.
        #: The request target as llhttp hands it over, piece by piece (joined once: a target
        #: trickling in a byte a read must not cost a copy of all before it each time).
        self._url_parts: list[bytes] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect_continue = False
        self._upgrade: bytes | None = None
        self._head_bytes = 0
        self._read_size = 0
        self._awaiting_head = True
        self._head_begun = False
        self._heads = 0
        self._head_too_large = False
        self._eof = False
        # Timers and flow.
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_left = 0
        self._last_body_at = 0.0
        self.read_paused = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._closing = False

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)
        self.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        if len(self.connections) > self.limits.max_connections:
            self.refusals.refused_one(self.loop.time(), len(self.connections) - 1)
            self._refuse(too_many_connections())
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._closing = True
        self._cancel_timers()
        for exchange in (self.current, *self.queue):
            if exchange is not None:
                exchange.gone()
        self.queue.clear()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def eof_received(self) -> bool | None:
        # A half-closed client still gets its answer; the connection closes once it is written.
        self._eof = True
        return True if self.current is not None and not self._closing else None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drained(self) -> None:
        """Wait until the client has taken what was written (or is gone)."""
        if not self.write_paused or self._closing:
            return
        self._drain = self.loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    def shutdown(self) -> None:
        """The server is stopping: finish the request in flight, then close (uvicorn calls this)."""
        current = self.current
        if current is None:
            self._close()
        else:
            current.keep_alive = False
            self.queue.clear()

    # -- bytes in -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closing:
            self._linger_left -= len(data)
            if self._linger_left < 0 and self.transport is not None:
                self.transport.close()
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        awaiting = self._awaiting_head
        heads = self._heads
        self._read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            if self._head_too_large:
                reason = "request head over the limits (431)"
            else:
                # A callback's own error (a target that is not ASCII, say) is named by its type.
                cause = exc.__context__
                reason = f"{type(cause).__name__ if cause is not None else exc} (400)"
            self.refusals.refused_request(self.loop.time(), reason)
            self._refuse(headers_too_large(self.limits) if self._head_too_large else invalid_request())
            return
        if self._closing:
            return
        if self._awaiting_head:
            if awaiting and heads == self._heads:
                # No head was completed by these bytes: all of them belong to the one awaited.
                self._head_bytes += len(data)
                if self._head_bytes > self.limits.max_header_bytes:
                    self._refuse(headers_too_large(self.limits))
                    return
            # Timers are armed only for what is still awaited: a request that arrives whole
            # in one read costs none.
            if self._head_begun and self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        elif self.parsing is not None and self.parsing.more_body and self._body_timer is None:
            self._last_body_at = self.loop.time()
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    # llhttp's callbacks, in the order it calls them.

    def on_message_begin(self) -> None:
        self._url_parts = []
        self._headers = []
        self._expect_continue = False
        self._upgrade = None
        self._head_begun = True

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= self.limits.max_headers:
            self._head_too_large = True
            raise _HeadOverLimits
        name = name.lower()
        # llhttp keeps trailing whitespace, which is not part of a field value (RFC 9110 section 5.5).
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        elif name == b"upgrade":
            self._upgrade = value.lower()
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        headers = self._headers
        limits = self.limits
        parts = self._url_parts
        url = self._url = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._head_bytes + self._read_size > limits.max_header_bytes and (
            len(url) + sum(len(name) + len(value) + 4 for name, value in headers) > limits.max_header_bytes
        ):
            self._head_too_large = True
            raise _HeadOverLimits
        self._awaiting_head = self._head_begun = False
        self._head_bytes = 0
        self._heads += 1
        parser = self.parser
        if parser.should_upgrade() and self._upgrade == b"websocket" and self.config.ws_protocol_class:
            return  # handed over once llhttp stops at the end of the head (data_received)
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        if url == b"*":
            raw_path, query = b"*", b""
        else:
            parsed = httptools.parse_url(url)
            raw_path = parsed.path
            query = parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        if url[:1] not in (b"/", b"*"):
            # An absolute-form target stays whole in ``raw_path`` (``path`` is its path, as
            # uvicorn's): the boundary checks which host it names.
            raw_path = url.partition(b"?")[0]
            url.decode("ascii")  # the authority too: no byte beyond ASCII anywhere
        root = self.root_path
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": query,
            "headers": headers,
            "state": self.app_state.copy(),
        }
        keep_alive = version == "1.1" and parser.should_keep_alive() and not parser.should_upgrade()
        exchange = Exchange(self, scope, keep_alive=keep_alive, expect_continue=self._expect_continue)
        self.parsing = exchange
        if self.current is None:
            self._run(exchange)
        else:
            self.queue.append(exchange)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.complete:
            return  # answered already: the rest of the body is read and dropped
        exchange.body.append(body)
        exchange.body_size += len(body)
        self._last_body_at = self.loop.time()
        if exchange.body_size > HIGH_WATER:
            self._pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self._awaiting_head = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if exchange is not None:
            exchange.more_body = False
            exchange.wake()

    # -- running the app -----------------------------------------------------------------------

    def _run(self, exchange: Exchange) -> None:
        self.current = exchange
        task = self.loop.create_task(self._serve(exchange))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, exchange: Exchange) -> None:
        try:
            await self.app(exchange.scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            # Cancelled at shutdown, past the drain timeout: the connection goes with it.
            self.drop()
            raise
        except Exception as exc:  # the app's failure is answered here, whatever it is
            _log.error("exception in the gateway's app", exc_info=exc)
            self._failed(exchange)
            return
        if not exchange.complete and not exchange.disconnected:
            _log.error("the gateway's app returned without a whole response")
            self._failed(exchange)

    def _failed(self, exchange: Exchange) -> None:
        """The app failed: a ``500`` problem if nothing was written yet; the connection closes."""
        exchange.keep_alive = False
        if not exchange.started and not exchange.disconnected:
            exchange.started = exchange.complete = True
            self._refuse(InternalError("The server could not complete the request."))
        else:
            self._close()

    def response_complete(self, exchange: Exchange) -> None:
        """The response is written: the next request on the connection, or the close."""
        self.server_state.total_requests += 1
        if exchange is not self.current:
            return
        self.current = None
        exchange.wake()  # an app still in receive() learns that it is over
        if not exchange.keep_alive or exchange.more_body or self._closing or self._eof:
            # A body not all received would be read as the next request: never.
            self._close()
            return
        if self.queue:
            self._run(self.queue.popleft())
            if not self.queue:
                self._resume_reading()
            return
        self._resume_reading()
        self._idle_timer = self.loop.call_later(self.limits.keepalive_timeout, self._close)

    def body_drained(self) -> None:
        """The app took the body buffered so far: reading may go on (unless requests wait in line)."""
        if self.read_paused and not self.queue:
            self._resume_reading()

    # -- bytes out -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self._closing:
            transport.write(data)

    def drop(self) -> None:
        """Close the connection now, without (the rest of) a response."""
        self._closing = True
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()

    def _close(self) -> None:
        """Close once what was written has left, lingering while the client may still be sending.

        Closing a socket with bytes unread makes the kernel answer with a reset, which can
        destroy the response before the client has read it (a client still sending the
        body of a request answered early, a 413 or a 429, say). So the write side closes
        first (the client reads the response, then the end), and what still comes is read
        and dropped for up to ``LINGER_SECONDS`` or ``LINGER_BYTES``, or until the client
        closes its side, as nginx's ``lingering_close`` does.
        """
        if self._closing:
            return
        self._closing = True
        self._cancel_timers()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._linger_left = LINGER_BYTES
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, transport.close)

    def _refuse(self, problem: Problem | None) -> None:
        """Answer ``problem`` (if any, unless a response has begun) and close the connection."""
        current = self.current
        started = current is not None and current.started and not current.complete
        if current is not None:
            current.gone()
        if problem is not None and not started and not self._closing:
            self.write(problem_response(problem, self.limits.type_base, self.server_state.default_headers))
        self._close()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self._closing:
            self.read_paused = False
            self.transport.resume_reading()

    # -- timers ---------------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._idle_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._idle_timer = self._linger_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._closing or not self._awaiting_head:
            return
        # A connection that sent nothing asked nothing: closed without an answer.
        self._refuse(request_timeout("head", self.limits.header_timeout) if self._head_begun else None)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        exchange = self.parsing
        if self._closing or exchange is None or not exchange.more_body:
            return
        now = self.loop.time()
        if self.read_paused or (exchange.expect_continue and not exchange.started):
            # Silence the server caused (reading paused, or 100 Continue not yet asked for).
            self._last_body_at = now
        idle = now - self._last_body_at
        if idle < self.limits.body_timeout:
            self._body_timer = self.loop.call_later(self.limits.body_timeout - idle, self._body_timed_out)
            return
        if exchange.complete:
            self._close()
            return
        self._refuse(request_timeout("body", self.limits.body_timeout))

    # -- upgrades ---------------------------------------------------------------------------------

    def _upgraded(self, rest: bytes) -> None:
        """llhttp stopped at the end of an upgrade's head: a WebSocket goes to uvicorn's protocol."""
        ws_protocol_class = self.config.ws_protocol_class
        if self._upgrade != b"websocket" or not ws_protocol_class or self.current is not None:
            # Another upgrade was served as a plain request (without its body, if any):
            # nothing after it is read.
            if self.current is not None:
                self.current.keep_alive = False
            self._pause_reading()
            if self.current is None:
                self._close()
            return
        self._cancel_timers()
        self.connections.discard(self)
        parser = self.parser
        head = [parser.get_method(), b" ", self._url, b" HTTP/1.1\r\n"]
        for name, value in self._headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        protocol = ws_protocol_class(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        assert self.transport is not None
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(b"".join(head) + rest)


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None
