from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.units import Duration, Rate, parse_byte_size, parse_duration_ms, parse_rate


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("24h", 86_400_000),
        ("60s", 60_000),
        ("500ms", 500),
        ("5m", 300_000),
        ("1.5s", 1500),
        ("7d", 604_800_000),
        ("2 minutes", 120_000),
        (30, 30_000),
        (0.25, 250),
    ],
)
def test_durations_parse(text: object, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["", "soon", "5 fortnights", "-1s", "1h30", True, None, [1]])
def test_bad_durations_say_what_is_expected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|unit|negative"):
        parse_duration_ms(bad)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/minute", Rate(100, 60_000)),
        ("5/min", Rate(5, 60_000)),
        ("1000/s", Rate(1000, 1000)),
        ("10/5s", Rate(10, 5000)),
        ("2 per second", Rate(2, 1000)),
        ("1/day", Rate(1, 86_400_000)),
        ("3/2h", Rate(3, 7_200_000)),
    ],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["100", "0/minute", "10/0s", "ten/minute", "5/fortnight", "/s", 5])
def test_bad_rates_are_rejected_with_a_reason(bad: object) -> None:
    with pytest.raises(ValueError, match=r"rate|period|limit|no requests"):
        parse_rate(bad)


@given(st.integers(1, 10**6), st.sampled_from(["s", "second", "m", "min", "minute", "h", "hour", "d", "day"]))
def test_rate_round_trips_through_its_text(limit: int, unit: str) -> None:
    rate = parse_rate(f"{limit}/{unit}")
    assert parse_rate(str(rate)) == rate


@given(st.integers(0, 10**9))
def test_duration_text_round_trips(ms: int) -> None:
    duration = Duration(ms)
    assert parse_duration_ms(str(duration)) == ms


@pytest.mark.parametrize(
    ("text", "size"), [(1024, 1024), ("64KiB", 65536), ("1MiB", 1048576), ("10MB", 10_000_000), ("7", 7)]
)
def test_byte_sizes(text: object, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "1.5MiB", -1, "3 parsecs"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match=r"size|negative"):
        parse_byte_size(bad)
