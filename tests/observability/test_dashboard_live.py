"""What the dashboard's data adds to counters: windowed rates and latency, 5xx responses, top clients."""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.observability.multiprocess import ENV_VAR
from bastion.observability.recent import MAX_RECENT_ERRORS, TopK
from bastion.observability.window import (
    MAX_SAMPLES,
    WINDOW_SECONDS,
    Sample,
    SlidingWindow,
    histogram_quantile,
)
from tests.observability.apps import make_app
from tests.observability.servers import serve

ON = {"observability": {"dashboard": {"enabled": True}}, "errors": {"framework_adapters": False}}
DATA = "/_bastion/dashboard/data"
INF = float("inf")


def client(app: Any, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_the_first_poll_already_has_rates_and_latency() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    async with client(app) as http:
        for i in range(6):
            await http.get(f"/items/{i}")
        await http.get("/limited")
        await http.get("/boom")
        data = (await http.get(DATA)).json()

    # Compared with the sample the dashboard took when it was built: no second poll needed.
    seconds = data["window_seconds"]
    assert seconds > 0
    rates = data["rates"]["requests"]
    assert rates["total"] == pytest.approx(8 / seconds)
    assert rates["5xx"] == pytest.approx(1 / seconds)
    assert rates["429"] == pytest.approx(1 / seconds)
    latency = {(row["method"], row["route"]): row for row in data["latency"]}
    # The dashboard's own requests are not traffic.
    assert set(latency) == {("GET", "/items/{item_id}"), ("GET", "/limited"), ("GET", "/boom")}
    items = latency[("GET", "/items/{item_id}")]
    assert items["count"] == 6
    assert 0 < items["p50"] <= items["p95"] <= items["p99"] <= 10


async def test_later_polls_count_only_what_happened_since() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    async with client(app) as http:
        await http.get("/items/1")
        first = (await http.get(DATA)).json()
        second = (await http.get(DATA)).json()
    # Polls closer together than the window compare with the same reference sample.
    assert second["window_seconds"] > first["window_seconds"]
    assert second["rates"]["requests"]["total"] * second["window_seconds"] == pytest.approx(1)


async def test_the_latest_5xx_responses_with_their_trace_ids() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    async with client(app) as http:
        trace_ids = [(await http.get("/boom")).json()["trace_id"] for _ in range(MAX_RECENT_ERRORS + 5)]
        await http.get("/items/1")
        await http.get("/limited")
        data = (await http.get(DATA)).json()
    recent = data["recent_5xx"]
    assert [row["trace_id"] for row in recent] == trace_ids[::-1][:MAX_RECENT_ERRORS]
    # Method, route template, status, trace id and time: nothing else about the request.
    assert set(recent[0]) == {"time", "method", "route", "status", "trace_id"}
    assert (recent[0]["method"], recent[0]["route"], recent[0]["status"]) == ("GET", "/boom", 500)
    assert recent[0]["time"] >= recent[-1]["time"] > 0


async def test_top_clients_by_429_and_by_validation_failures() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    api_key = "sk-live-0123456789abcdef"
    async with client(app, host="127.0.0.2") as other, client(app) as http:
        for _ in range(3):
            await http.get("/limited")
        await other.get("/limited")
        await http.get("/limited", headers={"x-api-key": api_key})
        await other.post("/invalid", json={})
        await other.post("/invalid", json={})
        await http.get("/missing")  # a 404 is neither
        data = (await http.get(DATA)).json()
    digest = "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]
    top = data["top_clients"]
    assert [(row["client"], row["count"]) for row in top["rate_limited"]] == [
        ("ip:127.0.0.1", 3),
        ("ip:127.0.0.2", 1),
        (digest, 1),
    ]
    assert [(row["client"], row["count"]) for row in top["validation"]] == [("ip:127.0.0.2", 2)]
    # A client named by its API key is shown by the id bastion gives it, never the key.
    assert api_key not in (await client(app).get(DATA)).text


def test_top_k_stays_bounded_and_keeps_the_heavy_clients() -> None:
    top = TopK(capacity=10)
    # 200 one-off clients (rotating addresses) and one client with 50 of the 250 events.
    for i in range(200):
        top.add(f"ip:10.0.{i // 250}.{i % 250}")
        if i % 4 == 0:
            top.add("heavy")
    assert len(top) == 10
    rows = top.top(3)
    # Space-Saving keeps every key with more than total / capacity events; its count is an
    # upper bound that overstates by at most its error.
    assert rows[0]["client"] == "heavy"
    assert rows[0]["count"] - rows[0]["error"] <= 50 <= rows[0]["count"]
    assert len(rows) == 3


def test_the_window_differences_against_a_sample_about_ten_seconds_old() -> None:
    window = SlidingWindow(Sample(0.0, {("requests", "total"): 0.0}))
    for second in range(1, 31):
        seconds, increase = window.advance(Sample(float(second), {("requests", "total"): 5.0 * second}))
        assert increase[("requests", "total")] / seconds == pytest.approx(5.0)
        assert seconds <= WINDOW_SECONDS + 1
    assert len(window) <= WINDOW_SECONDS + 2
    # A count that went down was reset: its increase is what it counted since.
    _, increase = window.advance(Sample(31.0, {("requests", "total"): 2.0}))
    assert increase[("requests", "total")] == 2.0


def test_the_window_keeps_a_bounded_number_of_samples_however_often_it_is_polled() -> None:
    window = SlidingWindow(Sample(0.0, {}))
    for step in range(1, 1001):
        window.advance(Sample(step / 100, {}))
    assert len(window) <= MAX_SAMPLES


def test_quantiles_are_interpolated_inside_buckets_as_prometheus_does() -> None:
    buckets = [(0.1, 50.0), (0.25, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.175)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    # A rank in the +Inf bucket is reported as the largest finite bound.
    assert histogram_quantile(0.99, [(0.1, 10.0), (INF, 20.0)]) == pytest.approx(0.1)
    assert histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=15))
def test_quantiles_never_decrease_and_stay_within_the_bounds(counts: list[int]) -> None:
    bounds = [0.005 * 2**i for i in range(len(counts) - 1)] + [INF]
    cumulative: list[tuple[float, float]] = []
    total = 0
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        cumulative.append((bound, float(total)))
    values = [histogram_quantile(q, cumulative) for q in (0.5, 0.95, 0.99)]
    if total == 0:
        assert values == [None, None, None]
        return
    assert all(value is not None for value in values)
    finite = [value for value in values if value is not None]
    assert finite == sorted(finite)
    assert finite[0] >= 0 and finite[-1] <= max([0.0, *bounds[:-1]])


def answered_by_both(base: str, at_least: int) -> list[int]:
    """Requests to ``/pid``, each on a new connection, until both workers answered (at most 300)."""
    pids: list[int] = []
    while (len(set(pids)) < 2 or len(pids) < at_least) and len(pids) < 300:
        pids.append(httpx.get(base + "/pid", timeout=5).json()["pid"])
    assert len(set(pids)) == 2
    return pids


@pytest.mark.e2e
def test_with_two_workers_rates_and_latency_count_every_worker(tmp_path: Path) -> None:
    env = {ENV_VAR: str(tmp_path), "BASTION_OBSERVABILITY__DASHBOARD__ENABLED": "true"}
    with serve(env, tmp_path / "server.log", workers=2) as base:
        # Both workers up (each took its first sample when it started), then requests to both.
        warm_up = answered_by_both(base, 1)
        measured = answered_by_both(base, 20)
        data = httpx.get(base + DATA, timeout=5).json()
    latency = {row["route"]: row for row in data["latency"]}
    # Whichever worker answers, the window holds every measured request, both workers' alike.
    count = latency["/pid"]["count"]
    assert len(measured) <= count <= len(warm_up) + len(measured)
    assert 0 < latency["/pid"]["p50"] <= latency["/pid"]["p99"]
    total = round(data["rates"]["requests"]["total"] * data["window_seconds"])
    assert count <= total <= count + 1  # and perhaps the readiness probe


class _Unasked:
    """A client identifier that must not be asked: identity costs only when a table needs it."""

    def fill(self, scope: Any, ctx: Any) -> None:
        raise AssertionError(f"client resolved for a {ctx.status} response")


def test_only_429s_and_validation_failures_resolve_the_client() -> None:
    from bastion.asgi import RequestContext
    from bastion.observability.recent import RecentRequests

    recent = RecentRequests(_Unasked())  # type: ignore[arg-type]
    for status, code in ((200, None), (304, None), (404, "not-found"), (500, "internal"), (503, None)):
        ctx = RequestContext("t" * 32, "s" * 16, "r", status=status)
        ctx.problem_code = code
        recent.finished({"type": "http"}, ctx, "GET", "/r", status)
    snapshot = recent.snapshot()
    assert [row["status"] for row in snapshot["recent_5xx"]] == [503, 500]
    assert snapshot["top_clients"] == {"rate_limited": [], "validation": []}


@given(st.lists(st.integers(0, 30), max_size=300), st.integers(1, 12))
def test_top_k_counts_bound_the_true_counts(stream: list[int], capacity: int) -> None:
    top = TopK(capacity)
    for key in stream:
        top.add(str(key))
    true = Counter(str(key) for key in stream)
    rows = top.top(capacity)
    assert len(rows) == min(capacity, len(true))
    assert sum(row["count"] for row in rows) == len(stream)
    for row in rows:
        assert row["count"] - row["error"] <= true[row["client"]] <= row["count"]
    # Only the smallest is ever evicted, so a key above the average share is always kept.
    kept = {row["client"] for row in rows}
    assert all(key in kept for key, count in true.items() if count > len(stream) / capacity)


def test_a_flood_of_new_clients_costs_no_scan_of_the_tracked_ones() -> None:
    top = TopK(5_000)
    started = time.perf_counter()
    for i in range(50_000):  # every one a new client: 45,000 evictions
        top.add(f"ip:{i}")
    # A scan of the 5,000 tracked keys per eviction takes tens of seconds; a heap, a fraction of one.
    assert time.perf_counter() - started < 3.0
    assert len(top) == 5_000
