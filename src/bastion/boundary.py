"""The outermost guard: trace ids, problems for every error, metrics and the access log.

It is the one place where exceptions become responses. A ``Problem`` raised by
any inner guard or by the application is rendered as it is; any other exception
becomes ``500 INTERNAL_ERROR`` with nothing about its cause in the body, and the
full exception goes to the log under the request's trace id.

Frameworks such as Starlette answer an exception with their own plain 500 and then
re-raise it. So that such a body never reaches the client, a 5xx response that is
not already a problem is held back until the application returns: if an exception
follows, the problem replaces it. If none does, ``errors.normalize_upstream`` decides
(by default a 5xx body that is not a problem is replaced too, and logged), by the
same rule the gateway applies to its upstream (:mod:`bastion.normalize`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from random import getrandbits
from time import perf_counter
from typing import Any

from bastion import normalize
from bastion.asgi import (
    DONE,
    SCOPE_KEY,
    ASGIApp,
    Headers,
    Message,
    Receive,
    RequestContext,
    Scope,
    Send,
)
from bastion.clients import ClientIdentifier
from bastion.config.observability import ObservabilityConfig
from bastion.enforcement import WOULD_REFUSE
from bastion.observability.dashboard import Dashboard, Panel
from bastion.observability.logging import AccessLog
from bastion.observability.metrics import UNMATCHED_ROUTE, Metrics
from bastion.observability.otel import ServerSpan, build_tracer
from bastion.problems import (
    PROBLEM_CONTENT_TYPE,
    InternalError,
    Problem,
    ProblemLinks,
    render,
    request_instance,
)
from bastion.routing.paths import canonicalize
from bastion.tracing import TRACE_ID, parse_traceparent, valid_request_id

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def _route_label(scope: Scope) -> str:
    # Starlette and FastAPI leave the matched route in the scope.
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class ResponseAborted(RuntimeError):
    """Raised to the server when a response fails after it started: the connection must be dropped.

    The cause is already in the log (with the trace id); the server's own log line
    for this exception names only the trace id.
    """


class BoundaryGuard:
    """Assigns the trace id, turns every error into a problem, records metrics and logs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        type_base: str | ProblemLinks,
        metrics: Metrics | None,
        metrics_path: str | None,
        logger: Any,
        access_log: AccessLog | None,
        clients: ClientIdentifier | None = None,
        observability: ObservabilityConfig | None = None,
        application: ASGIApp | None = None,
        normalize_upstream: normalize.NormalizePolicy = True,
        panel: Panel | None = None,
    ) -> None:
        self.app = app
        #: ``errors.normalize_upstream``: which of the application's error responses become problems.
        self.normalize_upstream = normalize_upstream
        # The guards at the top of the chain that can do their part synchronously
        # (``admit``, see :class:`~bastion.protocols.Admitting`) run here one after the
        # other, with no coroutine of their own; the first that cannot is awaited, and
        # runs the rest of the chain as usual.
        admitting: list[tuple[Callable[[Scope, RequestContext], bool], ASGIApp]] = []
        inner = app
        # ``application`` (the app inside the guards) is never asked, whatever its attributes.
        while inner is not application and (admit := getattr(inner, "admit", None)) is not None:
            admitting.append((admit, inner))
            inner = getattr(inner, "app")  # noqa: B009  # ASGIApp, the protocol, has no .app; a guard has
        self.admitting = tuple(admitting)
        #: The first app below the admitting guards (the application itself when they all are).
        self.after_admitting = inner
        self.type_base = type_base
        self.metrics = metrics
        self.metrics_path = metrics_path if metrics is not None else None
        self.logger = logger
        self.access_log = access_log
        self.clients = clients
        # Decided once here: with tracing or the dashboard off, a request pays one None check each.
        self.tracer = build_tracer(observability.otel, logger) if observability is not None else None
        self.dashboard: Dashboard | None = None
        if observability is not None and observability.dashboard.enabled:
            if metrics is None:
                logger.warning("observability.dashboard needs metrics.enabled; the dashboard is off")
            else:
                self.dashboard = Dashboard(
                    observability.dashboard, metrics, self.metrics_path, clients, panel
                )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # This runs on every request: each line below is paid for in microseconds
        # across a service, so the common path is kept to the statements it needs.
        started_at = perf_counter()
        incoming_trace = incoming_request_id = content_length = None
        forged = False
        for key, value in scope["headers"]:
            if key == b"traceparent":
                incoming_trace = value
            elif key == b"x-request-id":
                incoming_request_id = value
            elif key == b"content-length":
                content_length = value
            elif key == WOULD_REFUSE:
                forged = True
        if forged:
            # Only bastion's guards name refusals decided in shadow mode to the application.
            scope["headers"] = [pair for pair in scope["headers"] if pair[0] != WOULD_REFUSE]
        method = scope["method"]
        if method not in _KNOWN_METHODS:
            method = "_OTHER"
        # One draw for both ids. Trace ids need to be unique, not secret: like
        # OpenTelemetry's generator, use the fast PRNG (reseeded in forked workers).
        ids = getrandbits(192).to_bytes(24, "big").hex()
        trace_id = ids[:32]
        span_id = ids[32:]
        flags = "01"
        if incoming_trace is not None:
            parsed = parse_traceparent(incoming_trace)
            if parsed is not None:
                trace_id, flags = parsed
        server_span: ServerSpan | None = None
        if self.tracer is not None:
            # The span's ids become the request's, so problems and logs name the span's trace.
            server_span = self.tracer.start(scope, method)
            if server_span.ids is not None:
                trace_id, span_id, flags = server_span.ids
        request_id = trace_id
        if incoming_request_id is not None and valid_request_id(incoming_request_id):
            request_id = incoming_request_id.decode()
        ctx = scope[SCOPE_KEY] = RequestContext(trace_id, span_id, request_id, flags, self.type_base)
        if server_span is not None:
            ctx.span = server_span
        trace_headers: Headers = [
            (b"traceparent", f"00-{trace_id}-{span_id}-{flags}".encode()),
            (b"x-request-id", request_id.encode()),
        ]
        response_finished = False
        response_size = 0
        held: normalize.HeldResponse | None = None
        policy = self.normalize_upstream

        # A plain function that hands back the awaitable of the real ``send`` (or an
        # already finished one): awaiting it costs no coroutine of our own per message.
        def send_with_headers(message: Message) -> Awaitable[None]:
            nonlocal response_finished, held, response_size
            if message["type"] == "http.response.start":
                status = ctx.status = message["status"]
                headers = message.get("headers")
                # Extend the app's list in place when it is one: messages are handed
                # over to us, and a copy per response is measurable on the hot path.
                if type(headers) is not list:
                    headers = message["headers"] = list(headers or ())
                headers += trace_headers
                if ctx.response_headers:
                    headers += ctx.response_headers
                if status >= 400:
                    media_type = normalize.content_type(headers)
                    replaceable = normalize.needs_normalizing(policy, status, media_type)
                    if replaceable or (status >= 500 and media_type != PROBLEM_CONTENT_TYPE):
                        held = normalize.HeldResponse(message, media_type, replaceable=replaceable)
                        return DONE
            else:
                body = message.get("body")
                if body:
                    response_size += len(body)
                if not message.get("more_body"):
                    response_finished = True
            if held is not None:
                if held.add(message):
                    # Too long to hold: what was held goes out, and the rest streams.
                    messages, held = held.as_sent(), None
                    return _send_all(send, messages)
                return DONE
            return send(message)

        metrics = self.metrics
        if metrics is not None:
            metrics.request_started(method)
        token = TRACE_ID.set(trace_id)
        try:
            # One spelling of the path for everything from here on, the upstream included.
            canonicalize(scope)
            path = scope["path"]
            if path == self.metrics_path:
                ctx.route = path
                await self._serve_metrics(scope, send_with_headers)
            elif self.dashboard is not None and self.dashboard.handles(path):
                await self.dashboard.handle(scope, ctx, send_with_headers, receive)
            else:
                app = self.after_admitting
                for admit, guard in self.admitting:
                    if not admit(scope, ctx):
                        app = guard
                        break
                await app(scope, receive, send_with_headers)
            if held is not None:
                replaced_size = await self._release(held, ctx, scope, send, trace_headers)
                if replaced_size is not None:
                    response_size = replaced_size
        except Exception as exc:
            if held is not None:
                # The framework answered the exception with its own 5xx: replace it.
                held = None
                ctx.status = None
                response_finished = False
                response_size = 0
            await self._on_exception(exc, ctx, scope, send, send_with_headers, response_finished)
        finally:
            TRACE_ID.reset(token)
            duration = perf_counter() - started_at
            status = ctx.status or 500
            route = ctx.route
            if route is None:
                # Starlette and FastAPI leave the matched route in the scope.
                route = getattr(scope.get("route"), "path", None)
                if type(route) is not str:
                    route = UNMATCHED_ROUTE
            if ctx.body is not None:
                request_size = len(ctx.body)
            elif (
                content_length is not None
                and len(content_length) <= 18
                and content_length.isascii()
                and content_length.isdigit()
            ):
                request_size = int(content_length)
            else:
                request_size = 0
            if metrics is not None:
                if ctx.problem_code is not None:
                    metrics.count_problem(ctx.problem_code, status)
                metrics.request_done(method, route, status, duration, request_size, response_size)
            if self.dashboard is not None:
                self.dashboard.recent.finished(scope, ctx, method, route, status)
            if self.clients is not None and (server_span is not None or self.access_log is not None):
                self.clients.fill(scope, ctx)
            if server_span is not None and self.tracer is not None:
                self.tracer.finish(
                    server_span,
                    ctx,
                    None if route == UNMATCHED_ROUTE else route,
                    status,
                    request_size,
                    response_size,
                )
            if self.access_log is not None:
                line = {
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    # To the microsecond, rounded in integers (``round(x, 3)`` costs three times as much).
                    "duration_ms": int(duration * 1_000_000 + 0.5) / 1000,
                    "client": ctx.client_id,
                    "trace_id": trace_id,
                    "request_id": request_id,
                }
                if ctx.log:
                    # The line is rendered later, on the log writer's thread: a list a guard
                    # keeps (and could add to after the response) goes in as a copy.
                    for key, value in ctx.log.items():
                        line[key] = value.copy() if type(value) is list else value
                self.access_log.write(line)

    async def _on_exception(
        self,
        exc: Exception,
        ctx: RequestContext,
        scope: Scope,
        send: Send,
        send_with_headers: Send,
        response_finished: bool,
    ) -> None:
        """Answer an exception: a problem if nothing was sent yet, else end the response."""
        if ctx.span is not None and not isinstance(exc, Problem):
            ctx.span.exception = exc
        if isinstance(exc, Problem) and exc.status < 500:
            problem: Problem = exc
        else:
            problem = exc if isinstance(exc, Problem) else InternalError()
            self.logger.error(
                "unhandled exception" if not isinstance(exc, Problem) else "server problem",
                trace_id=ctx.trace_id,
                method=scope["method"],
                path=scope["path"],
                exc_info=exc,
            )
        if ctx.status is None:
            await self._send_problem(ctx, scope, problem, send_with_headers)
        elif not response_finished:
            # The response has begun: another cannot be sent, and ending it normally would
            # pass a cut-off body for a whole one (a chunked response's last chunk says
            # "complete"). Raising makes the server drop the connection without it, so
            # the client sees a broken response, never a short one that looks whole.
            self.logger.error("response aborted after it started", trace_id=ctx.trace_id, path=scope["path"])
            raise ResponseAborted(f"the response broke off after it started (trace_id {ctx.trace_id})")

    async def _release(
        self,
        held: normalize.HeldResponse,
        ctx: RequestContext,
        scope: Scope,
        send: Send,
        trace_headers: Headers,
    ) -> int | None:
        """Send a held response as it came, or its replacement; the replacement's size, if replaced."""
        status: int = held.start["status"]
        if not held.replaceable or not normalize.replaces(
            self.normalize_upstream, status, held.media_type, held.body, complete=held.whole
        ):
            await _send_all(send, held.as_sent())
            return None
        problem, rendered = normalize.replacement(
            status,
            held.start["headers"],
            type_base=self.type_base,
            trace_id=ctx.trace_id,
            instance=request_instance(scope),
            source="application",
            extra_headers=trace_headers,
        )
        ctx.problem_code = problem.code
        normalize.log_original(
            self.logger, ctx.trace_id, status, held.media_type, held.body, truncated=not held.whole
        )
        await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
        await send({"type": "http.response.body", "body": rendered.body, "more_body": False})
        return len(rendered.body)

    async def _send_problem(self, ctx: RequestContext, scope: Scope, problem: Problem, send: Send) -> None:
        rendered = render(
            problem, type_base=self.type_base, trace_id=ctx.trace_id, instance=request_instance(scope)
        )
        ctx.problem_code = problem.code
        if problem.errors and self.metrics is not None:
            operation = ctx.operation_id or ctx.route or _route_label(scope)
            self.metrics.count_field_errors(operation, problem.errors)
        await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
        await send({"type": "http.response.body", "body": rendered.body, "more_body": False})

    async def _serve_metrics(self, scope: Scope, send: Send) -> None:
        assert self.metrics is not None
        if scope["method"] not in ("GET", "HEAD"):
            raise Problem(
                status=405,
                code="METHOD_NOT_ALLOWED",
                title="Method not allowed",
                headers={"Allow": "GET, HEAD"},
            )
        body = self.metrics.exposition()
        headers: Headers = [
            (b"content-type", self.metrics.content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {
                "type": "http.response.body",
                "body": body if scope["method"] == "GET" else b"",
                "more_body": False,
            }
        )


async def _send_all(send: Send, messages: list[Message]) -> None:
    for message in messages:
        await send(message)
