"""Prometheus metrics, named after the OpenTelemetry HTTP conventions.

Each :class:`bastion.Bastion` owns a :class:`Metrics` with its own registry, so two
instances in one process never share counters. Guards add their counters here.
Label children are cached: ``labels()`` is slow and the hot path calls it often.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The bucket boundaries OpenTelemetry advises for http.server.request.duration.
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

#: The route label for requests that matched no known route (kept bounded on purpose).
UNMATCHED_ROUTE = "_unmatched"


class Metrics:
    """The metrics registry of one bastion instance."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, by method, route template and status code.",
            ["http_request_method", "http_route", "http_response_status_code"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.problems = Counter(
            "bastion_problems_total",
            "Problem responses bastion rendered, by code and status.",
            ["code", "status"],
            registry=self.registry,
        )
        self._duration_children: dict[tuple[str, str, int], Any] = {}
        self._problem_children: dict[tuple[str, int], Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        key = (method, route, status)
        child = self._duration_children.get(key)
        if child is None:
            child = self.request_duration.labels(method, route, str(status))
            self._duration_children[key] = child
        child.observe(seconds)

    def count_problem(self, code: str, status: int) -> None:
        """Record one rendered problem."""
        key = (code, status)
        child = self._problem_children.get(key)
        if child is None:
            child = self.problems.labels(code, str(status))
            self._problem_children[key] = child
        child.inc()

    def counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        """Create (or return) a counter in this registry, for guards to count their decisions."""
        existing = self.registry._names_to_collectors.get(name)
        if isinstance(existing, Counter):
            return existing
        return Counter(name, documentation, labels, registry=self.registry)

    def exposition(self) -> bytes:
        """The text exposition of every metric."""
        return bytes(generate_latest(self.registry))
