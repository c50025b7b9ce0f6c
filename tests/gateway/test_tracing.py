"""The gateway's upstream call gets an OpenTelemetry client span, and the upstream sees it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway.conftest import Server
from tests.gateway.test_proxy import client, gateway, headers_of

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    current = trace.get_tracer_provider()
    if not isinstance(current, sdk_trace.TracerProvider):
        trace.set_tracer_provider(sdk_trace.TracerProvider())
        current = trace.get_tracer_provider()
    assert isinstance(current, sdk_trace.TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    current.add_span_processor(processor)
    yield exporter
    processor.shutdown()


async def test_upstream_call_is_a_client_span_whose_id_the_upstream_receives(
    upstream: Server, spans: InMemorySpanExporter
) -> None:
    app, _ = gateway(upstream.base, observability={"otel": {"enabled": True}})
    async with client(app) as http:
        response = await http.get("/echo/traced?x=1")
    assert response.status_code == 200
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    (outbound,) = [s for s in finished if s.kind == trace.SpanKind.CLIENT]
    assert outbound.parent is not None
    assert outbound.parent.span_id == server.context.span_id
    sent = headers_of(response.json())["traceparent"][0].split("-")
    assert sent[1] == format(outbound.context.trace_id, "032x")
    assert sent[2] == format(outbound.context.span_id, "016x")
    assert response.headers["traceparent"].split("-")[1] == sent[1]
    attributes: dict[str, Any] = dict(outbound.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.response.status_code"] == 200


async def test_unreachable_upstream_ends_the_client_span_with_an_error(spans: InMemorySpanExporter) -> None:
    from tests.conftest import free_port

    app, _ = gateway(f"http://127.0.0.1:{free_port()}", observability={"otel": {"enabled": True}})
    async with client(app) as http:
        response = await http.get("/anything")
    assert response.status_code == 502
    (outbound,) = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert outbound.status.status_code == trace.StatusCode.ERROR
