"""Observed client rates: per rule and tier, each client's peak rate over the rule's window.

A bounded sketch, not a log. For each rule at each limit it enforces (the rule's own
limit, and each tier with a rate of its own) a :class:`RateSketch` counts every
request that reaches the rule, admitted or not, by the client the rule counts, in
windows as long as the rule's period. When a window ends, each client's count there
folds into the client's peak. Memory stays bounded whatever the number of clients:

- the current window counts at most ``2 * keep`` clients exactly; past that, the
  ``keep`` largest stay and a newcomer starts at the largest count dropped (the
  Space-Saving bound: a count is then at most that floor above the truth, never below);
- at most ``2 * keep`` peaks are kept by client; past that the ``keep`` largest stay.
  Above the largest peak ever dropped, every client's peak is known exactly: the tail
  that suggestions and refusal counts read;
- every client's peak also goes, as a log bucket (8 per doubling: a bucket's middle is
  within 4.5% of any rate in it), into a register of 65,536 one-byte slots chosen by a
  hash of the client, keeping the larger. The register gives the rest of the
  distribution and, by linear counting, the number of distinct clients (within a few
  percent up to a few hundred thousand); registers of several processes merge by
  taking the larger of each slot.

Windows are fixed and aligned to the period, as ``fixed_window`` counts; for the
other algorithms they approximate the rule's own window. Requests are counted whether
admitted or not: the demand, not what the limit let through.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import os
import time
import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from bastion.config.ratelimit import KEY_PARTS
from bastion.ratelimit.algorithms import CONCURRENCY, US_PER_SECOND
from bastion.units import Rate

if TYPE_CHECKING:
    from bastion.asgi import RequestContext
    from bastion.ratelimit.plans import Tier
    from bastion.ratelimit.rules import CompiledRule

#: Where the gateway's admin port serves :func:`observed_snapshot`.
OBSERVED_PATH = "/_bastion/limits/observed"
#: The version of the JSON :meth:`RateObservations.snapshot` writes.
FORMAT = "bastion-observed-rates/1"
#: Histogram buckets per doubling of the rate.
BUCKETS_PER_DOUBLING = 8
#: Clients kept exactly per sketch (current window and peaks each hold up to twice this).
KEEP = 2048
#: Slots of each sketch's register (a power of two): one byte each.
REGISTER_SLOTS = 65_536

# Plan tiers remembered before the lookup table starts again.
_MAX_TIERS = 16_384
_monotonic_ns = time.monotonic_ns
_GLOBAL, _CLIENT, _GENERAL = 0, 1, 2


def bucket_of(rate: int) -> int:
    """The histogram bucket of a positive rate."""
    return int(math.log2(rate) * BUCKETS_PER_DOUBLING)


def bucket_value(bucket: int) -> float:
    """The rate a bucket stands for: its geometric middle."""
    return float(2 ** ((bucket + 0.5) / BUCKETS_PER_DOUBLING))


def _drop_smallest(counts: dict[str, int], keep: int) -> list[tuple[str, int]]:
    """Keep the ``keep`` largest entries of ``counts``; the others, removed, largest first."""
    dropped = sorted(counts.items(), key=lambda item: item[1], reverse=True)[keep:]
    for client, _count in dropped:
        del counts[client]
    return dropped


class RateSketch:
    """One rule at one limit: bounded per-client counts of the current window, peaks, a register."""

    __slots__ = (
        "counts",
        "dropped_peak",
        "first_us",
        "floor",
        "how",
        "keep",
        "last_us",
        "limit",
        "parts",
        "peaks",
        "period_us",
        "register",
        "rule",
        "tier",
        "window_end",
        "window_error",
    )

    def __init__(
        self, rule: str, tier: str | None, parts: tuple[str, ...], limit: str, period_us: int, keep: int
    ) -> None:
        self.rule = rule
        #: The tier with a rate of its own, ``None`` for the rule's own limit.
        self.tier = tier
        self.parts = parts
        #: The limit in force, as configured (``100/minute``).
        self.limit = limit
        self.period_us = period_us
        self.keep = keep
        self.how = _GLOBAL if parts == ("global",) else _CLIENT if parts == ("client",) else _GENERAL
        #: When the current window ends (microseconds on the clock; see :meth:`tick`).
        self.window_end = 0
        self.counts: dict[str, int] = {}
        #: The largest count dropped from this window's counts (newcomers start there).
        self.floor = 0
        #: The largest floor of any window: how far above the truth a peak may be.
        self.window_error = 0
        #: The largest peaks by client (at most ``2 * keep``).
        self.peaks: dict[str, int] = {}
        #: The largest peak dropped from :attr:`peaks`: above it every client is known exactly.
        self.dropped_peak = 0
        #: Every client's peak bucket + 1, by a hash of the client (see :func:`register_slot`).
        self.register = bytearray(REGISTER_SLOTS)
        self.first_us = -1
        self.last_us = -1

    def key(self, ctx: RequestContext) -> str:
        """The client as this rule counts it (a header part counts as the client)."""
        if self.how == _GLOBAL:
            return "*"
        client = ctx.client_id or "ip:" + (ctx.client_ip or "unknown")
        if self.how == _CLIENT:
            return client
        values = []
        for part in self.parts:
            if part == "ip":
                values.append(ctx.client_ip or "unknown")
            elif part == "global":
                values.append("*")
            elif part == "route":
                values.append(ctx.route or "")
            else:
                values.append(client)
        return "|".join(values)

    def add(self, client: str, cost: int) -> None:
        """Count ``cost`` for ``client`` in the current window."""
        counts = self.counts
        count = counts.get(client)
        if count is None:
            if len(counts) >= 2 * self.keep:
                self._shrink_window()
            count = self.floor
        counts[client] = count + cost

    def tick(self, now: int) -> None:
        """Note the time (microseconds): a window that has ended folds into the peaks."""
        if now < self.window_end:
            return
        counts = self.counts
        if counts:
            if self.first_us < 0:
                self.first_us = self.window_end - self.period_us
            self.last_us = self.window_end
            fold(counts.items(), self.peaks, self.register)
            self._bound_peaks()
            # Cleared in place: the recording loop holds this very dict.
            counts.clear()
        self.floor = 0
        self.window_end = (now // self.period_us + 1) * self.period_us

    def _shrink_window(self) -> None:
        dropped = _drop_smallest(self.counts, self.keep)
        # A dropped count is a lower bound on that client's window: keep it as a peak candidate.
        self.floor = max(self.floor, dropped[0][1])
        self.window_error = max(self.window_error, self.floor)
        fold(dropped, self.peaks, self.register)
        self._bound_peaks()

    def _bound_peaks(self) -> None:
        if len(self.peaks) > 2 * self.keep:
            dropped = _drop_smallest(self.peaks, self.keep)
            self.dropped_peak = max(self.dropped_peak, dropped[0][1])

    def snapshot(self, now: int) -> dict[str, Any]:
        """This sketch as JSON-ready data at ``now``, the current window counted in (nothing is changed)."""
        peaks = dict(self.peaks)
        register = bytearray(self.register)
        fold(self.counts.items(), peaks, register)
        first, last = self.first_us, self.last_us
        if self.counts:
            first = first if first >= 0 else self.window_end - self.period_us
            last = now
        return {
            "rule": self.rule,
            "tier": self.tier,
            "limit": self.limit,
            "period_ms": self.period_us // 1000,
            "seconds": max(0, last - first) / 1e6 if first >= 0 else 0.0,
            "peaks": peaks,
            "dropped_peak": self.dropped_peak,
            "window_error": self.window_error,
            "register": encode_register(register),
        }


def register_slot(client: str) -> int:
    """The register slot of a client: a hash that is the same in every process.

    (Not CRC-32: it is linear, and ids such as ``ip:10.0.0.1``, ``ip:10.0.0.2`` then
    share slots more often than chance, which skews the count of distinct clients.)
    """
    digest = hashlib.blake2b(client.encode("utf-8", "surrogateescape"), digest_size=4).digest()
    return int.from_bytes(digest, "little") & (REGISTER_SLOTS - 1)


def fold(counts: Iterable[tuple[str, int]], peaks: dict[str, int], register: bytearray) -> None:
    """Fold per-client counts of one window into peaks and the register (each keeps the larger)."""
    for client, count in counts:
        if count > peaks.get(client, 0):
            peaks[client] = count
        slot = register_slot(client)
        value = min(bucket_of(count) + 1, 255)
        if register[slot] < value:
            register[slot] = value


def encode_register(register: bytes | bytearray) -> str:
    """A register as compact text for JSON."""
    return base64.b64encode(zlib.compress(bytes(register))).decode("ascii")


def decode_register(text: str) -> bytearray:
    """The register :func:`encode_register` wrote."""
    register = bytearray(zlib.decompress(base64.b64decode(text)))
    if len(register) != REGISTER_SLOTS:
        raise ValueError(f"a register has {REGISTER_SLOTS} slots, not {len(register)}")
    return register


def observable(rule: CompiledRule) -> bool:
    """Whether a rule's rates are observed: a rate rule as configured.

    Concurrency rules count requests in flight, not a rate; the per-IP companions of
    per-client rules (see :func:`~bastion.ratelimit.rules.by_ip`) count the same
    requests under the rule's own limits.
    """
    if rule.default.algorithm == CONCURRENCY:
        return False
    return all(part in KEY_PARTS or part.startswith("header:") for part in rule.parts)


class RateObservations:
    """Every sketch of one rate limit guard, found per plan tier on its first request.

    Recording reads no clock: windows end on :meth:`tick`, which a task calls every
    ``TICK_S`` seconds (a twentieth of the shortest period, at most a second) once the
    resource has started. ``clock`` gives microseconds (default: the monotonic clock);
    tests and the traffic bench pass a fake one and call :meth:`tick` themselves, to
    play a week in a minute. It is a resource of the guard's bastion (``name``
    ``rate-limit-observations``), which is how the admin port finds it.
    """

    name = "rate-limit-observations"

    def __init__(self, clock: Callable[[], int] | None = None, *, keep: int = KEEP) -> None:
        self.clock = clock
        self.keep = keep
        #: ``(rule, tier or None)`` -> its sketch.
        self.sketches: dict[tuple[str, str | None, int, tuple[str, ...]], RateSketch] = {}
        #: A plan's tier -> per observed rule: the sketch, its counts, the cost, and the key
        #: when constant (``"*"``), ``None`` when the client id, ``""`` when worked out per request.
        self.by_tier: dict[Tier, tuple[tuple[RateSketch, dict[str, int], int, str | None], ...]] = {}
        self._ticker: asyncio.Task[None] | None = None

    def record(self, tier: Tier, ctx: RequestContext) -> None:
        """Count one request that the rules of ``tier`` decided (admitted or not)."""
        found = self.by_tier.get(tier)
        if found is None:
            found = self._sketches_of(tier, ctx.tier)
        # Every decision runs this: a client seen earlier in the window costs a dictionary
        # lookup and store per rule; a new one goes through ``add`` (which bounds the counts).
        for sketch, counts, cost, key in found:
            if key is None:
                key = ctx.client_id or sketch.key(ctx)
            elif not key:
                key = sketch.key(ctx)
            count = counts.get(key)
            if count is None:
                sketch.add(key, cost)
            else:
                counts[key] = count + cost

    def now(self) -> int:
        """The clock, in microseconds."""
        return _monotonic_ns() // 1000 if self.clock is None else self.clock()

    def tick(self) -> None:
        """End every window that is over by now."""
        now = self.now()
        for sketch in list(self.sketches.values()):
            sketch.tick(now)

    def _sketches_of(self, tier: Tier, name: str | None) -> tuple[Any, ...]:
        if len(self.by_tier) >= _MAX_TIERS:
            # Plans of raw paths come and go (see Plans.find): forget theirs, not the sketches.
            self.by_tier.clear()
        found = []
        for rule, _key, _limit, cost, _shadow in tier.parts:
            if not observable(rule):
                continue
            # The tier's limit, even for a client with its own (its peaks are its tier's too).
            limit = rule.limit_for(name)
            # Tiers without a rate of their own share the rule's limit, and so its sketch.
            own = name if name is not None and name in rule.tiers else None
            # Keyed by what the peaks are measured over: a reload that changes only the
            # limit (applying a suggestion) keeps the record, and names the new limit.
            rate = str(Rate(limit.limit, limit.period_us // 1000))
            sketch = self.sketches.get((rule.name, own, limit.period_us, rule.parts))
            if sketch is None:
                sketch = RateSketch(rule.name, own, rule.parts, rate, limit.period_us, self.keep)
                sketch.tick(self.now())
                self.sketches[(rule.name, own, limit.period_us, rule.parts)] = sketch
            sketch.limit = rate
            key = "*" if sketch.how == _GLOBAL else None if sketch.how == _CLIENT else ""
            found.append((sketch, sketch.counts, cost, key))
        self.by_tier[tier] = result = tuple(found)
        return result

    def snapshot(self) -> dict[str, Any]:
        """Every sketch as JSON-ready data (the ``--from`` file and the admin endpoint's body)."""
        self.tick()
        now = self.now()
        return {
            "format": FORMAT,
            "process": os.getpid(),
            "sketches": [sketch.snapshot(now) for sketch in self.sketches.values()],
        }

    async def _ticking(self) -> None:
        while True:
            shortest = min((s.period_us for s in self.sketches.values()), default=US_PER_SECOND)
            await asyncio.sleep(min(shortest / 20, US_PER_SECOND) / US_PER_SECOND)
            self.tick()

    async def start(self) -> None:
        """Start ending windows on time."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._ticking())

    async def close(self) -> None:
        """Stop the ticks."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def ping(self) -> bool:
        """Always reachable: it lives in the process."""
        return True


def observed_snapshot(resources: Iterable[object]) -> dict[str, Any]:
    """The snapshot of the observations among a bastion's resources (empty without a rate limit guard)."""
    for resource in resources:
        if isinstance(resource, RateObservations):
            return resource.snapshot()
    return RateObservations().snapshot()
