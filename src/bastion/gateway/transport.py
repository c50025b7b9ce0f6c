"""bastion's HTTP protocols for uvicorn: the server's limits, and the gateway's writes and heads.

:class:`GatewayHttpProtocol` runs every connection over a
:class:`~bastion.gateway.cycle.CoalescingTransport` (one write per event-loop
turn) with the :class:`~bastion.gateway.cycle.GatewayResponseCycle` (one check per
response head); see :mod:`bastion.gateway.cycle`.

Both classes build on :class:`GuardedHttpProtocol`, uvicorn's httptools protocol with
the limits of :mod:`bastion.gateway.serving` (head and body timeouts, head size,
connection ceiling, problems for its own errors), which ``bastion demo`` serves with
too. They subclass uvicorn's protocol and lean on its callbacks and attributes: the
import checks uvicorn's release and shape first (:mod:`bastion.gateway.uvicorn_fit`)
and raises ``ImportError`` when either is off, so that the servers fall back to
uvicorn's public settings.
"""

from __future__ import annotations

import asyncio
from itertools import chain
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from bastion.gateway.cycle import CoalescingTransport, GatewayResponseCycle
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

__all__ = ["CoalescingTransport", "GatewayHttpProtocol", "GatewayResponseCycle", "GuardedHttpProtocol"]


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
