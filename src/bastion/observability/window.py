"""Rates and latency quantiles over a short sliding window of the dashboard's counts.

The dashboard keeps a few samples of the cumulative counts (one per poll, plus one
taken when it is built) and answers each poll with the increase since a sample about
:data:`WINDOW_SECONDS` old. The page can then show rates on its first paint instead
of waiting for two polls of its own. Samples are taken from the registry, so in
multiprocess mode they are the sum over every worker.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Rates are the increase over about this many seconds.
WINDOW_SECONDS = 10.0
#: A reference sample younger than this gives a jumpy rate; an older one is used instead.
MIN_SPAN_SECONDS = 0.4
#: Polls closer than this to the newest sample are answered but not kept (many open pages).
MIN_GAP_SECONDS = 0.25
#: At most this many samples are kept, whatever the poll rate.
MAX_SAMPLES = 32
#: The quantiles the latency table shows.
QUANTILES = (0.5, 0.95, 0.99)

#: A count's name: ``("requests", "5xx")``, ``("latency", method, route, le)``, ...
Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative counts at one moment (``time`` is a monotonic clock reading)."""

    time: float
    counts: Mapping[Key, float]


class SlidingWindow:
    """The recent samples of the cumulative counts, to difference each new one against."""

    def __init__(self, first: Sample, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: deque[Sample] = deque([first], maxlen=MAX_SAMPLES)

    def __len__(self) -> int:
        return len(self._samples)

    def _reference(self, now: float) -> Sample:
        # The oldest sample inside the window, unless it is too recent for a steady rate;
        # then the newest one before the window (right after start-up: the first sample).
        before: Sample | None = None
        for sample in self._samples:
            age = now - sample.time
            if age > self.window:
                before = sample
            elif age >= MIN_SPAN_SECONDS:
                return sample
            else:
                break
        return before if before is not None else self._samples[0]

    def advance(self, sample: Sample) -> tuple[float, dict[Key, float]]:
        """Add ``sample``; the seconds it spans and each count's increase since the reference sample.

        A count that went down was reset (a restarted worker): its increase is its value.
        """
        reference = self._reference(sample.time)
        increase: dict[Key, float] = {}
        for key, value in sample.counts.items():
            delta = value - reference.counts.get(key, 0.0)
            increase[key] = value if delta < 0 else delta
        if sample.time - self._samples[-1].time >= MIN_GAP_SECONDS:
            self._samples.append(sample)
        # Keep one sample older than the window: the reference until a newer one ages enough.
        while len(self._samples) > 1 and sample.time - self._samples[1].time > self.window:
            self._samples.popleft()
        return sample.time - reference.time, increase


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram given as ``(upper bound, cumulative count)`` pairs.

    Prometheus' ``histogram_quantile``: find the bucket holding the rank and interpolate
    linearly inside it (the first bucket starts at 0). A rank in the ``+Inf`` bucket
    gives the largest finite bound. ``None`` without observations. An estimate: the
    truth is somewhere in the same bucket.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower = previous_count = 0.0
    for upper, count in ordered:
        if count >= rank and count > previous_count:
            if math.isinf(upper):
                return lower
            value = lower + (upper - lower) * (rank - previous_count) / (count - previous_count)
            # Rounding must not carry a value past its bucket (and so above a higher quantile).
            return min(value, upper)
        lower, previous_count = upper, count
    return lower
