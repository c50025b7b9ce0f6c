"""The upstream side of the gateway: a streaming reverse proxy as an ASGI app.

``ProxyApp`` sends each request to the upstream through its transport
(:mod:`bastion.gateway.seam`; by default a pool of keep-alive connections, one
aiohttp ``ClientSession`` per process) and streams both bodies: a request body goes
upstream as it arrives unless a guard already buffered it (validation, idempotency,
:mod:`bastion.gateway.upload`), and the response comes back chunk by chunk
(:mod:`bastion.gateway.relay`), so large downloads and server-sent events are never
held in memory.

Failures before the response starts are raised as problems for the boundary to
render: ``502 UPSTREAM_UNAVAILABLE`` when the upstream cannot be reached or drops
the connection, ``504 UPSTREAM_TIMEOUT`` when it is too slow. Used as
``Bastion(ProxyApp(upstream), config)``, every guard runs in front of it.

The upstream URL is built from parts: scheme, host and port only ever from the
configured upstream, then the request's canonical path (the boundary rewrote it,
:mod:`bastion.routing.paths`) and its query as received. ``OPTIONS *`` is answered
here, and ``TRACE`` is refused unless ``routing.allow_trace`` is set.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
from yarl import URL

from bastion import normalize
from bastion.asgi import HANDSHAKE_KEY, SCOPE_KEY, Message, Receive, RequestContext, Scope, Send
from bastion.config import Config
from bastion.config.gateway import GatewayConfig
from bastion.faults import FAULT_KEY, Fault, FaultLog
from bastion.gateway.headers import Forwarding
from bastion.gateway.pool import UpstreamPool
from bastion.gateway.relay import ResponseRelay
from bastion.gateway.seam import RequestBody, UpstreamResponse, UpstreamTransport
from bastion.gateway.upload import UploadState, has_body, stream_request
from bastion.gateway.upstream import UpstreamClient
from bastion.gateway.upstream_faults import call_upstream
from bastion.observability.otel import start_upstream_span
from bastion.problems import BadRequest, MethodNotAllowed, UpstreamTimeout, UpstreamUnavailable
from bastion.tracing import format_traceparent

if TYPE_CHECKING:
    from bastion.protocols import GuardContext

#: The methods the gateway forwards, for ``OPTIONS *`` and a refused ``TRACE``.
_ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


#: How long a readiness check of the upstream is believed.
_REACHABLE_FOR_S = 1.0


class ProxyApp:
    """An ASGI app that forwards every request to ``upstream`` and streams the answer back.

    Requests travel by ``transport``: unless another is given (such as
    :class:`~bastion.gateway.inprocess.AsgiTransport`, which calls an ASGI app in this
    process), the gateway's own pool to ``upstream`` (:mod:`bastion.gateway.pool`), or
    aiohttp's with ``gateway.server: uvicorn``. It is also a bastion resource: the
    transport opens at start-up and closes at shutdown. :meth:`attach` registers it with
    the guard context around it.
    """

    name = "upstream"
    #: WebSocket handshakes reach it through bastion's guards (:mod:`bastion.handshakes`).
    guards_handshakes = True
    #: Upstream-side faults are injected here (:mod:`bastion.faults`).
    takes_upstream_faults = True
    #: Set by the fault guard's builder once a configuration can inject faults: until then
    #: requests are not looked at for one.
    fault_log: FaultLog | None = None

    def __init__(
        self,
        upstream: str,
        config: GatewayConfig | None = None,
        *,
        trusted_proxies: tuple[str, ...] | list[str] = (),
        normalize_upstream: normalize.NormalizePolicy = True,
        logger: Any = None,
        allow_trace: bool = False,
        transport: UpstreamTransport | None = None,
    ) -> None:
        self.config = config if config is not None else GatewayConfig()
        url = URL(upstream.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"{url.with_password(None) if url.password else url} is not an http:// or https:// URL"
            )
        # Credentials in the URL are taken out of it, so that no error message, log line or
        # span shows them, and go upstream as Authorization in place of the client's: the
        # upstream trusts the gateway.
        authorization = None
        if url.user is not None or url.password is not None:
            authorization = aiohttp.BasicAuth.from_url(url).encode()  # type: ignore[union-attr]
            url = url.with_user(None)
        self.upstream = url
        # (scheme, authority) of upstream URLs: the request adds only the path and the query.
        self._base = (url.scheme, url.raw_authority)
        self._ws_base = ("wss" if url.scheme == "https" else "ws", url.raw_authority)
        #: The upstream URL's own path, put in front of every request's.
        self._prefix = url.raw_path.rstrip("/")
        #: Whether ``TRACE`` requests go upstream (``routing.allow_trace``).
        self.allow_trace = allow_trace
        self.forwarding = Forwarding(
            trusted_proxies, preserve_host=self.config.preserve_host, authorization=authorization
        )
        #: How requests reach the upstream (the connection pool, unless another was given).
        if transport is None:
            transport = (
                UpstreamPool(self.config) if self.config.server == "bastion" else UpstreamClient(self.config)
            )
        self.transport: UpstreamTransport = transport
        #: What a failed upstream request raises.
        self._failures: tuple[type[BaseException], ...] = (TimeoutError, *self.transport.errors)
        #: Hands responses on to the client (and counts upstream errors).
        self.relay = ResponseRelay(self.config, normalize_upstream, self._failures)
        self.relay.logger = logger
        #: When the upstream was last tried for readiness, and whether it answered.
        self._reachable_at: tuple[float, bool] = (-_REACHABLE_FOR_S, False)

    @property
    def logger(self) -> Any:
        """The structured logger (``None`` until :meth:`attach` or unless given)."""
        return self.relay.logger

    @classmethod
    def from_config(cls, config: Config, *, transport: UpstreamTransport | None = None) -> ProxyApp:
        """The proxy for a whole bastion configuration (``upstream`` must be set).

        ``transport`` replaces the connection pool (see :class:`ProxyApp`).
        """
        if config.upstream is None:
            raise ValueError("the gateway needs an upstream URL (the upstream key or --upstream)")
        return cls(
            config.upstream,
            config.gateway,
            trusted_proxies=config.clients.trusted_proxies,
            normalize_upstream=config.errors.normalize_upstream,
            allow_trace=config.routing.allow_trace,
            transport=transport,
        )

    def attach(self, ctx: GuardContext) -> None:
        """Share the guard context's logger and metrics, and open and close with it (``Bastion.context``).

        An upstream client that cannot take its direct path says why here, once at start.
        """
        self.relay.logger = ctx.logger
        if ctx.metrics is not None:
            self.relay.errors = ctx.metrics.tally(
                "bastion_gateway_upstream_errors_total",
                "Upstream requests that failed or whose error response was replaced, by kind.",
                ["kind"],
            )
        reason = self.transport.fallback_reason
        if reason is not None:
            ctx.logger.warning("upstream requests take the public path", reason=reason)
        ctx.add_resource(self)

    # -- resource -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the transport: the upstream connection pool (idempotent)."""
        await self.transport.start()

    async def close(self) -> None:
        """Close the transport: the pool's connections."""
        await self.transport.close()

    async def ping(self) -> bool:
        """Whether the transport is open and the upstream can be reached (a TCP connection for the pool).

        The answer is kept for a second, so a readiness probe polled by many load
        balancers costs one connection a second.
        """
        if self.transport.closed:
            return False
        now = time.monotonic()
        if now - self._reachable_at[0] < _REACHABLE_FOR_S:
            return self._reachable_at[1]
        reachable = await self.transport.reachable(self.upstream)
        self._reachable_at = (time.monotonic(), reachable)
        return reachable

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or HANDSHAKE_KEY in scope:
            await self._other(scope, receive, send)
            return
        # A plain HTTP request, proxied here rather than in a coroutine of its own: this
        # runs for every request.
        ctx: RequestContext | None = scope.get(SCOPE_KEY)
        method: str = scope["method"]
        if method in ("OPTIONS", "TRACE") and await self._answered_here(scope, method, send):
            return
        url = self._url(scope, self._base)
        # With tracing on, the upstream call gets a client span of its own (and only then is
        # the URL made a string for it).
        span = (
            start_upstream_span(ctx, method, str(url)) if ctx is not None and ctx.span is not None else None
        )
        headers = self.upstream_headers(scope, ctx, traceparent=span.traceparent if span else None)
        body_done = True
        state: UploadState | None = None
        data: RequestBody = None
        if ctx is not None and ctx.body is not None:
            data = ctx.body
            headers = [(k, v) for k, v in headers if k != "Content-Length"]
        elif has_body(scope):
            body_done = False
            state = UploadState()
            data = stream_request(receive, state)
        try:
            fault = scope.get(FAULT_KEY) if self.fault_log is not None else None
            if fault is None:
                response = await self.transport.send(method, url, headers, data)
            else:
                response = await self._send_with_fault(fault, scope, ctx, method, url, headers, data)
        except self._failures as exc:
            if span is not None:
                span.end(error=exc)
            if isinstance(exc, TimeoutError):
                self._raise_timeout(exc, ctx)
            if state is not None and state.client_gone:
                return  # the client left mid-upload: there is nobody to answer
            self.relay.count("unavailable")
            if ctx is not None:
                ctx.log["upstream_error"] = type(exc).__name__
            raise UpstreamUnavailable(
                detail="The gateway could not get an answer from the upstream API."
            ) from exc
        if span is not None:
            span.end(response.status)
        try:
            if state is not None:
                body_done = state.finished
            await self.relay.respond(scope, ctx, response, receive, send, body_done=body_done)
        finally:
            response.release()

    async def _send_with_fault(
        self,
        fault: Fault,
        scope: Scope,
        ctx: RequestContext | None,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        data: RequestBody,
    ) -> UpstreamResponse:
        """The upstream call with an injected upstream-side fault (:mod:`bastion.faults`)."""
        assert self.fault_log is not None
        self.fault_log.injected(fault, ctx, scope)
        return await call_upstream(
            fault,
            lambda: self.transport.send(method, url, headers, data),
            read_timeout=self.config.read_timeout.seconds or None,
            failure=self.transport.errors[0],
        )

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """WebSocket sessions and handshakes, and the lifespan protocol."""
        kind = scope["type"]
        if kind == "http":  # a WebSocket handshake the guards let through
            ws_scope, ws_receive, ws_send = scope[HANDSHAKE_KEY]
            # The path the guards checked (canonical) is the one that goes upstream.
            ws_scope = {**ws_scope, "path": scope["path"], "raw_path": scope.get("raw_path")}
            await self._websocket(ws_scope, ws_receive, ws_send, scope.get(SCOPE_KEY))
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext | None = None
    ) -> None:
        from bastion.gateway.websocket import proxy_websocket

        # The pool's session; a transport that carries no WebSockets gives none.
        session = await self.transport.start()
        await proxy_websocket(self, session, scope, receive, send, ctx)

    async def _answered_here(self, scope: Scope, method: str, send: Send) -> bool:
        """Answer ``OPTIONS *`` and refuse ``TRACE`` (unless allowed); ``False`` for anything else."""
        if method == "TRACE" and not self.allow_trace:
            # A TRACE echoes the request, credentials and cookies included, to whoever sent it.
            raise MethodNotAllowed(detail="the gateway does not forward TRACE", headers={"Allow": _ALLOW})
        if method != "OPTIONS" or scope["path"] != "*":
            return False
        # ``OPTIONS *`` asks about the server, not a resource: the gateway is the server here.
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", _ALLOW.encode())]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    def websocket_url(self, scope: Scope) -> URL:
        """The upstream URL of a WebSocket session (``ws://`` or ``wss://``)."""
        return self._url(scope, self._ws_base)

    def _url(self, scope: Scope, base: tuple[str, str]) -> URL:
        """The upstream URL: ``base``'s scheme and authority, the prefix, the request's path and query."""
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else _quote_path(scope["path"])
        if path[:1] != "/":
            # Only an origin-form path may follow the authority; the boundary refuses the rest.
            raise BadRequest(detail="the request target must be a path")
        query = scope.get("query_string")
        return URL.build(
            scheme=base[0],
            authority=base[1],
            path=self._prefix + path,
            query_string=query.decode("latin-1") if query else "",
            encoded=True,
        )

    def upstream_headers(
        self,
        scope: Scope,
        ctx: RequestContext | None,
        *,
        websocket: bool = False,
        traceparent: bytes | None = None,
    ) -> Any:
        """The headers the upstream gets for this request.

        ``traceparent`` names the upstream call's own client span when tracing is on;
        otherwise the request's trace and span ids are passed on.
        """
        client = scope.get("client")
        if traceparent is None and ctx is not None:
            traceparent = format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags)
        return self.forwarding.upstream_headers(
            scope["headers"],
            peer=str(client[0]) if client else "unknown",
            scheme=("https" if scope.get("scheme") in ("https", "wss") else "http"),
            traceparent=traceparent,
            request_id=ctx.request_id if ctx else None,
            websocket=websocket,
        )

    def _raise_timeout(self, exc: TimeoutError, ctx: RequestContext | None) -> NoReturn:
        """Count an upstream timeout and raise the problem that says which one."""
        self.relay.count("timeout")
        which = "connect" if isinstance(exc, self.transport.connect_timeouts) else "read"
        limit = self.config.connect_timeout if which == "connect" else self.config.read_timeout
        if ctx is not None:
            ctx.log["upstream_error"] = f"{which} timeout"
        raise UpstreamTimeout(detail=f"The upstream API did not answer within {limit}.") from exc


def _quote_path(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/:@!$&'()*+,;=-._~%")


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer the lifespan protocol (bastion opens the pool; nothing else to do here)."""
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            with contextlib.suppress(Exception):
                await send({"type": "lifespan.shutdown.complete"})
            return
