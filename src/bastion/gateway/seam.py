"""What the proxy asks of the way requests reach the upstream: :class:`UpstreamTransport`.

:class:`~bastion.gateway.proxy.ProxyApp` builds each request (method, URL,
headers, a body buffered or streamed) and relays the response it gets back; how
the request travels is the transport's business. Two implement it:
:class:`~bastion.gateway.upstream.UpstreamClient`, aiohttp's connection pool to
a real upstream, and :class:`~bastion.gateway.inprocess.AsgiTransport`, which calls
an ASGI app in the same process (what the proxy's own tests use: the proxy's
behaviour, without sockets).

The response surface is the part of aiohttp's ``ClientResponse`` the proxy reads,
so the pool's responses go to the proxy as they are, with no wrapper per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from yarl import URL

#: A request body as the proxy hands it on: none, buffered by a guard, or streamed as it arrives.
RequestBody = bytes | AsyncIterator[bytes] | None


class BodyStream(Protocol):
    """A response body as it arrives."""

    async def readany(self) -> bytes:
        """The next bytes there are (``b""`` at the end)."""

    def at_eof(self) -> bool:
        """Whether the whole body has been read."""


class UpstreamResponse(Protocol):
    """An upstream response whose head has arrived."""

    @property
    def status(self) -> int:
        """The status code."""

    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]:
        """The header fields as received, in order."""

    @property
    def content(self) -> BodyStream:
        """The body, read as it arrives."""

    def release(self) -> None:
        """The proxy is done with the response (the connection may serve another)."""

    def close(self) -> None:
        """Stop the response now (the client left): nothing more is read."""


class UpstreamTransport(Protocol):
    """How requests reach the upstream, and how it is opened, closed and checked.

    ``send`` raises ``TimeoutError`` (one of ``connect_timeouts`` when no connection
    could be made in time) or one of ``errors`` when the upstream cannot be reached or
    breaks off; reading a response body raises the same.
    """

    #: The exceptions (besides ``TimeoutError``) by which a request or a response body fails.
    errors: tuple[type[BaseException], ...]
    #: The timeouts that mean no connection could be made.
    connect_timeouts: tuple[type[BaseException], ...]
    #: Why requests take a slower, public path of the framework underneath, if they do.
    fallback_reason: str | None

    @property
    def closed(self) -> bool:
        """Whether the transport is closed (or was never opened)."""

    async def start(self) -> Any:
        """Open the transport (idempotent); returns what WebSocket upgrades go through, if anything."""

    async def close(self) -> None:
        """Close the transport."""

    async def send(
        self, method: str, url: URL, headers: list[tuple[str, str]], data: RequestBody
    ) -> UpstreamResponse:
        """Send one request; returns the response once its head has arrived."""

    async def reachable(self, url: URL) -> bool:
        """Whether the upstream at ``url`` can be reached now (for readiness, within the connect timeout)."""
