"""One keep-alive connection of the upstream pool, and the response it parses (llhttp, strict).

:class:`Connection` is the asyncio protocol of a pooled connection;
:class:`PooledResponse` is the answer to one request on it, filled by the parser's
callbacks and read by the proxy as it arrives (reading pauses past
``READ_BUFSIZE`` unread). :func:`send_stream` writes a streamed request body with
backpressure. :mod:`bastion.gateway.pool` hands connections out and takes them back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast

import httptools

from bastion.gateway.upstream import MAX_FIELD_SIZE, READ_BUFSIZE
from bastion.gateway.upstream_wire import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    StaleConnection,
    UpstreamBadResponse,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamReadTimeout,
)

if TYPE_CHECKING:
    from bastion.gateway.pool import UpstreamPool


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


async def send_stream(
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
