"""The status label has a fixed set of values, whatever statuses an application or upstream invents."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from prometheus_client import CollectorRegistry

from bastion.asgi import Receive, Scope, Send
from bastion.observability.http_metrics import HttpServerSeries, MultiprocessHttpServer
from tests.support import client, wrap


async def any_status(scope: Scope, receive: Receive, send: Send) -> None:
    status = int(scope["path"].strip("/"))
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": b"odd"})


def series(exposition: str, name: str) -> set[str]:
    return {line.split(" ")[0] for line in exposition.splitlines() if line.startswith(name + "{")}


async def test_400_odd_statuses_make_a_bounded_number_of_series() -> None:
    registered = {status.value for status in HTTPStatus}
    odd = [s for s in range(200, 1000) if s not in registered][:400]
    assert len(odd) == 400
    app, _ = wrap(any_status)
    async with client(app) as http:
        for status in odd:
            assert (await http.get(f"/{status}")).status_code == status
        await http.get("/404")
        exposition = (await http.get("/metrics")).text
    durations = series(exposition, "http_server_request_duration_seconds_count")
    labels = {line.split('http_response_status_code="')[1].split('"')[0] for line in durations}
    assert labels == {"2xx", "3xx", "4xx", "5xx", "other", "404"}
    # The odd 5xx bodies became problems: their counter is bounded the same way.
    problems = series(exposition, "bastion_problems_total")
    assert 0 < len(problems) <= 2
    assert all('status="5xx"' in line for line in problems)


@pytest.mark.parametrize("kind", [HttpServerSeries, MultiprocessHttpServer])
def test_both_series_implementations_bound_the_status_label(kind: type) -> None:
    registry = CollectorRegistry()
    if kind is HttpServerSeries:
        series = HttpServerSeries()
        registry.register(series)
    else:
        series = MultiprocessHttpServer(registry)
    for status in (200, 299, 404, 599, 799, 1000, -1):
        series.request_started("GET")
        series.finish("GET", "/r", status, 0.01, 0, 0)
    labels = {
        sample.labels["http_response_status_code"]
        for family in registry.collect()
        if family.name == "http_server_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    }
    assert labels == {"200", "2xx", "404", "5xx", "other"}
