"""The gateway's side of a response: one write per event-loop turn, one check per response head.

uvicorn writes a response's head as soon as the app sends ``http.response.start``
and its body on the next message: two system calls and two TCP segments for a
small response that a proxy hands on whole. :class:`CoalescingTransport` gathers
the writes made in one turn of the event loop and sends them together at the end
of it, so a small proxied response costs one write. Nothing waits longer than that
turn; closing or half-closing sends what is gathered first.

uvicorn also checks every response header name and value with a regular
expression of its own, two searches per header: a proxied response with the rate
limit and trace headers has a dozen. The bytes those expressions reject do not
depend on where one header ends and the next begins, so
:class:`GatewayResponseCycle` checks all the names at once and all the values at
once, for the same bytes, and writes the head as uvicorn does; when something is
refused, or out of the ordinary, uvicorn's own code runs and raises its own error.

Importing this module checks the installed uvicorn first
(:func:`bastion.gateway.uvicorn_fit.require_fit`): ``ImportError`` when it is not one
the cycle was written and tested against.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

from bastion.faults import DROP_MESSAGE
from bastion.gateway.uvicorn_fit import require_fit

require_fit()

#: Translation tables: 1 for each byte uvicorn's expressions refuse in a header name (but the
#: newline, counted apart) or value, else 0.
_NAME_REFUSED_BUT_LF = bytes(1 if HEADER_RE.match(bytes([b])) and b != 10 else 0 for b in range(256))
_VALUE_REFUSED = bytes(1 if HEADER_VALUE_RE.match(bytes([b])) else 0 for b in range(256))


#: Statuses whose responses have no body (HEAD requests neither).
_BODILESS = (204, 304)


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

    One framing uvicorn lacks is added: an HTTP/1.0 request knows no chunked coding
    (RFC 9112 section 6.1), so a response of unknown length to one is written as it
    comes and ends when the connection closes, where uvicorn would send it chunked.
    """

    #: Whether the body runs to the connection's close (HTTP/1.0, no Content-Length).
    close_delimited = False

    def _drop(self) -> None:
        """Close the connection now, without (the rest of) a response: what is written goes first."""
        self.keep_alive = False
        self.disconnected = True
        self.message_event.set()
        self.transport.close()

    async def send(self, message: Any) -> None:
        """Send an ASGI message to the client (``DROP_MESSAGE`` of :mod:`bastion.faults`: close)."""
        if (
            self.response_started
            or self.disconnected
            or self.access_log
            or message.get("type") != "http.response.start"
        ):
            if self.close_delimited and not self.disconnected and not self.response_complete:
                await self._send_to_close(message)
                return
            try:
                await super().send(message)
            except RuntimeError:
                # uvicorn refuses a message it does not know; an injected fault's drop is one.
                if message.get("type") != DROP_MESSAGE:
                    raise
                self._drop()
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
        scope = self.scope
        chunked = self.chunked_encoding is None and scope["method"] != "HEAD" and status_code not in _BODILESS
        if chunked and scope.get("http_version") == "1.0":
            self.close_delimited = True
            self.keep_alive = chunked = False
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        if chunked:
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    async def _send_to_close(self, message: Any) -> None:
        """A body message of a close-delimited response: written as is; the last one closes."""
        if message.get("type") != "http.response.body":
            await super().send(message)  # uvicorn's error for a message out of order
            return
        if self.flow.write_paused:
            await self.flow.drain()
            if self.disconnected:
                return
        body = message.get("body", b"")
        if body:
            self.transport.write(body)
        if not message.get("more_body", False):
            self.response_complete = True
            self.message_event.set()
            self.transport.close()
            self.on_response()
