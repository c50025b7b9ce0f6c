"""Prometheus metrics after scripted traffic: values, exposition format, bounded labels."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bastion.observability.metrics import MAX_FIELD_SERIES, OTHER, Metrics, field_label
from tests.observability.apps import make_app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample as {sample name: {sorted labels: value}}, through prometheus-client's parser."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


async def scrape(http: httpx.AsyncClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def request_labels(method: str, route: str, status: int) -> tuple[tuple[str, str], ...]:
    return labels(http_request_method=method, http_route=route, http_response_status_code=str(status))


async def test_counts_and_sizes_match_the_scripted_traffic() -> None:
    app = make_app(log_stream=io.BytesIO())
    order = b'{"sku": "A-1", "qty": 3}'
    async with client(app) as http:
        for i in range(7):
            assert (await http.get(f"/items/{i}")).status_code == 200
        for _ in range(3):
            response = await http.post("/orders", content=order, headers={"content-type": "application/json"})
            assert response.status_code == 201
        for _ in range(2):
            assert (await http.get("/boom")).status_code == 500
        for _ in range(4):
            assert (await http.get("/limited")).status_code == 429
        item_body_size = len((await http.get("/items/x")).content)
        samples = await scrape(http)

    count = samples["http_server_request_duration_seconds_count"]
    assert count[request_labels("GET", "/items/{item_id}", 200)] == 8
    assert count[request_labels("POST", "/orders", 201)] == 3
    assert count[request_labels("GET", "/boom", 500)] == 2
    assert count[request_labels("GET", "/limited", 429)] == 4
    # No raw path ever becomes a label.
    assert not any("/items/1" in value for key in count for _, value in key)

    request_sum = samples["http_server_request_body_size_bytes_sum"]
    assert request_sum[request_labels("POST", "/orders", 201)] == 3 * len(order)
    assert request_sum[request_labels("GET", "/items/{item_id}", 200)] == 0
    response_sum = samples["http_server_response_body_size_bytes_sum"]
    assert response_sum[request_labels("POST", "/orders", 201)] == 3 * len(order)
    assert response_sum[request_labels("GET", "/items/{item_id}", 200)] == 8 * item_body_size
    # Size buckets: the 24-byte order lands in le=64, not in le=0.
    buckets = samples["http_server_request_body_size_bytes_bucket"]
    post = {"http_request_method": "POST", "http_route": "/orders", "http_response_status_code": "201"}
    assert buckets[labels(**post, le="0.0")] == 0
    assert buckets[labels(**post, le="64.0")] == 3
    assert buckets[labels(**post, le="+Inf")] == 3

    problems = samples["bastion_problems_total"]
    assert problems[labels(code="INTERNAL_ERROR", status="500")] == 2
    # Nothing in flight once every response is complete (the scrape itself is the only one).
    assert samples["http_server_active_requests"][labels(http_request_method="GET")] == 1


async def test_duration_buckets_are_the_advised_ones_and_cumulative() -> None:
    app = make_app(log_stream=io.BytesIO())
    async with client(app) as http:
        await http.get("/items/1")
        samples = await scrape(http)
    buckets = samples["http_server_request_duration_seconds_bucket"]
    series = {dict(k)["le"]: v for k, v in buckets.items() if dict(k)["http_route"] == "/items/{item_id}"}
    assert list(series) == [
        "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5",
        "0.75", "1.0", "2.5", "5.0", "7.5", "10.0", "+Inf",
    ]  # fmt: skip
    values = list(series.values())
    assert values == sorted(values)
    assert values[-1] == 1


async def test_active_requests_rise_while_requests_wait_and_fall_after() -> None:
    app = make_app(log_stream=io.BytesIO())
    async with client(app) as http:
        waiting = [asyncio.create_task(http.get("/wait")) for _ in range(3)]
        active = 0.0
        for _ in range(100):
            await asyncio.sleep(0.01)
            active = (await scrape(http))["http_server_active_requests"][labels(http_request_method="GET")]
            if active == 4:
                break
        # Three waiting, plus the scrape itself.
        assert active == 4
        assert (await http.get("/release")).status_code == 200
        responses = await asyncio.wait_for(asyncio.gather(*waiting), timeout=10)
        assert all(r.status_code == 200 for r in responses)
        samples = await scrape(http)
    assert samples["http_server_active_requests"][labels(http_request_method="GET")] == 1


async def test_unknown_methods_share_one_label() -> None:
    app = make_app(log_stream=io.BytesIO())
    async with client(app) as http:
        for verb in ("BREW", "PROPFIND", "X-SECRET"):
            await http.request(verb, "/items/1")
        samples = await scrape(http)
    methods = {dict(k)["http_request_method"] for k in samples["http_server_request_duration_seconds_count"]}
    # The scrape's own request is recorded after its exposition, so only the three are there.
    assert methods == {"_OTHER"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    paths=st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_./%", max_size=40), max_size=20)
)
def test_label_sets_stay_bounded_under_random_paths(paths: list[str]) -> None:
    async def run() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        app = make_app(log_stream=io.BytesIO())
        async with client(app) as http:
            for path in paths:
                await http.get("/" + path.lstrip("/"))
            await http.get("/items/anything")
            return await scrape(http)

    samples = asyncio.run(run())
    routes = {dict(k)["http_route"] for k in samples["http_server_request_duration_seconds_count"]}
    # Only templates (and the scrape's own bucket, which spellings such as ``/./metrics`` also
    # reach): never one label per raw path.
    assert routes <= {
        "/items/{item_id}",
        "_unmatched",
        "/orders",
        "/boom",
        "/limited",
        "/missing",
        "/wait",
        "/metrics",
    }
    statuses = {
        dict(k)["http_response_status_code"] for k in samples["http_server_request_duration_seconds_count"]
    }
    # 400: a path with a broken escape (``/%``) or ``..`` above the root has no canonical form.
    assert statuses <= {"200", "400", "404", "405", "500"}


async def test_field_errors_are_counted_by_operation_and_pointer() -> None:
    # As a guard does: the problem reaches the boundary (no framework handler renders it first).
    app = make_app({"errors": {"framework_adapters": False}}, log_stream=io.BytesIO())
    async with client(app) as http:
        for _ in range(2):
            assert (await http.post("/invalid", json={})).status_code == 422
        samples = await scrape(http)
    fields = samples["bastion_validation_field_errors_total"]
    assert fields[labels(operation="/invalid", field="/email")] == 2
    # Array indices collapse, so a list of a thousand items cannot make a thousand series.
    assert fields[labels(operation="/invalid", field="/items/*/qty")] == 2


def test_field_label_forms() -> None:
    assert field_label({"in": "body", "pointer": "/lines/12/sku"}) == "/lines/*/sku"
    assert field_label({"in": "query", "field": "limit"}) == "query:limit"
    assert field_label({"in": "path", "pointer": "/id"}) == "path:id"
    assert field_label({"code": "X"}) == "(body)"


def test_field_series_are_capped() -> None:
    metrics = Metrics(env={})
    for i in range(MAX_FIELD_SERIES + 200):
        metrics.count_field_errors("createOrder", [{"pointer": f"/unknown_{i}"}])
    samples = parse(metrics.exposition().decode())["bastion_validation_field_errors_total"]
    assert len(samples) <= MAX_FIELD_SERIES + 1
    assert samples[labels(operation="createOrder", field=OTHER)] == 200


def test_guard_counters_appear_in_the_exposition() -> None:
    metrics = Metrics(env={})
    counter = metrics.counter("bastion_idempotency_events_total", "Idempotency events.", ["event"])
    assert metrics.counter("bastion_idempotency_events_total", "Idempotency events.", ["event"]) is counter
    counter.labels("replayed").inc(3)
    samples = parse(metrics.exposition().decode())
    assert samples["bastion_idempotency_events_total"][labels(event="replayed")] == 3


async def test_metrics_disabled_means_no_endpoint_and_no_counting() -> None:
    app = make_app({"metrics": {"enabled": False}}, log_stream=io.BytesIO())
    assert app.metrics is None
    async with client(app) as http:
        assert (await http.get("/items/1")).status_code == 200
        assert (await http.get("/metrics")).status_code == 404
