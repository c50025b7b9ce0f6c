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
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast

import httptools
from yarl import URL

from bastion.config.gateway import GatewayConfig
from bastion.gateway.seam import RequestBody
from bastion.gateway.upstream import IDEMPOTENT_METHODS, MAX_FIELD_SIZE, READ_BUFSIZE, UpstreamClient

if TYPE_CHECKING:
    import aiohttp

    from bastion.gateway.seam import UpstreamTransport

#: The most header fields a response head may have.
MAX_HEADERS = 200
#: The most bytes a response may send before its final head is complete (interim heads
#: included), or between two pieces of its body (chunk lines, trailers): no more of a
#: head is held than of a body.
MAX_HEAD_BYTES = READ_BUFSIZE
#: Methods that get no ``Content-Length: 0`` when they have no body (aiohttp's ``GET_METHODS``).
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Above this size a buffered body is written after its head rather than copied onto it.
_COPY_LIMIT = 65_536
#: What a method may be made of (RFC 9110 ``token``).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class UpstreamError(Exception):
    """The upstream could not be reached, broke off, or answered what cannot be relayed."""


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream could be opened."""


class UpstreamDisconnected(UpstreamError):
    """The connection closed before the response was complete."""


class StaleConnection(UpstreamDisconnected):
    """A reused keep-alive connection was closed before any byte of an answer came."""


class UpstreamBadResponse(UpstreamError):
    """The upstream's answer is not a well-formed HTTP/1.1 response (or is too large a head)."""


class UpstreamConnectTimeout(TimeoutError):
    """No connection to the upstream could be made within ``connect_timeout``."""


class UpstreamReadTimeout(TimeoutError):
    """The upstream stayed silent longer than ``read_timeout``."""


def request_head(
    method: str, target: str, host: str | None, headers: list[tuple[str, str]], data: RequestBody
) -> tuple[bytes, int | None]:
    """The request head, and the length a streamed body declared (``None``: chunked or not streamed).

    ``host`` goes first as ``Host`` unless ``None`` (``preserve_host``). The body's
    framing is this function's: a buffered body's own ``Content-Length`` replaces any
    given (no body: ``0``), and ``Transfer-Encoding`` is never taken from the caller.
    """
    lines = [method, " ", target, " HTTP/1.1\r\n"]
    if host is not None:
        lines.append(f"Host: {host}\r\n")
    declared: str | None = None
    for name, value in headers:
        size = len(name)
        if size == 14 or size == 17:
            lowered = name.lower()
            if lowered == "content-length":
                if declared is not None and declared != value:
                    raise UpstreamError("the request has two different Content-Length values")
                declared = value
                continue
            if lowered == "transfer-encoding":
                continue
        lines.append(f"{name}: {value}\r\n")
    length: int | None = None
    if data is None:
        # No body is sent, whatever length was given: the upstream must not wait for one.
        if declared is not None or method not in _BODYLESS_METHODS:
            lines.append("Content-Length: 0\r\n")
    elif isinstance(data, bytes):
        lines.append(f"Content-Length: {len(data)}\r\n")
    elif declared is None:
        lines.append("Transfer-Encoding: chunked\r\n")
    else:
        if not declared.isdigit() or not declared.isascii():
            raise UpstreamError(f"the request's Content-Length is not a length: {declared!r}")
        length = int(declared)
        lines.append(f"Content-Length: {length}\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # One scan each for what would split the head: every line ends in the one CRLF added here.
    breaks = len(lines) - 3
    if (
        head.count("\n") != breaks
        or head.count("\r") != breaks
        or "\0" in head
        or " " in target
        or not ((method.isalpha() and method.isascii()) or _TOKEN.fullmatch(method))
    ):
        raise UpstreamError("a request header, the method or the target holds CR, LF, NUL or a space")
    try:
        return head.encode("latin-1"), length
    except UnicodeEncodeError as exc:
        raise UpstreamError("a request header is not latin-1") from exc


class PooledResponse:
    """One response, from its head on: the parser's callbacks fill it, the proxy reads it.

    It is its own ``content`` (one object per request). The connection goes back to the
    pool as soon as the body is complete, before the proxy has read it all; until then
    ``release`` or ``close`` closes it.
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_final",
        "_framed",
        "_head_only",
        "_keep_alive",
        "_parser",
        "_paused",
        "_pool",
        "_quiet",
        "_received",
        "_reused",
        "_sent",
        "_size",
        "_timer",
        "_unsolicited",
        "_until_eof",
        "_waiter",
        "_writer",
        "content",
        "raw_headers",
        "status",
    )

    def __init__(self, pool: UpstreamPool, conn: Connection, head_only: bool, reused: bool) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self._head_only = head_only
        self._reused = reused
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.content = self
        self._chunks: list[bytes] = []
        self._size = 0
        self._final = False
        self._done = False
        self._framed = False
        self._until_eof = False
        self._keep_alive = False
        self._sent = False
        self._received = False
        self._unsolicited = False
        self._paused = False
        self._quiet = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = pool._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None

    # -- the parser's callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._final:
            self._unsolicited = True
        else:
            self.raw_headers = []  # an interim response's fields are dropped
            self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._final:
            return  # trailer fields: not relayed
        headers = self.raw_headers
        if len(headers) >= MAX_HEADERS or len(name) > MAX_FIELD_SIZE or len(value) > MAX_FIELD_SIZE:
            raise UpstreamBadResponse("the upstream's response head is too large")
        size = len(name)
        if size == 14 or size == 17:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self._framed = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            if status < 100:
                raise UpstreamBadResponse(f"the upstream answered status {status}")
            return  # 100 Continue, 103 Early Hints: the final head is still due
        self.status = status
        self._final = True
        self._keep_alive = status != 101 and self._parser.should_keep_alive()
        if self._head_only:
            self._done = True  # llhttp cannot know a HEAD response has no body
        elif status not in (101, 204, 304):
            self._until_eof = not self._framed
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_body(self, body: bytes) -> None:
        if self._done:
            self._unsolicited = True
            return
        self._quiet = 0
        self._chunks.append(body)
        self._size += len(body)
        if self._size > READ_BUFSIZE and not self._paused and self._conn is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        if self._waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if not self._final:
            return
        if self._done:
            return  # a HEAD response's (llhttp read a length of 0): more bytes would show
        self._done = True
        if self._waiter is not None:
            self._wake()

    # -- from the connection ------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the upstream (``Connection.data_received``)."""
        self._received = True
        self._quiet += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # after a 101, which is final and has no body here
        except httptools.HttpParserError as exc:
            if self._done:
                self._unsolicited = True
            else:
                cause = exc.__context__ if isinstance(exc.__context__, UpstreamBadResponse) else exc
                error = UpstreamBadResponse(f"the upstream's response is malformed: {cause}")
                error.__cause__ = exc
                self._fail(error)
                return
        if self._done:
            self._finish()
        elif self._quiet > MAX_HEAD_BYTES:
            self._fail(UpstreamBadResponse("the upstream's response head is too large"))

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection closed (``Connection.connection_lost``)."""
        self._conn = None
        if self._done:
            return
        if self._until_eof:
            self._done = True  # a body delimited by the connection's close
            self._keep_alive = False
            self._wake()
            return
        if not self._received and self._reused:
            error: UpstreamError = StaleConnection("the upstream closed a kept-alive connection")
        elif self._final:
            error = UpstreamDisconnected("the upstream closed the connection mid-body")
        else:
            error = UpstreamDisconnected("the upstream closed the connection before answering")
        error.__cause__ = exc
        self._fail(error)

    def body_sent(self) -> None:
        """The whole request went out: the head is due within the read timeout from now."""
        self._sent = True
        if self._done:
            self._finish()
        elif not self._final and self._error is None:
            seconds = self._pool._read_timeout
            if seconds is not None:
                self._timer = self._pool._loop.call_later(seconds, self._timed_out)

    def _finish(self) -> None:
        """The response is complete: its connection goes back to the pool, or is closed."""
        conn = self._conn
        if conn is None:
            return
        if self._writer is not None and not self._sent:
            # Answered before the body was all sent: still sending (the upstream may read
            # on), never reused, closed on release.
            self._keep_alive = False
            return
        self._conn = None
        conn.response = None
        if self._paused:
            self._paused = False
            conn.transport.resume_reading()
        if self._keep_alive and self._sent and not self._unsolicited:
            self._pool._put(conn)
        else:
            conn.close()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._done:
            self._error = error
        self._wake()
        self._cut()

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(UpstreamReadTimeout("the upstream did not answer within the read timeout"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _cut(self) -> None:
        """Close the connection now (unless it went back to the pool) and stop the request body."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.response = None
            conn.close()

    async def head(self) -> None:
        """Wait for the final head (``send``); raises what ended the wait."""
        waiter = self._waiter
        if waiter is not None:
            try:
                await waiter
            except asyncio.CancelledError:
                self.close()
                raise
        if not self._final:
            if self._error is None:  # pragma: no cover - the waiter is only woken by one of them
                self._error = UpstreamDisconnected("no response")
            raise self._error

    # -- the proxy's side ---------------------------------------------------------------

    async def readany(self) -> bytes:
        """What body is buffered now, waiting while there is none; ``b""`` at the end."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._size = 0
                if self._paused and self._conn is not None:
                    self._paused = False
                    self._conn.transport.resume_reading()
                return data
            if self._done:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait_body()

    async def _wait_body(self) -> None:
        pool = self._pool
        waiter = self._waiter = pool._loop.create_future()
        seconds = pool._read_timeout
        if seconds is not None:
            self._timer = pool._loop.call_later(seconds, self._timed_out)
        try:
            await waiter
        except asyncio.CancelledError:
            self.close()
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def at_eof(self) -> bool:
        """Whether the whole body has been read and handed out."""
        return self._done and not self._chunks

    def release(self) -> None:
        """The proxy is done: an incomplete response's connection is closed (a complete one is pooled)."""
        if not self._done and self._error is None:
            self._error = UpstreamDisconnected("the response was released before its end")
        self._wake()
        self._cut()

    def close(self) -> None:
        """Stop now (the client left): the connection is closed, reads end."""
        self.release()


class Connection(asyncio.Protocol):
    """One keep-alive connection to the upstream; its current response parses what comes."""

    __slots__ = ("_drain", "closed", "idle_at", "origin", "pool", "response", "transport", "write_paused")

    def __init__(self, pool: UpstreamPool, origin: tuple[str, str]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport = cast("asyncio.Transport", None)
        self.response: PooledResponse | None = None
        self.closed = False
        self.write_paused = False
        self.idle_at = 0.0
        self._drain: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self.pool._all.add(self)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.close()  # nothing was asked: the connection cannot be trusted any more
        else:
            response.feed(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        response = self.response
        if response is not None:
            self.response = None
            response.connection_lost(exc)
        self._wake_writer()
        self.pool._lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    async def drained(self) -> None:
        """Wait until the transport's buffer went below its low-water mark (or it closed)."""
        if self.write_paused and not self.closed:
            self._drain = self.pool._loop.create_future()
            await self._drain

    def close(self) -> None:
        """Abort the connection (its slot is freed once asyncio reports it lost)."""
        self.response = None
        if not self.closed:
            self.transport.abort()


async def _send_stream(
    conn: Connection, response: PooledResponse, chunks: AsyncIterator[bytes], length: int | None
) -> None:
    """Write a streamed body (chunked, or raw with its declared ``length``), with backpressure."""
    sent = 0
    finished = False
    transport = conn.transport
    try:
        async for chunk in chunks:
            if conn.closed or response._conn is None:
                return  # the response ended the request already
            if not chunk:
                continue
            sent += len(chunk)
            if length is None:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            elif sent > length:
                raise UpstreamError(f"the request body is longer than its Content-Length ({length})")
            else:
                transport.write(chunk)
            if conn.write_paused:
                await conn.drained()
        finished = True
        if conn.closed or response._conn is None:
            return
        if length is None:
            transport.write(b"0\r\n\r\n")
        elif sent != length:
            raise UpstreamError(f"the request body is shorter ({sent}) than its Content-Length ({length})")
    except Exception as exc:
        response._writer = None  # failing the response must not cancel this task
        error = exc if isinstance(exc, UpstreamError) else UpstreamError(f"the request body failed: {exc!r}")
        if error is not exc:
            error.__cause__ = exc
        response._fail(error)
        return
    finally:
        if not finished:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
    response.body_sent()


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
            if data and len(data) <= _COPY_LIMIT:
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
            response._writer = self._loop.create_task(_send_stream(conn, response, data, length))
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
