"""The pure algorithms: limits are never exceeded, and Retry-After is exactly the admission time."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bastion.ratelimit.algorithms import (
    FIXED_WINDOW,
    GCRA,
    SLIDING_LOG,
    SLIDING_WINDOW,
    Limit,
    Verdict,
    concurrency,
    fixed_window,
    gcra,
    retry_after_seconds,
    sliding_log,
    sliding_window,
)
from bastion.ratelimit.stores import Check
from bastion.ratelimit.stores.memory import MemoryStore
from bastion.units import parse_rate

WINDOWED = ["gcra", "fixed_window", "sliding_window", "sliding_log"]


class Clock:
    def __init__(self, now: int = 10**12) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def pure(limit: Limit, state: Any, now: int, cost: int) -> Verdict:
    """One decision from a state without touching it (for the sliding log: a copy of the stamps)."""
    if limit.algorithm == GCRA:
        return gcra(state or 0, now, cost, limit)
    if limit.algorithm == FIXED_WINDOW:
        return fixed_window(state, now, cost, limit)
    if limit.algorithm == SLIDING_WINDOW:
        return sliding_window(state, now, cost, limit)
    stamps = [s for s in (state or ()) if s > now - limit.period_us]
    return sliding_log(stamps, now, cost, limit)


limits = st.builds(
    lambda alg, n, period_ms, burst: Limit.build(
        alg, n, period_ms * 1000, (burst if alg == "gcra" and burst else None)
    ),
    st.sampled_from(WINDOWED),
    st.integers(1, 20),
    st.integers(1, 5000),
    st.one_of(st.none(), st.integers(1, 20)),
)
arrivals = st.lists(st.tuples(st.integers(0, 3_000_000), st.integers(1, 3)), min_size=1, max_size=60)


def run(limit: Limit, steps: list[tuple[int, int]]) -> list[tuple[int, int, Verdict, Any]]:
    """Feed arrivals to the memory store; returns (time, cost, verdict, state before) per request."""
    clock = Clock()
    store = MemoryStore(clock)
    out = []
    for delta, cost in steps:
        clock.now += delta
        table = store._tables.get(limit)
        entry = table.entries.get("k") if table is not None else None
        before = None
        if entry is not None:
            before = list(entry[0]) if isinstance(entry[0], deque) else entry[0]
        decision = store.decide_now([Check("k", limit, cost, False)], "r")
        out.append((clock.now, cost, decision.verdicts[0], before))
    return out


@settings(max_examples=300, deadline=None)
@given(limit=limits, steps=arrivals)
def test_never_more_than_the_limit(limit: Limit, steps: list[tuple[int, int]]) -> None:
    capacity = limit.burst if limit.algorithm == GCRA else limit.limit
    steps = [(d, min(c, capacity)) for d, c in steps]
    history = run(limit, steps)
    admitted = [(t, c) for t, c, v, _ in history if v.allowed]
    period = limit.period_us
    if limit.algorithm == GCRA:
        # Any span [a, b] admits at most burst + (b - a) / emission units.
        for i, (a, _) in enumerate(admitted):
            total = 0
            for b, cost in admitted[i:]:
                total += cost
                assert total * limit.emission_us <= limit.tau_us + (b - a)
    elif limit.algorithm == SLIDING_LOG:
        # Exact: any window of one period holds at most the limit.
        for t, _ in admitted:
            assert sum(c for s, c in admitted if t - period < s <= t) <= limit.limit
    else:
        windows: dict[int, int] = {}
        for t, cost in admitted:
            windows[t // period] = windows.get(t // period, 0) + cost
        assert max(windows.values(), default=0) <= limit.limit


@settings(max_examples=300, deadline=None)
@given(limit=limits, steps=arrivals)
def test_retry_after_is_exactly_the_admission_time(limit: Limit, steps: list[tuple[int, int]]) -> None:
    capacity = limit.burst if limit.algorithm == GCRA else limit.limit
    steps = [(d, min(c, capacity)) for d, c in steps]
    rejected = [(t, c, v, s) for t, c, v, s in run(limit, steps) if not v.allowed]
    assume(rejected)
    for now, cost, verdict, state in rejected:
        assert verdict.retry_us >= 1
        assert pure(limit, state, now + verdict.retry_us, cost).allowed
        assert not pure(limit, state, now + verdict.retry_us - 1, cost).allowed


@settings(max_examples=200, deadline=None)
@given(limit=limits, steps=arrivals)
def test_remaining_counts_what_is_left(limit: Limit, steps: list[tuple[int, int]]) -> None:
    capacity = limit.burst if limit.algorithm == GCRA else limit.limit
    for _now, _, verdict, _ in run(limit, [(d, min(c, capacity)) for d, c in steps]):
        assert 0 <= verdict.remaining <= limit.quota
        assert verdict.reset_us >= 0
        if verdict.allowed:
            assert verdict.retry_us == 0
    # A fresh key always has its whole quota minus the first request.
    first = run(limit, [(0, 1)])[0][2]
    assert first.allowed
    assert first.remaining == limit.quota - 1


def test_gcra_burst_then_steady_rate() -> None:
    limit = Limit.build("gcra", 100, 60_000_000, 20)
    assert limit.emission_us == 600_000
    verdicts = [gcra(0, 0, 1, limit)]
    tat = verdicts[0].state
    for _ in range(25):
        v = gcra(tat, 0, 1, limit)
        tat = v.state if v.allowed else tat
        verdicts.append(v)
    assert sum(v.allowed for v in verdicts) == 20
    assert verdicts[-1].retry_us == 600_000
    assert retry_after_seconds(verdicts[-1].retry_us) == 1


def test_emission_interval_rounds_up_so_limit_is_never_exceeded() -> None:
    limit = Limit.build("gcra", 7, 60_000_000)
    assert limit.emission_us * 7 >= 60_000_000


def test_concurrency_counts_slots() -> None:
    limit = Limit.build("concurrency", 2, 60_000_000)
    assert concurrency(0, 1, limit).allowed
    assert concurrency(1, 1, limit).remaining == 0
    rejected = concurrency(2, 1, limit)
    assert not rejected.allowed
    assert rejected.retry_us == 1_000_000


@pytest.mark.parametrize(
    ("retry_us", "seconds"),
    [(1, 1), (999_999, 1), (1_000_000, 1), (1_000_001, 2), (0, 1), (59_400_000, 60)],
)
def test_retry_after_is_whole_seconds_rounded_up_never_zero(retry_us: int, seconds: int) -> None:
    assert retry_after_seconds(retry_us) == seconds


def test_policy_window_and_quota() -> None:
    gcra_limit = Limit.build("gcra", 100, 60_000_000, 20)
    assert (gcra_limit.quota, gcra_limit.window_s) == (20, 12)
    fixed = Limit.build("fixed_window", 5, 60_000_000)
    assert (fixed.quota, fixed.window_s) == (5, 60)
    assert Limit.build("concurrency", 5, 60_000_000).window_s is None


UNITS = {"s": 1000, "second": 1000, "m": 60_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


@given(
    n=st.integers(1, 10**6), mult=st.one_of(st.none(), st.integers(1, 100)), unit=st.sampled_from(list(UNITS))
)
def test_rate_parser_reads_what_people_write(n: int, mult: int | None, unit: str) -> None:
    text = f"{n}/{mult or ''}{unit}"
    rate = parse_rate(text)
    assert rate.limit == n
    assert rate.period_ms == UNITS[unit] * (mult or 1)
    assert parse_rate(str(rate)) == rate
    assert parse_rate(f"{n} per {unit}") == parse_rate(f"{n}/{unit}")


@given(text=st.text(max_size=20))
def test_rate_parser_rejects_garbage_with_value_error(text: str) -> None:
    message = ""
    try:
        rate = parse_rate(text)
    except ValueError as exc:
        message = str(exc)
    else:
        assert rate.limit >= 1
        assert rate.period_ms >= 1
        return
    assert message


@settings(max_examples=300, deadline=None)
@given(limit=limits, steps=arrivals)
def test_the_memory_store_short_path_agrees_with_the_algorithms(
    limit: Limit, steps: list[tuple[int, int]]
) -> None:
    # MemoryStore.hit inlines the single-value algorithms; it must give their answers exactly.
    assume(limit.algorithm != SLIDING_LOG)
    clock = Clock()
    store = MemoryStore(clock)
    state: Any = None
    for delta, cost in steps:
        clock.now += delta
        expected = pure(limit, state, clock.now, cost)
        got = store.hit("k", limit, cost)
        # The state only matters when it is kept, that is when the request is admitted.
        assert (got.allowed, got.remaining, got.reset_us, got.retry_us) == (
            expected.allowed,
            expected.remaining,
            expected.reset_us,
            expected.retry_us,
        )
        if expected.allowed:
            assert got.state == expected.state
            state = expected.state
