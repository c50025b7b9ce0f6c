"""The gateway's own HTTP/1.1 connection pool to the upstream: asyncio protocols and llhttp.

:class:`~bastion.gateway.upstream.UpstreamClient` reaches the upstream through
aiohttp's request and response classes, which serve every kind of client and cost
the gateway CPU on every request for features it does not use. :class:`UpstreamPool`
does only what a reverse proxy needs: it writes each request head (and a buffered
body) in one ``transport.write``, parses the answer with ``httptools``' llhttp in
strict mode, and hands the body on as it arrives. What it keeps of aiohttp's
behaviour, so that the proxy answers the same:

- no header of its own but ``Host`` (unless ``preserve_host``) and the body's framing:
  ``Content-Length`` for a buffered body; ``Content-Length: 0`` when there is no body
  and the method is not GET, HEAD, OPTIONS or TRACE (what aiohttp 3.14 sends with
  ``data=None``: DELETE, POST, PUT, PATCH and other methods get it); ``Transfer-Encoding:
  chunked`` for a streamed body without a length;
- one more try on a new connection when a reused keep-alive connection turns out to
  have been closed before any byte of an answer came, for idempotent methods whose
  body can be sent again (RFC 9112 section 9.3.1); never after a failure to connect;
- the read timeout bounds the wait for the final head as a whole, from the end of the
  request (interim responses do not restart it), then each silence of the body.

What it refuses, because a pooled connection that loses track of where a message
ends serves the next client someone else's answer: header fields with CR, LF or NUL;
a streamed body longer or shorter than its ``Content-Length``; whatever llhttp finds
ambiguous (``Content-Length`` with ``Transfer-Encoding``, two lengths, a bad chunk
size); a head beyond :data:`MAX_HEADERS` fields, ``MAX_FIELD_SIZE`` bytes a name or
value, or :data:`MAX_HEAD_BYTES` in all. A connection is reused only when its answer
was complete and kept alive and the request body was all sent; bytes arriving when
no request is outstanding close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from typing import TYPE_CHECKING, cast

from yarl import URL

from bastion.config.gateway import GatewayConfig
from bastion.gateway.pool_connection import Connection, PooledResponse, send_stream
from bastion.gateway.seam import RequestBody
from bastion.gateway.upstream import IDEMPOTENT_METHODS, UpstreamClient
from bastion.gateway.upstream_wire import (
    COPY_LIMIT,
    MAX_HEADERS,
    StaleConnection,
    UpstreamBadResponse,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamReadTimeout,
    request_head,
)

if TYPE_CHECKING:
    import aiohttp

    from bastion.gateway.seam import UpstreamTransport

__all__ = [
    "MAX_HEADERS",
    "Connection",
    "PooledResponse",
    "StaleConnection",
    "UpstreamBadResponse",
    "UpstreamConnectError",
    "UpstreamConnectTimeout",
    "UpstreamDisconnected",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamReadTimeout",
    "request_head",
]


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to the upstream, and requests sent over them.

    At most ``pool_size`` connections are open; idle ones are reused last-in first-out
    and closed after ``keepalive_timeout``; a request finding none free waits for one
    (first come, first served) for at most ``connect_timeout``. WebSocket upgrades go
    through the aiohttp session :meth:`start` returns, not through the pool.
    """

    errors: tuple[type[BaseException], ...] = (UpstreamError,)
    connect_timeouts: tuple[type[BaseException], ...] = (UpstreamConnectTimeout,)
    fallback_reason: str | None = None

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._client = UpstreamClient(config, direct=False)
        self._limit = config.pool_size
        self._keepalive = config.keepalive_timeout.seconds
        self._connect_timeout = config.connect_timeout.seconds
        self._read_timeout: float | None = config.read_timeout.seconds or None
        self._loop: asyncio.AbstractEventLoop = cast("asyncio.AbstractEventLoop", None)
        self._idle: list[Connection] = []
        #: Every connection asyncio reports made and not yet lost.
        self._all: set[Connection] = set()
        #: Connections open or opening (a waiter handed a free slot holds it already).
        self._count = 0
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._origin: tuple[str, str] = ("", "")
        self._address: tuple[str, int, ssl.SSLContext | None] = ("", 0, None)
        self._host: str | None = None
        self._open = False
        self._emptied: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        """Whether the pool is closed (or was never opened)."""
        return not self._open

    async def start(self) -> aiohttp.ClientSession:
        """Open the pool (idempotent); returns the aiohttp session WebSocket upgrades use."""
        self._loop = asyncio.get_running_loop()
        self._open = True
        return await self._client.start()

    async def close(self) -> None:
        """Close every connection (in use or idle) and the WebSocket session."""
        self._open = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamError("the upstream pool was closed"))
        self._idle.clear()
        for conn in list(self._all):
            if conn.response is not None:
                conn.response._fail(UpstreamDisconnected("the upstream pool was closed"))
            conn.close()
        if self._all:
            self._emptied = self._loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._emptied, 5)
        await self._client.close()

    async def reachable(self, url: URL) -> bool:
        """Whether the pool is open and the upstream accepts a TCP connection within ``connect_timeout``."""
        if self.closed:
            return False
        return await self._client.reachable(url)

    async def send(
        self, method: str, url: URL, headers: list[tuple[str, str]], data: RequestBody
    ) -> PooledResponse:
        """Send one request; returns the response once its final head has arrived.

        Raises :class:`UpstreamError` when the upstream cannot be reached, breaks off or
        answers malformed, :class:`UpstreamConnectTimeout` or :class:`UpstreamReadTimeout`.
        """
        if not self._open:
            await self.start()
        method = method.upper()
        origin = (url.scheme, url.raw_authority)
        if origin != self._origin:
            self._switch(url, origin)
        head, length = request_head(method, url.raw_path_qs, self._host, headers, data)
        if data is None or isinstance(data, bytes):
            if data and len(data) <= COPY_LIMIT:
                head += data
                data = None
            retry = method in IDEMPOTENT_METHODS
            fresh = False
            while True:
                response = await self._request(fresh, method)
                conn = response._conn
                try:
                    if conn is not None:
                        conn.transport.write(head)
                        if data:
                            conn.transport.write(data)
                        response.body_sent()
                    await response.head()
                except StaleConnection:
                    if not retry:
                        raise
                    retry = False
                    fresh = True  # the idle ones may be as stale
                    continue
                return response
        response = await self._request(False, method)
        conn = response._conn
        if conn is not None:
            conn.transport.write(head)
            response._writer = self._loop.create_task(send_stream(conn, response, data, length))
        await response.head()
        return response

    async def _request(self, fresh: bool, method: str) -> PooledResponse:
        """A connection, with the response that will parse its answer."""
        conn, reused = await self._acquire(fresh)
        response = PooledResponse(self, conn, method == "HEAD", reused)
        if conn.transport.is_closing():
            # Closed between being made or handed over and now (bytes nobody asked for):
            # as if it closed under the request.
            response.connection_lost(None)
        else:
            conn.response = response
        return response

    # -- the pool -----------------------------------------------------------------------

    def _switch(self, url: URL, origin: tuple[str, str]) -> None:
        """Requests now go to another origin (the first, in practice): idle connections are closed."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self._origin = origin
        tls = ssl.create_default_context() if url.scheme == "https" else None
        self._address = (url.raw_host or "", url.port or (443 if tls else 80), tls)
        self._host = None if self.config.preserve_host else url.host_port_subcomponent

    async def _acquire(self, fresh: bool) -> tuple[Connection, bool]:
        """A connection to the current origin, and whether it served a request before."""
        idle = self._idle
        while idle and not fresh:
            conn = idle.pop()
            if not conn.transport.is_closing():
                return conn, True
        if self._count < self._limit and not self._waiters:
            self._count += 1
            return await self._connect(), False
        if fresh and idle:
            idle.pop(0).close()  # its slot comes to the first waiter
        waiter: asyncio.Future[Connection | None] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._connect_timeout):
                handed_over = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self._put(handed)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise UpstreamConnectTimeout(
                    "no upstream connection was free within the connect timeout"
                ) from exc
            raise
        if handed_over is None:
            return await self._connect(), False
        return handed_over, True

    async def _connect(self) -> Connection:
        """Open a connection in a slot already counted (freed again when it fails)."""
        host, port, tls = self._address
        conn = Connection(self, self._origin)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._loop.create_connection(
                    lambda: conn, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except BaseException as exc:
            if conn.transport is not None:
                conn.close()  # made just as the wait ended: its loss frees the slot
            else:
                self._free_slot()
            if isinstance(exc, TimeoutError):
                raise UpstreamConnectTimeout(
                    f"no connection to {host}:{port} within the connect timeout"
                ) from exc
            if isinstance(exc, OSError):
                raise UpstreamConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
            raise
        return conn

    def _put(self, conn: Connection) -> None:
        """A connection whose response is complete: to the first waiter, or idle."""
        if conn.closed or conn.origin != self._origin or not self._open:
            conn.close()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_at = self._loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_at(conn.idle_at + self._keepalive, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for ``keepalive_timeout`` (the oldest are first)."""
        self._sweeper = None
        idle = self._idle
        expired = self._loop.time() - self._keepalive
        while idle and idle[0].idle_at <= expired:
            idle.pop(0).close()
        if idle:
            self._sweeper = self._loop.call_at(idle[0].idle_at + self._keepalive, self._sweep)

    def _lost(self, conn: Connection) -> None:
        """A connection closed: its slot goes to the first waiter, or is free."""
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._free_slot()
        if not self._all and self._emptied is not None and not self._emptied.done():
            self._emptied.set_result(None)

    def _free_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it, still counted
                return
        self._count -= 1

    @property
    def open_connections(self) -> int:
        """How many connections are open now (in use or idle)."""
        return len(self._all)


if TYPE_CHECKING:

    def _is_a_transport(pool: UpstreamPool) -> UpstreamTransport:
        return pool
