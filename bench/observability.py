"""What observability adds per request, in-process, beside the same chain without it.

    .venv/bin/python bench/observability.py

Part 1: the boundary with metrics off, with the per-request series (duration,
request and response body sizes, active requests), with the dashboard on, and with
OpenTelemetry on (a no-op provider, and the SDK recording every span with no exporter).
Part 2: the metrics alone: bastion's series against ``prometheus_client`` histograms
doing the same three observations.
"""

from __future__ import annotations

import asyncio
import io
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from prometheus_client import CollectorRegistry, Histogram

from asgi_driver import compare, make_scope
from bastion import Bastion
from bastion.observability.http_metrics import DURATION_BUCKETS, SIZE_BUCKETS, HttpServerSeries
from chain import starlette_app


def get_request(i: int) -> tuple[dict[str, Any], bytes]:
    return make_scope("GET", f"/items/{i % 100}", [(b"host", b"bench")]), b""


def bastion(extra: dict[str, Any]) -> Bastion:
    config: dict[str, Any] = {"store": "memory://", "logging": {"access": False}, **extra}
    return Bastion(starlette_app(), config, env={}, log_stream=io.BytesIO())


def table(rows: list[tuple[str, float]], base: float) -> str:
    lines = ["| configuration | us per request (median) | added vs metrics off |", "|---|---:|---:|"]
    for name, us in rows:
        lines.append(f"| {name} | {us:.2f} | {us - base:+.2f} us |")
    return "\n".join(lines)


async def chain() -> None:
    otel_noop = bastion({"observability": {"otel": {"enabled": True}}})
    apps = {
        "metrics off": bastion({"metrics": {"enabled": False}}),
        "metrics on": bastion({}),
        "metrics + dashboard on": bastion({"observability": {"dashboard": {"enabled": True}}}),
        "metrics + otel (no provider configured)": otel_noop,
    }
    try:
        from opentelemetry.sdk.trace import TracerProvider

        recording = bastion({"observability": {"otel": {"enabled": True}}})
        assert recording._chain.tracer is not None
        # Spans recorded and ended, exported nowhere: the cost of tracing itself.
        recording._chain.tracer._tracer = TracerProvider().get_tracer("bench")
        apps["metrics + otel (SDK, recording)"] = recording
    except ImportError:
        pass
    # The baseline again, last: a drift between the two shows how noisy the run was.
    apps["metrics off (again)"] = bastion({"metrics": {"enabled": False}})
    results = await compare(apps, get_request, expect=200)
    rows = list(results.items())
    print("## Observability in the boundary (GET, in-process ASGI)\n")
    print(table(rows, rows[0][1]))
    print()


def metrics_alone() -> None:
    series = HttpServerSeries()
    registry = CollectorRegistry()
    labels = ("method", "route", "status")
    histograms = [
        Histogram("d", "d", labels, buckets=DURATION_BUCKETS, registry=registry),
        Histogram("q", "q", labels, buckets=SIZE_BUCKETS, registry=registry),
        Histogram("r", "r", labels, buckets=SIZE_BUCKETS, registry=registry),
    ]
    children = [h.labels("GET", "/items/{id}", "200") for h in histograms]

    def ours() -> None:
        series.observe("GET", "/items/{id}", 200, 0.0004, 0, 11)

    def theirs() -> None:
        children[0].observe(0.0004)
        children[1].observe(0)
        children[2].observe(11)

    n = 100_000
    rounds = {name: [] for name in ("bastion series", "prometheus_client histograms")}
    for _ in range(7):
        rounds["bastion series"].append(timeit.timeit(ours, number=n) / n * 1e6)
        rounds["prometheus_client histograms"].append(timeit.timeit(theirs, number=n) / n * 1e6)
    medians = {name: sorted(values)[len(values) // 2] for name, values in rounds.items()}
    print("## Three histogram observations per request (duration, request size, response size)\n")
    print("| implementation | us per request (median) | ratio |\n|---|---:|---:|")
    base = medians["bastion series"]
    for name, us in medians.items():
        print(f"| {name} | {us:.2f} | {us / base:.2f}x |")
    print()


def main() -> None:
    asyncio.run(chain())
    metrics_alone()


if __name__ == "__main__":
    main()
