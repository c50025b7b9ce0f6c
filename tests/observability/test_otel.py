"""OpenTelemetry server spans, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bastion.asgi import RequestContext
from bastion.config.observability import OtelConfig
from bastion.observability import record_event
from bastion.observability.otel import build_tracer
from tests.observability.apps import make_app

trace = pytest.importorskip("opentelemetry.trace", reason="the otel extra is not installed")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

OTEL_ON = {"observability": {"otel": {"enabled": True}}}
INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def provider() -> Any:
    """The process's SDK tracer provider (OpenTelemetry allows setting it once per process)."""
    current = trace.get_tracer_provider()
    if not isinstance(current, sdk_trace.TracerProvider):
        trace.set_tracer_provider(sdk_trace.TracerProvider())
        current = trace.get_tracer_provider()
    assert isinstance(current, sdk_trace.TracerProvider)
    return current


@pytest.fixture
def spans(provider: Any) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    # Processors cannot be removed from a provider; a shut down one drops what it gets.
    processor.shutdown()


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def server_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]


async def test_one_server_span_per_request_with_http_conventions(spans: InMemorySpanExporter) -> None:
    app = make_app(OTEL_ON, log_stream=io.BytesIO())
    async with client(app) as http:
        response = await http.get("/items/42?verbose=1", headers={"user-agent": "probe/1.0"})
    assert response.status_code == 200
    (span,) = server_spans(spans)
    assert span.name == "GET /items/{item_id}"
    attributes = dict(span.attributes)
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/items/42"
    assert attributes["url.query"] == "verbose=1"
    assert attributes["url.scheme"] == "http"
    assert attributes["server.address"] == "testserver"
    assert attributes["user_agent.original"] == "probe/1.0"
    assert attributes["http.response.body.size"] == len(response.content)
    assert "error.type" not in attributes
    assert span.status.status_code == trace.StatusCode.UNSET
    # The response's traceparent names this very span.
    traceparent = response.headers["traceparent"].split("-")
    assert traceparent[1] == format(span.context.trace_id, "032x")
    assert traceparent[2] == format(span.context.span_id, "016x")


async def test_problem_trace_id_is_the_span_trace_id(spans: InMemorySpanExporter) -> None:
    logs = io.BytesIO()
    app = make_app(OTEL_ON, log_stream=logs)
    async with client(app) as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    body = response.json()
    (span,) = server_spans(spans)
    span_trace_id = format(span.context.trace_id, "032x")
    assert body["trace_id"] == span_trace_id
    assert response.headers["x-request-id"] == span_trace_id
    assert span_trace_id.encode() in logs.getvalue()
    attributes = dict(span.attributes)
    assert attributes["http.response.status_code"] == 500
    assert attributes["error.type"] == "RuntimeError"
    assert attributes["bastion.problem.code"] == "INTERNAL_ERROR"
    assert span.status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    # The exception goes to the tracing backend, never into the response.
    assert "secret" not in response.text


async def test_client_errors_are_not_span_errors(spans: InMemorySpanExporter) -> None:
    app = make_app({**OTEL_ON, "errors": {"framework_adapters": False}}, log_stream=io.BytesIO())
    async with client(app) as http:
        response = await http.post("/invalid", json={})
    assert response.status_code == 422
    (span,) = server_spans(spans)
    assert response.json()["trace_id"] == format(span.context.trace_id, "032x")
    assert dict(span.attributes)["bastion.problem.code"] == "VALIDATION_FAILED"
    assert "error.type" not in dict(span.attributes)
    assert span.status.status_code == trace.StatusCode.UNSET


async def test_incoming_traceparent_is_continued(spans: InMemorySpanExporter) -> None:
    app = make_app(OTEL_ON, log_stream=io.BytesIO())
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"
    async with client(app) as http:
        response = await http.get("/missing", headers={"traceparent": incoming})
    (span,) = server_spans(spans)
    assert format(span.context.trace_id, "032x") == INCOMING_TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == INCOMING_PARENT
    assert response.headers["traceparent"].split("-")[1] == INCOMING_TRACE
    assert response.headers["traceparent"].split("-")[2] == format(span.context.span_id, "016x")


async def test_unknown_route_has_no_http_route(spans: InMemorySpanExporter) -> None:
    app = make_app(OTEL_ON, log_stream=io.BytesIO())
    async with client(app) as http:
        await http.get("/no/such/path")
    (span,) = server_spans(spans)
    assert "http.route" not in dict(span.attributes)
    assert span.name == "GET"


async def test_guard_events_land_on_the_span(spans: InMemorySpanExporter) -> None:
    app = make_app(OTEL_ON, log_stream=io.BytesIO())
    async with client(app) as http:
        await http.get("/items/7")
    (span,) = server_spans(spans)
    (event,) = [e for e in span.events if e.name == "test.item"]
    assert dict(event.attributes or {}) == {"test.id": "7"}


async def test_application_spans_are_children_of_the_server_span(spans: InMemorySpanExporter) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from bastion import Bastion

    async def work(request: Any) -> PlainTextResponse:
        with trace.get_tracer("app").start_as_current_span("db.query"):
            return PlainTextResponse("ok")

    app = Bastion(Starlette(routes=[Route("/work", work)]), {"store": "memory://", **OTEL_ON}, env={})
    async with client(app) as http:
        await http.get("/work")
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["db.query"].parent.span_id == finished["GET /work"].context.span_id


async def test_tracing_off_costs_nothing_and_events_are_no_ops(spans: InMemorySpanExporter) -> None:
    app = make_app(log_stream=io.BytesIO())
    assert app._chain.tracer is None
    async with client(app) as http:
        response = await http.get("/items/1")
    assert response.status_code == 200
    assert server_spans(spans) == []
    # Without a span, record_event does nothing (and does not fail).
    record_event(RequestContext("0" * 32, "0" * 16, "r"), "bastion.test", {"a": 1})
    record_event(None, "bastion.test")


def test_build_tracer_only_when_enabled() -> None:
    assert build_tracer(OtelConfig(), logger=None) is None
    assert build_tracer(OtelConfig(enabled=True), logger=None) is not None


def upstream_app(status: int, seen: dict[str, Any]) -> Any:
    """An ASGI app that makes one (pretend) upstream call the way the gateway does."""
    from bastion.asgi import context_of
    from bastion.observability import start_upstream_span

    async def app(scope: Any, receive: Any, send: Any) -> None:
        span = start_upstream_span(context_of(scope), "POST", "http://127.0.0.1:3000/orders?x=1")
        seen["span"] = span
        if span is not None:
            seen["traceparent"] = span.traceparent.decode()
            span.end(status)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def test_upstream_calls_get_client_spans(spans: InMemorySpanExporter) -> None:
    from bastion import Bastion

    seen: dict[str, Any] = {}
    app = Bastion(upstream_app(503, seen), {"store": "memory://", **OTEL_ON}, env={}, log_stream=io.BytesIO())
    async with client(app) as http:
        response = await http.post("/orders")
    assert response.status_code == 200
    (server,) = server_spans(spans)
    (upstream,) = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert upstream.parent.span_id == server.context.span_id
    assert upstream.context.trace_id == server.context.trace_id
    _, trace_id, span_id, _ = seen["traceparent"].split("-")
    assert (trace_id, span_id) == (
        format(upstream.context.trace_id, "032x"),
        format(upstream.context.span_id, "016x"),
    )
    attributes = dict(upstream.attributes)
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.full"] == "http://127.0.0.1:3000/orders?x=1"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == 3000
    assert attributes["http.response.status_code"] == 503
    assert attributes["error.type"] == "503"
    assert upstream.status.status_code == trace.StatusCode.ERROR


async def test_no_upstream_span_without_tracing(spans: InMemorySpanExporter) -> None:
    from bastion import Bastion

    seen: dict[str, Any] = {}
    app = Bastion(upstream_app(200, seen), {"store": "memory://"}, env={}, log_stream=io.BytesIO())
    async with client(app) as http:
        await http.post("/orders")
    assert seen["span"] is None
    assert spans.get_finished_spans() == ()


async def test_console_exporter_prints_spans_with_the_service_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = {"observability": {"otel": {"enabled": True, "exporter": "console", "service_name": "checkout"}}}
    app = make_app(config, log_stream=io.BytesIO())
    async with client(app) as http:
        response = await http.get("/items/3")
    printed = capsys.readouterr().out
    assert '"name": "GET /items/{item_id}"' in printed
    assert '"service.name": "checkout"' in printed
    assert response.headers["traceparent"].split("-")[1] in printed


def test_opentelemetry_is_not_even_imported_when_tracing_is_off() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from bastion import Bastion\n"
        "async def app(scope, receive, send): pass\n"
        "Bastion(app, {'store': 'memory://'}, env={})\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
