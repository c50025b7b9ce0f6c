"""One request and its response on a client connection of the gateway's own HTTP/1.1 server.

:class:`Exchange` is what the ASGI app sees of a request: the scope, ``receive``
and ``send``. The connection (:mod:`bastion.gateway.protocol`) parses the bytes
and hands the body in; the exchange hands the response out, framed for the
request's version, its head and first body message in one write:

- the app's ``Content-Length`` frames the body (more bytes than it says is an
  error of the app, fewer closes the connection); without one the body is chunked
  for HTTP/1.1 and runs to the close for HTTP/1.0 (RFC 9112 section 6.1: no
  chunked coding to an HTTP/1.0 client);
- no body after ``HEAD``, ``1xx``, ``204`` or ``304``;
- ``Connection`` and ``Transfer-Encoding`` are the server's business: the app's
  are taken as a wish (``close``) and never written as they are;
- a header name that is not a token or a value with a control character is
  refused before anything is written (a response splitting attempt, or a bug);
- ``100 Continue`` goes out when the app first asks for a body the client holds
  back for it.

The head is written at the latest at the end of the event-loop turn in which the
app started the response, so a response whose body waits (an event stream) is
not held back, while the usual proxied response leaves in one write.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from bastion.asgi import Message, Scope
from bastion.faults import DROP_MESSAGE
from bastion.gateway.headers import NOT_TOKEN

if TYPE_CHECKING:
    from bastion.gateway.protocol import GatewayProtocol

#: The message the app's ``receive`` gets once the client is gone or the response is sent.
DISCONNECT: Message = {"type": "http.disconnect"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Translation table: 1 for each byte refused in a header value (controls other than the
#: tab, and DEL). A name must be a token (:data:`bastion.gateway.headers.NOT_TOKEN`).
_VALUE_REFUSED = bytes(1 if (b < 32 and b != 9) or b == 127 else 0 for b in range(256))


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


#: The status lines, made once.
STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


class Exchange:
    """One request on a connection and the response the app sends to it."""

    __slots__ = (
        "_chunked",
        "_close_delimited",
        "_head",
        "_length",
        "_sent",
        "_waiter",
        "body",
        "body_size",
        "complete",
        "disconnected",
        "expect_continue",
        "keep_alive",
        "last_delivered",
        "more_body",
        "no_body",
        "protocol",
        "scope",
        "started",
    )

    def __init__(
        self, protocol: GatewayProtocol, scope: Scope, *, keep_alive: bool, expect_continue: bool
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        #: Whether the connection may serve another request after this one.
        self.keep_alive = keep_alive
        #: Whether the client waits for ``100 Continue`` before it sends the body.
        self.expect_continue = expect_continue
        #: The request body received and not yet handed to the app.
        self.body: list[bytes] = []
        self.body_size = 0
        #: Whether more of the request body is to come (until the parser says it is whole).
        self.more_body = True
        #: Whether the app has been handed the end of the body.
        self.last_delivered = False
        self.started = False
        self.complete = False
        self.disconnected = False
        #: Whether the response has no body (a ``HEAD`` request, ``1xx``, ``204``, ``304``).
        self.no_body = scope["method"] == "HEAD"
        self._waiter: asyncio.Future[None] | None = None
        self._head: bytes | None = None
        self._length: int | None = None
        self._sent = 0
        self._chunked = False
        self._close_delimited = False

    # -- what the connection tells the exchange ---------------------------------------------

    def wake(self) -> None:
        """Something the app waits for has happened: body bytes, its end, a disconnect."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def gone(self) -> None:
        """The client is gone: ``receive`` says so, ``send`` writes nothing more."""
        self.disconnected = True
        self.wake()

    # -- ASGI ------------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next part of the request body; once the response is sent or the client left, a disconnect."""
        if self.expect_continue:
            self.expect_continue = False
            if not self.started and self.more_body:
                self.protocol.write(_CONTINUE)
        while not (self.body or (not self.more_body and not self.last_delivered)):
            if self.disconnected or self.complete:
                return DISCONNECT
            self.protocol.body_drained()
            loop = self.protocol.loop
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.disconnected:
            return DISCONNECT
        body = self.body
        chunk = body[0] if len(body) == 1 else b"".join(body)
        self.body = []
        self.body_size = 0
        more = self.more_body
        self.last_delivered = not more
        self.protocol.body_drained()
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(self, message: Message) -> None:
        """Write the app's response message (``bastion.connection.drop``: close the connection now)."""
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.complete:
                raise RuntimeError("http.response.body before http.response.start or after the last one")
            more = message.get("more_body", False)
            if not more:
                self.complete = True
            if self.disconnected:
                return
            body: bytes = message.get("body", b"")
            out = self._frame(body, more)
            protocol = self.protocol
            if out:
                protocol.write(out)
            if not more:
                protocol.response_complete(self)
            elif protocol.write_paused:
                await protocol.drained()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self._start(message["status"], message.get("headers", ()))
        elif kind == DROP_MESSAGE:
            self.complete = self.started = True
            self.keep_alive = False
            self.protocol.drop()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an HTTP request")

    # -- framing -------------------------------------------------------------------------------

    def _start(self, status: int, headers: Any) -> None:
        headers = list(headers)
        try:
            names, values = zip(*headers, strict=True) if headers else ((), ())
            refused = (
                1 in b"".join(names).translate(NOT_TOKEN)
                or b"" in names
                or 1 in b"".join(values).translate(_VALUE_REFUSED)
            )
            lowered = b"\n".join(names).lower()
        except (TypeError, ValueError):
            raise RuntimeError("response headers must be pairs of bytes") from None
        if refused:
            raise RuntimeError("a response header name is not a token, or a value has a control character")
        if not isinstance(status, int) or not 100 <= status < 600:
            raise RuntimeError(f"invalid response status {status!r}")
        names_lower = lowered.split(b"\n") if headers else []
        out = [STATUS_LINES[status]]
        length: int | None = None
        for name, value in zip(names_lower, values, strict=True):
            if name == b"content-length":
                try:
                    given = int(value)
                except ValueError:
                    raise RuntimeError(f"invalid Content-Length {value!r}") from None
                if given < 0 or (length is not None and given != length):
                    raise RuntimeError("a Content-Length that is negative or given twice with two values")
                length = given
                continue  # written once, below
            if name == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue
            if name == b"transfer-encoding":
                continue  # the body is framed here
            out += (name, b": ", value, b"\r\n")
        self.started = True
        self.expect_continue = False
        if status < 200 or status in (204, 304):
            self.no_body = True
            length = None
        if length is not None:
            out += (b"content-length: ", str(length).encode("ascii"), b"\r\n")
            self._length = length
        elif not self.no_body:
            if self.scope["http_version"] == "1.1":
                self._chunked = True
                out.append(b"transfer-encoding: chunked\r\n")
            else:
                self._close_delimited = True
                self.keep_alive = False
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        self._head = b"".join(out)
        # Written with the first body message, or at the end of this turn, whichever is first.
        self.protocol.loop.call_soon(self._flush_head)

    def _flush_head(self) -> None:
        head = self._head
        if head is not None and not self.disconnected:
            self._head = None
            self.protocol.write(head)

    def _frame(self, body: bytes, more: bool) -> bytes:
        """The bytes for one body message: the head first if it is still waiting."""
        head = self._head
        self._head = None
        parts: list[bytes] = [head] if head is not None else []
        if body and not self.no_body:
            if self._chunked:
                parts += (b"%x\r\n" % len(body), body, b"\r\n")
            else:
                self._sent += len(body)
                if self._length is not None and self._sent > self._length:
                    self.keep_alive = False
                    self.protocol.drop()
                    raise RuntimeError("response body longer than its Content-Length")
                parts.append(body)
        if not more:
            if self._chunked:
                parts.append(b"0\r\n\r\n")
            elif self._length is not None and self._sent < self._length and not self.no_body:
                # The client waits for bytes that will not come: only closing tells it.
                self.keep_alive = False
            elif self._close_delimited:
                self.keep_alive = False
        return parts[0] if len(parts) == 1 else b"".join(parts)
