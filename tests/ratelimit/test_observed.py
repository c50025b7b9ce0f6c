"""Observed client rates: bounded whatever the clients, exact where it says so, fed by the guard."""

from __future__ import annotations

import random
import sys
from typing import Any

import pytest

from bastion.asgi import RequestContext
from bastion.config.ratelimit import RuleConfig
from bastion.control.suggest import merge, quantile, suggest
from bastion.ratelimit.observed import KEEP, RateObservations, RateSketch, decode_register
from bastion.ratelimit.plans import Plans
from bastion.ratelimit.rules import compile_rule

from .helpers import client, make

MINUTE_US = 60_000_000


def sketch(keep: int = KEEP) -> RateSketch:
    return RateSketch("per-client", None, ("client",), "100/minute", MINUTE_US, keep)


def snapshot_of(sk: RateSketch, now: int = 10 * MINUTE_US) -> dict[str, Any]:
    return {"format": "bastion-observed-rates/1", "process": 1, "sketches": [sk.snapshot(now)]}


def play(sk: RateSketch, peaks: dict[str, int], windows: int = 3, *, quiet: bool = False) -> None:
    """Each client sends its peak in one of ``windows`` minutes and, unless quiet, 1 in the others."""
    for w in range(windows):
        sk.tick(w * MINUTE_US + 1)
        for i, (name, peak) in enumerate(peaks.items()):
            if i % windows == w:
                sk.add(name, peak)
            elif not quiet:
                sk.add(name, 1)


def test_counts_each_clients_peak_window() -> None:
    sk = sketch()
    sk.tick(0)
    for _ in range(10):  # 10 requests in minute 0
        sk.add("a", 1)
    sk.tick(MINUTE_US)
    for _ in range(25):  # 25 in minute 1, for another client too
        sk.add("a", 1)
        sk.add("b", 2)
    sk.tick(2 * MINUTE_US + 5)  # minute 2 ends minute 1
    assert sk.peaks == {"a": 25, "b": 50}
    data = sk.snapshot(2 * MINUTE_US + 5)
    assert data["peaks"] == {"a": 25, "b": 50}
    assert data["seconds"] == pytest.approx(120.0)


def test_the_current_window_counts_in_a_snapshot_without_changing_the_sketch() -> None:
    sk = sketch()
    sk.tick(5)
    for _ in range(7):
        sk.add("a", 1)
    assert sk.snapshot(6)["peaks"] == {"a": 7}
    assert sk.peaks == {}
    sk.add("a", 1)
    assert sk.snapshot(6)["peaks"] == {"a": 8}


def test_memory_is_bounded_under_100000_clients() -> None:
    sk = sketch(keep=256)
    rng = random.Random(1)
    for w in range(3):
        sk.tick(w * MINUTE_US)
        for i in range(100_000):
            sk.add(f"c{i}", 1 + int(rng.paretovariate(1.5)))
        assert len(sk.counts) <= 2 * 256
        assert len(sk.peaks) <= 2 * 256
    assert len(sk.register) == 65_536
    size = sys.getsizeof(sk.counts) + sys.getsizeof(sk.peaks) + sys.getsizeof(sk.register)
    assert size < 200_000


def test_quantiles_within_the_stated_error_under_100000_clients() -> None:
    """The tail (p99, max) is made of exact peaks, the rest within a bucket (4.5%).

    Ranks rest on the count of distinct clients, estimated within 1% here: a percentile
    may be its neighbour's value.

    At most 2,000 clients per window, so that each window counts exactly (see the next test
    for a crowded one) while the peaks of 100,000 clients overflow the kept ones.
    """
    rng = random.Random(2)
    peaks = {f"c{i}": 1 + int(rng.paretovariate(1.2) * 3) for i in range(100_000)}
    sk = sketch()
    play(sk, peaks, windows=50, quiet=True)
    [observed] = merge([snapshot_of(sk)])
    assert observed.dropped_peak > 0
    truth = sorted(peaks.values())
    distribution = observed.distribution()
    assert quantile(distribution, 100) == truth[-1]
    assert quantile(distribution, 99) in truth[98_500:99_500]
    for p in (50, 95):
        exact = truth[int(p / 100 * len(truth)) - 1]
        assert quantile(distribution, p) == pytest.approx(exact, rel=0.1)
    assert observed.distinct() == pytest.approx(100_000, rel=0.01)
    # The suggested limit sits in the exact tail: its refusals are exact.
    found = suggest(observed, 99, 1.5)
    assert found.exact
    assert found.refused == sum(1 for peak in truth if peak > found.suggested_limit)


def test_refusals_exact_for_clients_kept_exactly() -> None:
    peaks = {f"c{i}": i for i in range(1, 301)}
    sk = sketch()
    play(sk, peaks)
    [observed] = merge([snapshot_of(sk)])
    assert observed.dropped_peak == 0
    assert observed.distinct() == 300
    for limit in (1, 50, 299, 300, 1000):
        assert observed.refused(limit) == sum(1 for peak in peaks.values() if peak > limit)
    found = suggest(observed, 90, 1.0)
    assert (found.p50, found.p99, found.max) == (150, 297, 300)
    assert (found.suggested, found.refused) == ("300/minute", 0)


def test_crowded_windows_overestimate_a_peak_by_at_most_the_window_error() -> None:
    rng = random.Random(3)
    peaks = {f"c{i}": 1 + int(rng.paretovariate(1.2) * 3) for i in range(100_000)}
    sk = sketch()
    play(sk, peaks)
    [observed] = merge([snapshot_of(sk)])
    top = sorted(peaks.values())[-1]
    assert top <= quantile(observed.distribution(), 100) <= top + observed.window_error
    assert observed.window_error < top / 100


def test_a_crowded_window_overestimates_by_at_most_its_floor() -> None:
    sk = sketch(keep=4)
    sk.tick(0)
    for i in range(20):
        sk.add(f"c{i}", 10 + i)
    sk.add("late", 1)
    sk.add("late", 1)
    data = sk.snapshot(1)
    assert data["window_error"] > 0
    error = data["window_error"]
    assert 2 <= data["peaks"]["late"] <= 2 + error
    for i in range(20):
        if f"c{i}" in data["peaks"]:
            assert 10 + i <= data["peaks"][f"c{i}"] <= 10 + i + error


def test_snapshots_of_two_processes_merge() -> None:
    one, two = sketch(), sketch()
    for _ in range(5):
        one.add("a", 1)
    for _ in range(8):
        two.add("a", 1)
    two.add("b", 3)
    [observed] = merge([snapshot_of(one), snapshot_of(two)])
    assert observed.peaks == {"a": 8, "b": 3}
    assert sum(1 for v in observed.register if v) == 2
    assert decode_register(one.snapshot(0)["register"]).count(0) == 65_535


async def test_the_guard_records_demand_per_rule_and_tier_on_its_clock() -> None:
    config = {
        "metrics": {"enabled": False},
        "rate_limits": {
            "rules": [
                {"name": "per-client", "key": "client", "limit": "3/minute"},
                {"name": "inflight", "key": "client", "limit": "5/second", "algorithm": "concurrency"},
            ]
        },
    }
    bastion = make(config)
    [observations] = [r for r in bastion.resources if isinstance(r, RateObservations)]
    now = [0]
    observations.clock = lambda: now[0]
    async with client(bastion) as http:
        statuses = [(await http.get("/x", headers={"X-API-Key": "k1"})).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    data = observations.snapshot()
    # Refused requests count too (the demand); the concurrency rule is no rate.
    [found] = data["sketches"]
    assert (found["rule"], found["tier"], found["limit"]) == ("per-client", None, "3/minute")
    assert list(found["peaks"].values()) == [5]


def test_tiers_with_their_own_rate_have_their_own_sketch() -> None:
    settings = {"name": "per-client", "key": "client", "limit": "3/minute", "tiers": {"paid": "30/minute"}}
    rule = compile_rule(RuleConfig.model_validate(settings))
    plan = Plans([rule], {}, headers="both", unverified_keys=False).plan("GET", "/x", None)
    observations = RateObservations(lambda: 0)
    for tier, who in (("paid", "acme"), ("free", "bob"), (None, "eve")):
        ctx = RequestContext("0" * 32, "0" * 16, "r", client_id=who, tier=tier)
        observations.record(plan.tier(tier), ctx)
    found = sorted(
        (s["tier"] or "", s["limit"], sorted(s["peaks"])) for s in observations.snapshot()["sketches"]
    )
    # Tiers without a rate of their own (free, none) share the rule's limit and its sketch.
    assert found == [("", "3/minute", ["bob", "eve"]), ("paid", "30/minute", ["acme"])]
