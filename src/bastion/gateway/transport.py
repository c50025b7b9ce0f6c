"""One write per response: the gateway's HTTP protocol for uvicorn.

uvicorn writes a response's head as soon as the app sends ``http.response.start``
and its body on the next message: two system calls and two TCP segments for a
small response that a proxy hands on whole. The gateway's protocol gives uvicorn
a transport that gathers the writes made in one turn of the event loop and sends
them together at the end of it, so a small proxied response costs one write.
Nothing waits longer than that turn; closing or half-closing sends what is
gathered first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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

    def get_write_buffer_size(self) -> int:
        """Bytes waiting to be written, queued here or in the transport."""
        return sum(len(b) for b in self._buffer) + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
