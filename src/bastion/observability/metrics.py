"""Prometheus metrics, named after the OpenTelemetry HTTP conventions.

Each :class:`bastion.Bastion` owns a :class:`Metrics` with its own registry, so two
instances in one process never share counters. Guards add their counters with
:meth:`Metrics.counter`. Label children are cached: ``labels()`` is slow and the
hot path calls it often.

With ``PROMETHEUS_MULTIPROC_DIR`` set (see :mod:`bastion.observability.multiprocess`)
the values are shared between worker processes and every scrape sums them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bastion.observability import multiprocess
from bastion.observability.http_metrics import (
    DURATION_BUCKETS,
    SIZE_BUCKETS,
    HttpServerSeries,
    MultiprocessHttpServer,
    status_label,
)
from bastion.problems import MAX_NAME_CHARS

__all__ = [
    "DURATION_BUCKETS",
    "GUARD_COUNTERS",
    "MAX_FIELD_SERIES",
    "OTHER",
    "SIZE_BUCKETS",
    "UNMATCHED_ROUTE",
    "Metrics",
    "PendingCounts",
    "Tally",
]

#: The route label for requests that matched no known route (kept bounded on purpose).
UNMATCHED_ROUTE = "_unmatched"
#: The label value that stands for every value past a label's bound.
OTHER = "_other"
#: At most this many (operation, field) pairs get their own validation series; field
#: names of unknown members come from clients, so they must not grow the registry.
MAX_FIELD_SERIES = 500

#: The counters the guards register through :meth:`Metrics.counter`, with their labels: the
#: contract that the dashboard, ``docs/grafana-dashboard.json`` and ``docs/alerts.yaml`` read.
GUARD_COUNTERS: dict[str, tuple[str, ...]] = {
    "bastion_rate_limit_decisions_total": ("rule", "outcome"),
    "bastion_validation_failures_total": ("operation", "code"),
    "bastion_idempotency_events_total": ("event",),
    "bastion_store_errors_total": ("store", "operation"),
    "bastion_response_validation_failures_total": ("operation", "code"),
    "bastion_gateway_upstream_errors_total": ("kind",),
    "bastion_config_reloads_total": ("result",),
    "bastion_shadow_refusals_total": ("guard", "code"),
}

_INDEX_SEGMENT = re.compile(r"/\d+(?=/|$)")


def field_label(entry: Mapping[str, Any]) -> str:
    """The label for one ``errors[]`` entry: its JSON pointer with array indices as ``*``."""
    where = entry.get("pointer") or entry.get("field") or ""
    if not isinstance(where, str):
        where = str(where)
    # Field names of unknown members come from clients: a label value is never longer than
    # the names a problem shows (problems.MAX_NAME_CHARS).
    where = _INDEX_SEGMENT.sub("/*", where[:MAX_NAME_CHARS])
    location = entry.get("in")
    if isinstance(location, str) and location != "body":
        return f"{location}:{where.lstrip('/')}"
    return where or "(body)"


class Metrics:
    """The metrics registry of one bastion instance."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: The shared directory when values are summed across worker processes.
        self.multiprocess_dir = multiprocess.multiprocess_dir(env)
        self.http: HttpServerSeries | MultiprocessHttpServer
        if self.multiprocess_dir is not None:
            multiprocess.use_shared_values()
            self.http = MultiprocessHttpServer(self.registry)
        else:
            self.http = HttpServerSeries()
            self.registry.register(self.http)
        #: The counters and histograms the guards created, by name.
        self._collectors: dict[str, Counter | Histogram] = {}
        self._tallies: dict[str, Tally] = {}
        self.problems = self.tally(
            "bastion_problems_total",
            "Problem responses bastion rendered, by code and status.",
            ["code", "status"],
        )
        self.field_errors = self.tally(
            "bastion_validation_field_errors_total",
            "Entries of errors[] in problem responses, by operation and field (JSON pointer).",
            ["operation", "field"],
        )
        # Bound the hot-path methods once: the boundary calls them on every request.
        #: One more request in flight (by method).
        self.request_started = self.http.request_started
        #: Record a finished request (duration, body sizes) and count it out of those in flight.
        self.request_done = self.http.finish

    def count_problem(self, code: str, status: int) -> None:
        """Record one rendered problem."""
        self.problems.count(code, status_label(status))

    def count_field_errors(self, operation: str, errors: Iterable[Mapping[str, Any]]) -> None:
        """Count the ``errors[]`` entries of a problem by operation and field, with a bounded label set."""
        fields = self.field_errors
        for entry in errors:
            key = (operation, field_label(entry))
            slot = fields.slots.get(key)
            if slot is None:
                if len(fields.slots) >= MAX_FIELD_SERIES:
                    key = (operation, OTHER)
                slot = fields.slot(*key)
            fields.add(slot)

    def counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        """Create (or return) a counter in this registry (for what is counted off the request path)."""
        existing = self._collectors.get(name)
        if isinstance(existing, Counter):
            return existing
        counter = self._collectors[name] = Counter(name, documentation, labels, registry=self.registry)
        return counter

    def tally(self, name: str, documentation: str, labels: list[str]) -> Tally:
        """The :class:`Tally` of a counter: how every guard counts on the request path (one per name)."""
        existing = self._tallies.get(name)
        if existing is None:
            existing = self._tallies[name] = Tally(self, self.counter(name, documentation, labels))
        return existing

    def histogram(
        self, name: str, documentation: str, labels: list[str], buckets: Iterable[float] = DURATION_BUCKETS
    ) -> Histogram:
        """Create (or return) a histogram in this registry (upstream call durations, ...)."""
        existing = self._collectors.get(name)
        if isinstance(existing, Histogram):
            return existing
        histogram = Histogram(name, documentation, labels, buckets=tuple(buckets), registry=self.registry)
        self._collectors[name] = histogram
        return histogram

    def collect(self) -> list[Metric]:
        """Every metric family now: this process's, or in multiprocess mode the sum of every worker's."""
        if self.multiprocess_dir is not None:
            return multiprocess.collect_all_workers(self.multiprocess_dir)
        return list(self.registry.collect())

    def exposition(self) -> bytes:
        """The text exposition of every metric."""
        if self.multiprocess_dir is not None:
            return bytes(generate_latest(_Families(self.collect())))
        return bytes(generate_latest(self.registry))


class _Families:
    """Already collected families, in the shape ``generate_latest`` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class PendingCounts:
    """Counts kept as plain integers on the request path, added to a Prometheus counter when collected.

    ``Counter.inc`` takes a lock and makes four Python calls; a guard that counts on
    every request adds to ``counts[key]`` instead (no lock: the event loop runs one
    step at a time). Registered just ahead of its counter (:meth:`register_before`),
    this collector moves the counts into the counter's ``children`` whenever the
    registry is collected and yields no metric of its own, so the exposition is the
    counter's. Not for multiprocess mode, where scrapes read every worker's shared
    files and not this registry: there a guard increments the counter at once.
    """

    def __init__(self, children: Mapping[Any, Any] | None = None) -> None:
        #: key -> the counter child that key's count goes into.
        self.children: dict[Any, Any] = dict(children or {})
        self.counts: dict[Any, int] = dict.fromkeys(self.children, 0)

    def register_before(self, registry: CollectorRegistry, counter: Counter) -> None:
        """Register in ``registry`` just ahead of ``counter``, so every collection flushes first."""
        registry.unregister(counter)
        registry.register(self)
        registry.register(counter)

    def flush(self) -> None:
        """Add the counts to the counter."""
        counts = self.counts
        # A snapshot of the items: a request on another thread may add a key meanwhile.
        for key, count in list(counts.items()):
            if count:
                # Subtracted, not reset: a count made meanwhile is kept for the next collection.
                counts[key] -= count
                self.children[key].inc(count)

    def describe(self) -> list[Metric]:
        """No metric of its own (the counter describes itself)."""
        return []

    def collect(self) -> list[Metric]:
        """Flush; the counter, collected next, reports the totals."""
        self.flush()
        return []


class Tally(PendingCounts):
    """A labelled counter as the guards count on the request path: the one way they do.

    ``slot(*labels)`` names a label set once (a small integer); ``add(slot)`` counts one.
    In one process the counts are plain integers moved into the counter whenever the
    registry is collected (:class:`PendingCounts`: no lock, no ``labels()`` call per
    request). In multiprocess mode, where scrapes read every worker's shared files and
    not this registry, ``add`` increments the counter at once.
    """

    def __init__(self, metrics: Metrics, counter: Counter) -> None:
        super().__init__()
        self.counter = counter
        #: Whether counts wait for the next collection (not in multiprocess mode).
        self.deferred = metrics.multiprocess_dir is None
        #: label values -> slot.
        self.slots: dict[tuple[str, ...], int] = {}
        if self.deferred:
            self.register_before(metrics.registry, counter)

    def slot(self, *labels: str) -> int:
        """The slot of a label set, its counter child created on first use."""
        found = self.slots.get(labels)
        if found is None:
            found = len(self.slots)
            self.children[found] = self.counter.labels(*labels)
            self.counts[found] = 0
            self.slots[labels] = found
        return found

    def add(self, slot: int, amount: int = 1) -> None:
        """Count ``amount`` for a slot."""
        if self.deferred:
            self.counts[slot] += amount
        else:
            self.children[slot].inc(amount)

    def count(self, *labels: str) -> None:
        """Count one for a label set (for what is not counted on every request)."""
        self.add(self.slot(*labels))
