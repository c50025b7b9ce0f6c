"""The per-request HTTP server metrics, kept cheap enough for every request.

``prometheus_client`` takes a lock and walks the buckets in Python for each
observation; three histograms that way cost several microseconds per request.
:class:`HttpServerSeries` keeps plain counts per label set instead (one dictionary
lookup and a C ``bisect`` per histogram) and turns them into metric families only
when scraped. The event loop runs one request step at a time, so no lock is needed
there; the counts are integers, so a rare race from a threaded server could at
worst drop one observation, never corrupt one.

In multiprocess mode the same interface is backed by ``prometheus_client``'s
memory-mapped values instead (:class:`MultiprocessHttpServer`), which the scrape
of any worker aggregates.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

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

#: Body size buckets in bytes: 0, then powers of four from 64 B to 16 MiB (OpenTelemetry advises none).
SIZE_BUCKETS = (0.0, *(float(4**n) for n in range(3, 13)))
# The same bounds as integers: sizes are integers, and comparing an int with a float
# takes a slow path that made the two size histograms cost more than the duration one.
_SIZE_BOUNDS = tuple(int(bound) for bound in SIZE_BUCKETS)

#: The status label of a status outside 100-599 (an upstream may answer anything up to 999).
OTHER_STATUS = "other"
#: The ``http_response_status_code`` label of each status: the status itself when it is a
#: registered one (IANA's registry, as Python's ``HTTPStatus`` knows it), else its class
#: (``4xx``), so that an upstream inventing statuses cannot grow the series without bound.
_REGISTERED = frozenset(status.value for status in HTTPStatus)
STATUS_LABELS: dict[int, str] = {
    status: str(status) if status in _REGISTERED else f"{status // 100}xx" for status in range(100, 600)
}


def status_label(status: int) -> str:
    """The bounded ``http_response_status_code`` label for ``status``."""
    return STATUS_LABELS.get(status, OTHER_STATUS)


REQUEST_LABELS = ("http_request_method", "http_route", "http_response_status_code")
ACTIVE_LABELS = ("http_request_method",)

DURATION_NAME = "http_server_request_duration_seconds"
DURATION_DOC = "Duration of HTTP server requests, by method, route template and status code."
REQUEST_SIZE_NAME = "http_server_request_body_size_bytes"
REQUEST_SIZE_DOC = "Size of HTTP server request bodies (Content-Length, or the bytes read)."
RESPONSE_SIZE_NAME = "http_server_response_body_size_bytes"
RESPONSE_SIZE_DOC = "Size of HTTP server response bodies, as sent."
ACTIVE_NAME = "http_server_active_requests"
ACTIVE_DOC = "HTTP server requests being handled now, by method."


class _Histogram:
    """Bucket counts (the last one is +Inf) and the sum of one histogram series."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]  # untyped upstream
        return out


class _Series:
    """The three histograms of one (method, route, status) label set."""

    __slots__ = ("duration", "request_size", "response_size")

    def __init__(self) -> None:
        self.duration = _Histogram(DURATION_BUCKETS)
        self.request_size = _Histogram(SIZE_BUCKETS)
        self.response_size = _Histogram(SIZE_BUCKETS)


class HttpServerSeries:
    """Request duration, body sizes and active requests of one process, as a Prometheus collector."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._active: dict[str, int] = {}

    def request_started(self, method: str) -> None:
        """One more request in flight."""
        self._active[method] = self._active.get(method, 0) + 1

    def finish(
        self, method: str, route: str, status: int, seconds: float, request_size: int, response_size: int
    ) -> None:
        """Record one finished request and count it out of the requests in flight."""
        self._active[method] -= 1
        key = (method, route, STATUS_LABELS.get(status, OTHER_STATUS))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        # The histograms are counted here rather than by a method of each: this runs on
        # every request, and a call per histogram costs more than the counting itself.
        # bisect_left finds the first bound >= the value: Prometheus buckets are "le".
        histogram = series.duration
        histogram.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        histogram.total += seconds
        histogram = series.request_size
        if request_size:
            histogram.counts[bisect_left(_SIZE_BOUNDS, request_size)] += 1
            histogram.total += request_size
        else:
            histogram.counts[0] += 1
        histogram = series.response_size
        histogram.counts[bisect_left(_SIZE_BOUNDS, response_size)] += 1
        histogram.total += response_size

    def collect(self) -> Iterator[Metric]:
        """The metric families, built at scrape time."""
        families = (
            (HistogramMetricFamily(DURATION_NAME, DURATION_DOC, labels=REQUEST_LABELS), "duration"),
            (
                HistogramMetricFamily(REQUEST_SIZE_NAME, REQUEST_SIZE_DOC, labels=REQUEST_LABELS),
                "request_size",
            ),
            (
                HistogramMetricFamily(RESPONSE_SIZE_NAME, RESPONSE_SIZE_DOC, labels=REQUEST_LABELS),
                "response_size",
            ),
        )
        # A snapshot of the keys: a request may add a series while the scrape runs.
        items = list(self._series.items())
        for family, attribute in families:
            for (method, route, status), series in items:
                histogram: _Histogram = getattr(series, attribute)
                family.add_metric([method, route, status], histogram.buckets(), histogram.total)
            yield family
        active = GaugeMetricFamily(ACTIVE_NAME, ACTIVE_DOC, labels=ACTIVE_LABELS)
        for method, count in list(self._active.items()):
            active.add_metric([method], float(count))
        yield active

    def describe(self) -> Iterator[Metric]:
        """Nothing: the families are known only at scrape time (keeps registration cheap)."""
        return iter(())


class MultiprocessHttpServer:
    """The same interface over ``prometheus_client`` metrics, whose values live in shared files."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            DURATION_NAME, DURATION_DOC, REQUEST_LABELS, buckets=DURATION_BUCKETS, registry=registry
        )
        self.request_size = Histogram(
            REQUEST_SIZE_NAME, REQUEST_SIZE_DOC, REQUEST_LABELS, buckets=SIZE_BUCKETS, registry=registry
        )
        self.response_size = Histogram(
            RESPONSE_SIZE_NAME, RESPONSE_SIZE_DOC, REQUEST_LABELS, buckets=SIZE_BUCKETS, registry=registry
        )
        # livesum: the gauge files of a dead worker stop counting once it is marked dead.
        self.active = Gauge(
            ACTIVE_NAME, ACTIVE_DOC, ACTIVE_LABELS, registry=registry, multiprocess_mode="livesum"
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self._active_children: dict[str, Any] = {}

    def _active_child(self, method: str) -> Any:
        child = self._active_children.get(method)
        if child is None:
            child = self._active_children[method] = self.active.labels(method)
        return child

    def request_started(self, method: str) -> None:
        """One more request in flight."""
        self._active_child(method).inc()

    def finish(
        self, method: str, route: str, status: int, seconds: float, request_size: int, response_size: int
    ) -> None:
        """Record one finished request and count it out of the requests in flight."""
        self._active_child(method).dec()
        key = (method, route, STATUS_LABELS.get(status, OTHER_STATUS))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.duration.labels(*key),
                self.request_size.labels(*key),
                self.response_size.labels(*key),
            )
        children[0].observe(seconds)
        children[1].observe(request_size)
        children[2].observe(response_size)
