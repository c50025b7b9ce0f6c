"""The gateway's upstream client: aiohttp's pool, request and response, without the session's extras.

``ClientSession.request`` serves every kind of caller: it follows redirects, keeps
cookies, adds auth and proxies, runs trace hooks and client middlewares, and arms
a total timeout, all worked out again on every request. The gateway uses none of
that: it follows no redirect, shares no cookie between clients, traces with
OpenTelemetry itself and bounds connect and read times only. So
:meth:`UpstreamClient.send` does the part of ``ClientSession.request`` that the
gateway needs, with aiohttp's own pieces: the session's connector (the pool), its
request class (writes the request), its response class and protocol (parse the
answer). What it keeps of the session's behaviour:

- the connect and read timeouts (``aiohttp.ConnectionTimeoutError`` for the first);
- one more try on a new connection when a pooled keep-alive connection turns out
  to be closed, for idempotent methods whose body can be sent again (RFC 9112
  section 9.3.1), as ``ClientSession`` does;
- errors as aiohttp's ``ClientError`` classes.

One thing it adds: ``read_timeout`` also bounds the wait for the final response head
as a whole, counted from the end of the request. aiohttp's read timeout starts again
with every byte, so an upstream sending ``103 Early Hints`` (or ``100 Continue``)
every few seconds, and never a final answer, would hold a request forever. Through
``ClientSession.request``, the bound is connect plus read timeout, for requests whose
body is not streamed.

The session's layer measured 40,000 instructions per proxied GET (of about
580,000 for the whole request, guards included; ``bench/gateway.py
--instructions``). Where the installed aiohttp is a release outside
``TESTED_AIOHTTP``, lacks one of the pieces, or they take other arguments (checked
once, at import), the client sends through ``ClientSession.request`` instead:
slower, with the same behaviour; the proxy logs why once at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import hdrs
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import TimerNoop
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bastion.config.gateway import GatewayConfig
from bastion.gateway.fence import outside_tested
from bastion.gateway.seam import RequestBody

# aiohttp would otherwise add its own: a client that sent no Accept-Encoding must not
# get a compressed body (bodies pass through undecoded), nor the upstream a made-up agent.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")
_SKIPPED = CIMultiDictProxy(CIMultiDict((name, None) for name in sorted(_SKIP_AUTO_HEADERS)))

#: Methods that may be sent again when a pooled connection was found closed (as aiohttp's).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: The longest response header field the upstream may send.
MAX_FIELD_SIZE = 16_384
#: How much of a response body is read ahead of the client, per connection, on both paths
#: (aiohttp 3.14's default; 64 KiB cost a 200 MiB download 0.22 s of gateway CPU against 0.16).
READ_BUFSIZE = 2**18
_NO_TIMER = TimerNoop()


class _HeadDeadline:
    """The upstream's final response head is due ``seconds`` after the request was sent.

    aiohttp's read timeout starts again with every byte, interim responses included,
    so it is off while the head is awaited; this one timer fails the connection's
    protocol when the head is overdue, as aiohttp's own timeout does
    (``ServerTimeoutError``). For a streamed body it starts once the last chunk has
    been handed on; until then the upstream may be waiting for the body.
    """

    __slots__ = ("_handle", "_loop", "_seconds", "protocol")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._handle: asyncio.TimerHandle | None = None
        #: The protocol of the connection awaiting the head; ``None`` once it has arrived.
        self.protocol: ResponseHandler | None = None

    def start(self) -> None:
        """The request is sent: the head is due ``seconds`` from now."""
        if self.protocol is not None and self._handle is None:
            self._handle = self._loop.call_later(self._seconds, self._expire)

    def stop(self) -> None:
        """The head has arrived (or the request failed): nothing is due any more."""
        self.protocol = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        if self.protocol is not None:
            self.protocol.set_exception(aiohttp.ServerTimeoutError("Timeout on reading the response head"))

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks`` passed on; the deadline starts after the last."""
        async for chunk in chunks:
            yield chunk
        self.start()


class _UpstreamRequest(aiohttp.ClientRequest):
    """aiohttp's request that adds none of its automatic headers: the upstream gets what the client sent.

    ``skip_auto_headers`` on the session says the same, but aiohttp then builds a
    case-insensitive dictionary of the skipped names, and copies the request's headers
    to check them, for every request: here the skipped names are one shared, read-only
    dictionary, and nothing is added.
    """

    def update_auto_headers(self, skip_auto_headers: Any) -> None:
        self._skip_auto_headers = _SKIPPED  # type: ignore[assignment]


class _RequestWithUrlHost(_UpstreamRequest):
    """The request for headers without a ``Host``: the upstream's host first, then the rest in one call.

    aiohttp adds the headers one by one in Python, looking for a ``Host`` among them;
    the gateway's own headers have none unless ``preserve_host`` is on (then
    :class:`_UpstreamRequest` takes them).
    """

    def update_headers(self, headers: Any) -> None:
        self.headers = CIMultiDict(((hdrs.HOST, self.url.host_port_subcomponent or ""),))
        self.headers.extend(headers)


#: The aiohttp releases the direct path was checked on (3.11 to 3.14): outside them, the public one.
TESTED_AIOHTTP = ((3, 11), (3, 15))
#: The arguments :meth:`UpstreamClient.send` gives the response parser on the direct path.
_RESPONSE_PARAMETERS: dict[str, Any] = {
    "read_until_eof": True,
    "auto_decompress": False,
    "read_bufsize": READ_BUFSIZE,
    "max_field_size": MAX_FIELD_SIZE,
}


def direct_path_problem() -> str | None:
    """Why the installed aiohttp cannot take the direct path, or ``None`` when it can.

    The direct path relies on aiohttp's release and on three of its methods taking
    these arguments; checked once, at import.
    """
    outside = outside_tested("aiohttp", aiohttp.__version__, TESTED_AIOHTTP)
    if outside is not None:
        return outside
    try:
        request = inspect.signature(aiohttp.ClientRequest.__init__).parameters
        connect = inspect.signature(aiohttp.BaseConnector.connect).parameters
        response = inspect.signature(ResponseHandler.set_response_params).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C implementation, say
        return "aiohttp's request, connector or parser cannot be inspected"
    if not {"headers", "data", "loop", "timer", "session", "traces"} <= request.keys():
        return "aiohttp's ClientRequest takes other arguments"
    if list(connect) != ["self", "req", "traces", "timeout"]:
        return "aiohttp's BaseConnector.connect takes other arguments"
    if not {"timer", "skip_payload", "read_timeout", *_RESPONSE_PARAMETERS} <= response.keys():
        return "aiohttp's ResponseHandler.set_response_params takes other arguments"
    if not callable(getattr(aiohttp.ClientRequest, "send", None)) or not callable(
        getattr(aiohttp.ClientResponse, "start", None)
    ):
        return "aiohttp's ClientRequest.send or ClientResponse.start is missing"
    # The head's deadline turns the read timeout off and on again (_HeadDeadline).
    read_timeout = getattr(ResponseHandler, "read_timeout", None)
    if not isinstance(read_timeout, property) or read_timeout.fset is None:
        return "aiohttp's ResponseHandler.read_timeout cannot be set"
    if not all(callable(getattr(ResponseHandler, name, None)) for name in ("start_timeout", "set_exception")):
        return "aiohttp's ResponseHandler has no start_timeout or set_exception"
    if not callable(getattr(aiohttp.ClientRequest, "update_auto_headers", None)) or not callable(
        getattr(aiohttp.ClientRequest, "update_headers", None)
    ):
        return "aiohttp's ClientRequest has no update_auto_headers or update_headers"
    return None


#: Why the direct path is off in this process (``None``: it is on).
DIRECT_PATH_PROBLEM = direct_path_problem()


class UpstreamClient:
    """The gateway's connection pool to one upstream, and how requests are sent over it.

    It is the proxy's :class:`~bastion.gateway.seam.UpstreamTransport` for a real
    upstream. ``direct`` chooses :meth:`send`'s path: ``None`` (the default) takes
    the direct one where the installed aiohttp allows it; ``False`` always goes
    through ``ClientSession.request``.
    """

    errors: tuple[type[BaseException], ...] = (aiohttp.ClientError,)
    connect_timeouts: tuple[type[BaseException], ...] = (aiohttp.ConnectionTimeoutError,)

    def __init__(self, config: GatewayConfig, *, direct: bool | None = None) -> None:
        self.config = config
        read = config.read_timeout.seconds or None
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=config.connect_timeout.seconds, sock_read=read
        )
        if direct and DIRECT_PATH_PROBLEM is not None:
            raise RuntimeError(f"the direct upstream path is off: {DIRECT_PATH_PROBLEM}")
        self._response_parameters = (
            _RESPONSE_PARAMETERS if direct is not False and DIRECT_PATH_PROBLEM is None else None
        )
        #: Whether requests skip ``ClientSession.request`` (see the module's docstring).
        self.direct = self._response_parameters is not None
        #: Why they do not, when the installed aiohttp is the reason (logged once at start).
        self.fallback_reason = DIRECT_PATH_PROBLEM if direct is None else None
        self._request_class: Callable[..., aiohttp.ClientRequest] = (
            _UpstreamRequest if config.preserve_host else _RequestWithUrlHost
        )
        self.session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        """Whether the pool is closed (or was never opened)."""
        return self.session is None or self.session.closed

    async def start(self) -> aiohttp.ClientSession:
        """Open the pool (idempotent); returns the session, which WebSocket upgrades use."""
        if self.session is not None and not self.session.closed:
            return self.session
        self._loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(
            limit=self.config.pool_size,
            keepalive_timeout=self.config.keepalive_timeout.seconds,
            ttl_dns_cache=60,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            auto_decompress=False,
            # aiohttp's own request class (WebSocket upgrades and the public path use it),
            # told the automatic headers to leave out.
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            # One session serves every client: a shared cookie jar would hand one client's
            # cookies to the next.
            cookie_jar=aiohttp.DummyCookieJar(),
            max_field_size=MAX_FIELD_SIZE,
            read_bufsize=READ_BUFSIZE,
        )
        return self.session

    async def close(self) -> None:
        """Close the pool's connections."""
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def reachable(self, url: URL) -> bool:
        """Whether the pool is open and the upstream accepts a TCP connection within ``connect_timeout``.

        The connection is opened and closed at once: no request is sent, the
        upstream's own health is its business.
        """
        if self.closed:
            return False
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            async with asyncio.timeout(self.config.connect_timeout.seconds):
                _, writer = await asyncio.open_connection(url.host or "", port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            return False
        return True

    async def send(
        self, method: str, url: URL, headers: list[tuple[str, str]], data: RequestBody
    ) -> aiohttp.ClientResponse:
        """Send one request upstream; returns aiohttp's ``ClientResponse`` once its head has arrived.

        ``headers`` are the gateway's, in order (a ``Host`` among them only with
        ``preserve_host``); ``data`` is ``None``, ``bytes``, or an async iterator of
        chunks (streamed, never sent twice). Raises ``TimeoutError`` or
        ``aiohttp.ClientError`` as ``ClientSession.request`` does.
        """
        session = self.session
        if session is None or session.closed:
            session = await self.start()
        method = method.upper()  # as aiohttp sends it, so that HEAD and the retry rule see it too
        buffered = data is None or isinstance(data, bytes)
        read = self.timeout.sock_read
        parameters = self._response_parameters
        if parameters is None:
            pending = session.request(
                method, url, headers=headers, data=data, allow_redirects=False, timeout=self.timeout
            )
            if not (read and buffered):
                return await pending
            # Interim responses restart aiohttp's read timeout: the wait as a whole is bounded.
            async with asyncio.timeout(self.config.connect_timeout.seconds + read):
                return await pending
        deadline = _HeadDeadline(self._loop or asyncio.get_running_loop(), read) if read else None
        if deadline is not None and not (data is None or isinstance(data, bytes)):
            data = deadline.stream(data)
        connector = session.connector
        assert connector is not None
        retry = method in IDEMPOTENT_METHODS and buffered
        while True:
            request = self._request_class(
                method,
                url,
                headers=headers,
                data=data,
                loop=self._loop,
                timer=_NO_TIMER,
                session=session,
                traces=[],
            )
            try:
                connection = await connector.connect(request, traces=[], timeout=self.timeout)
            except TimeoutError as exc:
                raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from exc
            protocol = connection.protocol
            assert protocol is not None
            protocol.set_response_params(
                timer=_NO_TIMER,
                skip_payload=method == "HEAD",
                read_timeout=None if deadline is not None else read,
                **parameters,
            )
            if deadline is not None:
                deadline.protocol = protocol
            try:
                response = await request.send(connection)
                try:
                    if deadline is not None and buffered:
                        deadline.start()
                    await response.start(connection)
                except BaseException:
                    response.close()
                    raise
                finally:
                    if deadline is not None:
                        deadline.stop()
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                connection.close()
                # A pooled connection the upstream had closed: sent again on another, once
                # (never after a failure to connect).
                if not retry:
                    raise
                retry = False
                if data is not None:
                    await request.close()  # its body's writer on the closed connection finishes first
                continue
            except BaseException as exc:
                connection.close()
                if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError | TimeoutError):
                    raise aiohttp.ClientOSError(*exc.args) from exc
                raise
            if deadline is not None:
                # From here on, aiohttp's read timeout bounds each silence of the body.
                protocol.read_timeout = read
                if not response.content.is_eof():
                    protocol.start_timeout()
            return response
