"""OpenTelemetry tracing: one server span per request, guard decisions as span events.

Everything here is optional. Without the ``otel`` extra, or with
``observability.otel.enabled: false``, :func:`build_tracer` returns ``None`` when
bastion is built and the boundary never looks at tracing again; guards calling
:func:`record_event` pay one attribute check.

The span continues an incoming W3C ``traceparent``; its trace id becomes the
request's ``trace_id`` (problem bodies, logs, the ``traceparent`` response
header), and its span id the one the response names. Attributes follow the
OpenTelemetry HTTP server conventions (``http.request.method``, ``url.path``,
``http.route``, ``http.response.status_code``, ``error.type``, ...).

For guards, one call::

    from bastion.observability import record_event

    record_event(ctx, "bastion.rate_limit", {"bastion.rule": rule.name, "bastion.outcome": "limited"})
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.asgi import RequestContext, Scope

if TYPE_CHECKING:
    from bastion.config.observability import OtelConfig

#: What an attribute value may be: OpenTelemetry accepts these primitives and sequences of them.
AttributeValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]

_INSTRUMENTATION = "bastion"


def record_event(
    ctx: RequestContext | None, name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> None:
    """Add an event (a guard decision) to the request's server span; nothing when tracing is off.

    Name events ``bastion.<capability>`` and their attributes ``bastion.<fact>``;
    never put submitted values (bodies, tokens, keys) in them.
    """
    if ctx is None or ctx.span is None:
        return
    ctx.span.span.add_event(name, attributes=dict(attributes) if attributes else None)


def start_upstream_span(ctx: RequestContext | None, method: str, url: str) -> UpstreamSpan | None:
    """Start the client span of one upstream call (the gateway's), or ``None`` when tracing is off.

    Send ``span.traceparent`` to the upstream instead of the request's own, so the
    upstream's spans become children of this one; then call ``span.end(status)`` when the
    response head arrives, or ``span.end(error=exc)`` when the call failed.
    """
    if ctx is None or ctx.span is None:
        return None
    server: ServerSpan = ctx.span
    return server.tracer.start_upstream(server, method, url)


class UpstreamSpan:
    """A started client span and the ``traceparent`` that names it."""

    __slots__ = ("_error", "_span", "traceparent")

    def __init__(self, span: Any, traceparent: bytes, error: Any) -> None:
        self._span = span
        self._error = error
        #: The ``traceparent`` value for the upstream request.
        self.traceparent = traceparent

    def end(self, status: int | None = None, error: BaseException | None = None) -> None:
        """Record the upstream's status (or the failure) and end the span."""
        span = self._span
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(self._error)
        elif status is not None and status >= 400:
            # For client spans the conventions count 4xx as errors too.
            span.set_attribute("error.type", str(status))
            span.set_status(self._error)
        span.end()


@dataclass(slots=True)
class ServerSpan:
    """A started server span, the context token to restore, and the ids it gives the request."""

    span: Any
    token: Any
    method: str
    tracer: ServerTracer
    #: The span's ``(trace_id, span_id, flags)``, or ``None`` when no tracer provider is
    #: recording (bastion keeps its own ids then).
    ids: tuple[str, str, str] | None
    exception: BaseException | None = None


class ServerTracer:
    """Starts and ends the server span of each request."""

    def __init__(self, tracer_provider: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._context = context
        self._trace = trace
        self._kind = trace.SpanKind.SERVER
        self._client = trace.SpanKind.CLIENT
        self._error = trace.Status(trace.StatusCode.ERROR)
        self._propagator = TraceContextTextMapPropagator()
        # Without a provider of its own, the global one: looked up per span by the API's
        # proxy, so an application may configure it after building bastion.
        source = tracer_provider if tracer_provider is not None else trace
        self._tracer = source.get_tracer(_INSTRUMENTATION)

    def start(self, scope: Scope, method: str) -> ServerSpan:
        """Start the span for a request and make it current for the application."""
        carrier: dict[str, str] = {}
        user_agent = None
        for key, value in scope["headers"]:
            if key == b"traceparent" or key == b"tracestate":
                carrier[key.decode()] = value.decode("latin-1")
            elif key == b"user-agent":
                user_agent = value.decode("latin-1")
        parent = self._propagator.extract(carrier) if carrier else None
        parent_span_id = self._trace.get_current_span(parent).get_span_context().span_id if parent else 0
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if method == "_OTHER":
            attributes["http.request.method_original"] = scope["method"]
        query = scope.get("query_string")
        if query:
            attributes["url.query"] = query.decode("latin-1")
        server = scope.get("server")
        if server:
            attributes["server.address"] = str(server[0])
            if server[1] is not None:
                attributes["server.port"] = int(server[1])
        client = scope.get("client")
        if client:
            attributes["client.address"] = str(client[0])
            attributes["network.peer.address"] = str(client[0])
        if user_agent is not None:
            attributes["user_agent.original"] = user_agent
        span = self._tracer.start_span(method, context=parent, kind=self._kind, attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span))
        span_context = span.get_span_context()
        if span_context.is_valid and span_context.span_id != parent_span_id:
            ids = (
                format(span_context.trace_id, "032x"),
                format(span_context.span_id, "016x"),
                format(span_context.trace_flags, "02x"),
            )
            return ServerSpan(span, token, method, self, ids)
        # A no-op provider hands back the parent (or nothing): keep bastion's own ids.
        return ServerSpan(span, token, method, self, None)

    def start_upstream(self, server_span: ServerSpan, method: str, url: str) -> UpstreamSpan:
        """A ``CLIENT`` span, child of the server span, for one call to the upstream."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        attributes: dict[str, AttributeValue] = {"http.request.method": method, "url.full": url}
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        attributes["server.port"] = port
        parent = self._trace.set_span_in_context(server_span.span)
        span = self._tracer.start_span(method, context=parent, kind=self._client, attributes=attributes)
        context = span.get_span_context()
        if context.is_valid:
            traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        else:
            sc = server_span.span.get_span_context()
            traceparent = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"
        return UpstreamSpan(span, traceparent.encode(), self._error)

    def finish(
        self,
        server_span: ServerSpan,
        ctx: RequestContext,
        route: str | None,
        status: int,
        request_size: int | None,
        response_size: int,
    ) -> None:
        """Name the span after the route, add the response attributes, end it, restore the context."""
        span = server_span.span
        try:
            if route is not None:
                span.set_attribute("http.route", route)
                span.update_name(f"{server_span.method} {route}")
            span.set_attribute("http.response.status_code", status)
            if request_size is not None:
                span.set_attribute("http.request.body.size", request_size)
            span.set_attribute("http.response.body.size", response_size)
            if ctx.problem_code is not None:
                span.set_attribute("bastion.problem.code", ctx.problem_code)
            if ctx.client_id is not None:
                span.set_attribute("bastion.client.id", ctx.client_id)
            if ctx.operation_id is not None:
                span.set_attribute("bastion.operation.id", ctx.operation_id)
            if server_span.exception is not None:
                # Only to the tracing backend; the client's body says nothing about it.
                span.record_exception(server_span.exception)
            if status >= 500:
                # The conventions: server spans are errors for 5xx only; error.type is the status.
                exception = server_span.exception
                span.set_attribute("error.type", type(exception).__qualname__ if exception else str(status))
                span.set_status(self._error)
        finally:
            span.end()
            self._context.detach(server_span.token)


def build_tracer(config: OtelConfig, logger: Any) -> ServerTracer | None:
    """The server tracer for this configuration, or ``None`` (tracing off, or the extra missing)."""
    if not config.enabled:
        return None
    try:
        import opentelemetry.trace  # noqa: F401  (only checks the extra is installed)
    except ImportError:
        logger.warning(
            "observability.otel.enabled is true but OpenTelemetry is not installed; "
            "tracing is off (pip install 'bastion-guards[otel]')"
        )
        return None
    provider = _console_provider(config.service_name) if config.exporter == "console" else None
    return ServerTracer(provider)


def _console_provider(service_name: str) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # The stream current now, not the one the exporter's default captured at import.
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
    return provider
